"""The seccomp filter every bubblewrap sandbox runs under (DESIGN §4: sandboxes cannot talk).

A deny-list built with libseccomp (through ``pyseccomp``) and handed to ``bwrap --seccomp`` as a
compiled BPF program. It closes the kernel surfaces that namespaces leave shared between
sandboxes: file locks on the shared read-only runtime, file-change notifications, io_uring,
keyrings, ptrace and cross-process memory access, eBPF, perf events, userfaultfd, mounts and
namespaces, global load figures (``sysinfo``), page-cache probes and eviction, and every socket
family except AF_UNIX. Blocked calls fail with EPERM (ENOSYS for ``clone3``, so that the C library
falls back to ``clone``, whose namespace flags are then checked); nothing is killed, so libraries
that try a call and cope with its failure keep working.

Only x86_64 is supported. The program checks the architecture of every call: a call through
another ABI (i386 ``int 0x80``, x32) kills the process. On any other host the filter is not
built and the sandbox refuses to start (no agent ever runs unfiltered).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import platform
import socket
import tempfile
from typing import Any

__all__ = ["SeccompUnavailable", "bpf_program"]

# Syscalls refused outright.
BLOCKED_SYSCALLS = (
    # file locks (fcntl's lock commands are refused below, the rest of fcntl works)
    "flock",
    # file-change events on the shared runtime files would carry another sandbox's reads
    "inotify_init",
    "inotify_init1",
    "fanotify_init",
    # io_uring bypasses the per-syscall checks of this filter
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    # kernel keyrings are shared by uid
    "add_key",
    "request_key",
    "keyctl",
    # other processes and the kernel
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "kcmp",
    "pidfd_getfd",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    # mounts and namespaces
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "name_to_handle_at",
    "open_by_handle_at",
    # global figures: load, free memory and the number of processes on the host
    "sysinfo",
    # page-cache residency and eviction of shared files (a channel without timing)
    "mincore",
    "cachestat",
    "fadvise64",
    "readahead",
    "preadv2",
    "pwritev2",
    # administration
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "iopl",
    "ioperm",
    "syslog",
    "quotactl",
    "quotactl_fd",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "vhangup",
)
# libseccomp 2.5 predates some calls: their x86_64 numbers.
_X86_64_NUMBERS = {"cachestat": 451}
_LOCK_COMMANDS = (
    fcntl.F_GETLK,
    fcntl.F_SETLK,
    fcntl.F_SETLKW,
    getattr(fcntl, "F_OFD_GETLK", 36),
    getattr(fcntl, "F_OFD_SETLK", 37),
    getattr(fcntl, "F_OFD_SETLKW", 38),
    getattr(fcntl, "F_SETLEASE", 1024),
    getattr(fcntl, "F_GETLEASE", 1025),
    getattr(fcntl, "F_NOTIFY", 1026),
)
_CLONE_NAMESPACES = (
    0x00020000,  # CLONE_NEWNS
    0x00000080,  # CLONE_NEWTIME
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
_MADV_COLD, _MADV_PAGEOUT = 20, 21
_INT = 0xFFFFFFFF  # int arguments: the kernel reads the low 32 bits only


class SeccompUnavailable(RuntimeError):
    """The filter cannot be built on this host; the message says why and what to do."""


@functools.cache
def bpf_program() -> bytes:
    """The compiled filter (raw BPF, as ``bwrap --seccomp`` reads it); built once per process."""
    if platform.machine() != "x86_64":
        raise SeccompUnavailable(
            f"the sandbox's seccomp filter supports x86_64 only, not {platform.machine()}"
        )
    try:
        import pyseccomp
    except (ImportError, OSError) as exc:  # pyseccomp raises OSError without libseccomp.so.2
        raise SeccompUnavailable(
            f"libseccomp is not usable ({exc}): apt-get install libseccomp2 (make sandbox-deps) "
            "and pip install pyseccomp (make)"
        ) from exc
    try:
        if pyseccomp.system_arch() != pyseccomp.Arch.X86_64:
            raise SeccompUnavailable("libseccomp reports a native architecture other than x86_64")
        return _compile(pyseccomp)
    except OSError as exc:
        raise SeccompUnavailable(f"libseccomp could not build the filter: {exc}") from exc


def _compile(sc: Any) -> bytes:
    deny = sc.ERRNO(errno.EPERM)
    rules = sc.SyscallFilter(sc.ALLOW)
    rules.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    for name in BLOCKED_SYSCALLS:
        rules.add_rule(deny, _number(sc, name))
    for command in _LOCK_COMMANDS:
        rules.add_rule(deny, "fcntl", sc.Arg(1, sc.MASKED_EQ, _INT, command))
    for advice in (_MADV_COLD, _MADV_PAGEOUT):
        rules.add_rule(deny, "madvise", sc.Arg(2, sc.MASKED_EQ, _INT, advice))
    for call in ("socket", "socketpair"):
        # Compared on all 64 bits: junk in the upper half is refused too.
        rules.add_rule(deny, call, sc.Arg(0, sc.NE, socket.AF_UNIX))
    for flag in _CLONE_NAMESPACES:
        rules.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes glibc use clone.
    rules.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as out:
        rules.export_bpf(out)
        out.seek(0)
        program = out.read()
    if not program or len(program) % 8:
        raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(program)} bytes)")
    return program


def _number(sc: Any, name: str) -> int:
    number = int(sc.resolve_syscall(sc.Arch.NATIVE, name))
    if number < 0:
        number = _X86_64_NUMBERS.get(name, -1)
    if number < 0:
        raise SeccompUnavailable(f"libseccomp does not know the system call {name}: upgrade it")
    return number
