"""Start agent code in a sandboxed child process (DESIGN §4).

Mode ``bwrap``: the child runs under bubblewrap as an unprivileged uid (``setpriv`` drops root
first) with every namespace unshared (no network), a fresh environment, read-only binds of the
Python runtime, the ``farm`` package and the caller's files only, a private size-capped tmpfs
``/tmp``, its own cgroup capping memory and process count, and the seccomp filter of
:mod:`farm.sandbox.seccomp`; files are copied in (no host path in its mount table), the host name
is fixed and global ``/proc`` figures read as empty. Mode ``unsafe-local`` is a plain
subprocess for development: same pipes, rlimits, watchdog and output cap, but no isolation.

The child talks to the host over two pipes: it reads host messages on fd 3 and writes its own
messages on fd 4. Its stdout and stderr are merged into one capped log.

Blocking: a read of ``from_agent`` waits until the agent writes or dies. The wall-time watchdog
kills the agent after ``limits.wall_s``, which closes its ends of both pipes, so a blocked read
then returns EOF and a blocked write raises ``BrokenPipeError``: nothing blocks for longer than
the wall limit. For a shorter deadline per message use :meth:`AgentProcess.read_exact`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import resource
import select
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from farm.config import SandboxMode, Settings
from farm.sandbox.cgroups import Cgroup, CgroupError, detect_layout, remove_stale
from farm.sandbox.seccomp import SeccompUnavailable, bpf_program

AGENT_READ_FD = 3
AGENT_WRITE_FD = 4

TerminationReason = Literal["exited", "timeout", "memory", "cpu", "killed", "output"]

logger = logging.getLogger("farm.sandbox")

_TAIL_BYTES = 64 * 1024
LOG_PART_BYTES = 32 * 1024  # of an agent's output, the first and the last this many are kept
_DRAIN_GRACE_S = 1.0
_MB = 1024 * 1024
_ENV = {
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
    "HOME": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
}
_TMP = "/tmp"  # noqa: S108 - inside the sandbox: a private, size-capped tmpfs
_TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/localtime")
# bash, not sh: dash cannot redirect file descriptors above 9. The host moves the wrapper into
# its cgroup and sets its rlimits, then says "go"; only then does it exec the sandbox.
_WRAPPER = (
    "read -r -u {go} _ || exit 125; "
    'exec {go}<&- 3<&{read} 4>&{write} {read}<&- {write}>&-; exec "$@"'
)
_USERNS_SYSCTLS = (
    (
        "/proc/sys/kernel/unprivileged_userns_clone",
        "0",
        "sysctl -w kernel.unprivileged_userns_clone=1",
    ),
    ("/proc/sys/user/max_user_namespaces", "0", "sysctl -w user.max_user_namespaces=10000"),
    (
        "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
        "1",
        "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile)",
    ),
)
# Staging (as root): a private mount namespace with a tmpfs at _STAGE holding a bind of each
# source, so bwrap (already running as the sandbox uid) can reach sources under private folders.
_STAGE = Path("/run/farm-sandbox")
_STAGE_SCRIPT = (
    'stage=$1; shift; mount -t tmpfs -o mode=755,size=64k farm-stage "$stage" || exit 126; i=0; '
    'while [ "$1" != "--" ]; do kind=$1 src=$2; shift 2; '
    'if [ "$kind" = d ]; then mkdir "$stage/$i"; else : > "$stage/$i"; fi; '
    'mount --bind "$src" "$stage/$i" || exit 126; i=$((i + 1)); done; shift; exec "$@"'
)
_DEV_ONLY = "or set FARM_SANDBOX=unsafe-local for local development only"
HOSTNAME = "farm-sandbox"
# Global figures in /proc that change with what other sandboxes do (load, memory, processes,
# interrupts, locks, cgroup counts): files read as empty, folders as empty folders.
_PROC_HIDDEN_FILES = (
    "buddyinfo",
    "cgroups",
    "diskstats",
    "interrupts",
    "key-users",
    "keys",
    "loadavg",
    "locks",
    "meminfo",
    "pagetypeinfo",
    "schedstat",
    "slabinfo",
    "softirqs",
    "stat",
    "swaps",
    "timer_list",
    "uptime",
    "vmallocinfo",
    "vmstat",
    "zoneinfo",
)
_PROC_HIDDEN_DIRS = ("pressure", "sys", "fs", "irq", "driver", "tty", "bus", "acpi")


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be set up on this host; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Hard limits for one agent process."""

    memory_mb: int = 2048
    cpu_s: int = 3600
    wall_s: int = 1800
    pids: int = 64
    file_mb: int = 64
    output_kb: int = 1024
    #: None: ``output_kb`` bounds the whole run; else each window of this many seconds (a live
    #: session runs without end, so its printing is bounded by rate, not in total)
    output_window_s: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        """The limits configured by ``FARM_SANDBOX_*``."""
        return cls(
            memory_mb=settings.sandbox_memory_mb,
            cpu_s=settings.sandbox_cpu_s,
            wall_s=settings.sandbox_wall_s,
            pids=settings.sandbox_pids,
            file_mb=settings.sandbox_file_mb,
            output_kb=settings.sandbox_output_kb,
        )


@dataclass(frozen=True, slots=True)
class Termination:
    """How a sandboxed process ended.

    ``returncode`` is the exit code, or minus the signal number when a signal ended it. Under
    bwrap a signal death reaches the host as exit code 128+n, so codes 129-192 read as signals.
    """

    reason: TerminationReason
    returncode: int | None
    detail: str


@dataclass(frozen=True, slots=True)
class AgentOutput:
    """What an agent printed (stdout and stderr): the first and the last ``LOG_PART_BYTES``
    and how many bytes in all; ``tail`` continues ``head`` after ``omitted`` bytes."""

    head: bytes
    tail: bytes
    total: int

    @property
    def omitted(self) -> int:
        """Bytes printed between ``head`` and ``tail``, not kept."""
        return self.total - len(self.head) - len(self.tail)


NO_OUTPUT = AgentOutput(b"", b"", 0)


@dataclass(frozen=True, slots=True)
class _Plan:
    argv: list[str]  # as the caller gave it, for error messages
    command: list[str]  # what the wrapper execs
    env: dict[str, str]
    limits: SandboxLimits
    sandboxed: bool
    fds: tuple[int, ...] = ()  # memory files bwrap reads (filter, staged files); closed at spawn


class AgentProcess:
    """A running sandboxed child with its two protocol pipes.

    ``to_agent`` is written by the host and read by the child on fd 3; ``from_agent`` is read by
    the host and written by the child on fd 4. Use it as a context manager (or call
    :meth:`close`) so the child is killed and both pipes are closed.
    """

    to_agent: BinaryIO
    from_agent: BinaryIO

    def __init__(self, plan: _Plan, cgroup: Cgroup | None) -> None:
        self._plan = plan
        self._cgroup = cgroup
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._done = threading.Event()
        self._spawn_error: BaseException | None = None
        self._pid = 0
        self._reaped = False
        self._kill_reason: tuple[TerminationReason, str] | None = None
        self._termination: Termination | None = None
        self._head = bytearray()
        self._tail = bytearray()
        self._total_output = 0
        self._window_output = 0  # printed in the current output window
        self._window_ends = 0.0
        host_read, agent_write = os.pipe()
        agent_read, host_write = os.pipe()
        self._out_read, self._out_write = os.pipe()
        self._go_read, self._go_write = os.pipe()
        self._agent_fds = (agent_read, agent_write)
        self.to_agent = os.fdopen(host_write, "wb")
        self.from_agent = os.fdopen(host_read, "rb")
        # Spawned by the supervising thread, which lives exactly as long as the child: the
        # parent-death signal behind --die-with-parent is tied to the thread that forked.
        thread = threading.Thread(target=self._run, name=f"farm-sandbox-{id(self):x}", daemon=True)
        thread.start()
        self._started.wait()
        if self._spawn_error is not None:
            self._done.wait()
            self.close()
            raise self._spawn_error

    def output_tail(self) -> str:
        """The last part (about 64 KB) of what the child printed (stdout and stderr)."""
        with self._lock:
            return bytes(self._tail[-_TAIL_BYTES:]).decode("utf-8", "replace")

    def restart_output_window(self) -> None:
        """Count the output of the current window afresh (what a live session's agent printed
        while it was warmed up does not count against its live rate)."""
        with self._lock:
            self._window_output, self._window_ends = 0, 0.0

    def output(self) -> AgentOutput:
        """The head and tail of what the child printed so far (all of it once it has ended)."""
        with self._lock:
            after_head = self._total_output - len(self._head)
            tail = self._tail[len(self._tail) - min(after_head, LOG_PART_BYTES) :]
            return AgentOutput(bytes(self._head), bytes(tail), self._total_output)

    def wait(self, timeout: float | None = None) -> Termination:
        """Wait for the child to exit and say why it ended (``subprocess.TimeoutExpired``)."""
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self._plan.argv, timeout or 0.0)
        assert self._termination is not None
        return self._termination

    def kill(self) -> Termination:
        """Kill the child and everything it started."""
        self._kill("killed", "killed by the host")
        return self.wait()

    def read_exact(self, size: int, timeout: float) -> bytes:
        """Read ``size`` bytes from fd 4 within ``timeout`` seconds (fewer only at EOF).

        Reads the pipe directly, bypassing ``from_agent``'s buffer: use one or the other. Raises
        ``TimeoutError`` on expiry, after which the stream is out of step: kill the agent.
        """
        fd = self.from_agent.fileno()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        data = bytearray()
        while len(data) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                raise TimeoutError(f"agent sent {len(data)} of {size} bytes in {timeout} s")
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def close(self) -> None:
        """Kill the child if it still runs, wait for it and close both pipes."""
        if not self._done.is_set():
            self.kill()
        with contextlib.suppress(BrokenPipeError):  # unsent bytes for a dead child
            self.to_agent.close()
        self.from_agent.close()

    def __enter__(self) -> AgentProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # The supervising thread: spawn, drain output, enforce wall time, reap, classify, clean up.

    def _run(self) -> None:
        popen: subprocess.Popen[bytes] | None = None
        pidfd = -1
        try:
            popen = self._spawn()
            pidfd = os.pidfd_open(popen.pid)
            self._release(popen.pid)
        except BaseException as exc:  # handed to launch() in the caller's thread
            self._spawn_error = exc
            if popen is not None:
                popen.kill()
                popen.wait()
        finally:
            os.close(self._go_write)
            self._started.set()
        try:
            if popen is not None and self._spawn_error is None:
                self._supervise(popen, pidfd)
        except Exception:
            logger.exception("sandbox supervisor failed; killing the agent")
            assert popen is not None
            with self._lock:
                if not self._reaped:
                    self._kill_everything()
                    popen.wait()
                    self._reaped = True
            self._termination = Termination("killed", popen.returncode, "sandbox supervisor failed")
        finally:
            if pidfd >= 0:
                os.close(pidfd)
            os.close(self._out_read)
            if self._cgroup is not None:
                self._cgroup.remove()
            self._done.set()

    def _spawn(self) -> subprocess.Popen[bytes]:
        high: list[int] = []
        try:
            bash = shutil.which("bash")
            if bash is None:
                raise SandboxUnavailable("bash is not installed: apt-get install bash")
            # Move the child's ends above 9 so the wrapper's dup to 3 and 4 cannot clobber them.
            for fd in (*self._agent_fds, self._go_read):
                high.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
            script = _WRAPPER.format(read=high[0], write=high[1], go=high[2])
            popen = subprocess.Popen(  # noqa: S603 - fixed wrapper around a validated command
                [bash, "-c", script, "farm-sandbox", *self._plan.command],
                stdin=subprocess.DEVNULL,
                stdout=self._out_write,
                stderr=subprocess.STDOUT,
                pass_fds=[*high, *self._plan.fds],
                env=self._plan.env,
                start_new_session=True,
            )
        finally:
            for fd in (*high, *self._agent_fds, self._go_read, self._out_write, *self._plan.fds):
                os.close(fd)
        self._pid = popen.pid
        return popen

    def _release(self, pid: int) -> None:
        """Put the waiting wrapper in its cgroup, set its rlimits, then let it exec."""
        limits = self._plan.limits
        try:
            if self._cgroup is not None:
                self._cgroup.add(pid)
            _set_rlimit(pid, resource.RLIMIT_CPU, limits.cpu_s, limits.cpu_s + 1)
            _set_rlimit(pid, resource.RLIMIT_FSIZE, limits.file_mb * _MB, limits.file_mb * _MB)
            _set_rlimit(pid, resource.RLIMIT_CORE, 0, 0)
            os.write(self._go_write, b"go\n")
        except OSError as exc:
            raise SandboxUnavailable(f"cannot confine the agent process: {exc}") from exc

    def _supervise(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        deadline = time.monotonic() + self._plan.limits.wall_s
        status, cpu_s = 0, 0.0
        drain_until: float | None = None
        with selectors.DefaultSelector() as selector:
            selector.register(self._out_read, selectors.EVENT_READ)
            selector.register(pidfd, selectors.EVENT_READ)
            while selector.get_map():
                now = time.monotonic()
                if drain_until is None and now >= deadline:
                    self._kill("timeout", f"ran longer than {self._plan.limits.wall_s} s")
                    deadline = float("inf")
                limit = deadline if drain_until is None else drain_until
                if now >= limit:
                    break
                for key, _ in selector.select(min(limit - now, 3600.0)):
                    if key.fd == pidfd:
                        selector.unregister(pidfd)
                        status, cpu_s = self._reap(popen)
                        drain_until = time.monotonic() + _DRAIN_GRACE_S
                    elif not self._read_output():
                        selector.unregister(self._out_read)
        self._termination = self._classify(status, cpu_s)

    def _reap(self, popen: subprocess.Popen[bytes]) -> tuple[int, float]:
        with self._lock:
            # The child is a zombie: its process group and cgroup are still safe to kill.
            self._kill_everything()
            _, status, usage = os.wait4(popen.pid, 0)
            popen.returncode = os.waitstatus_to_exitcode(status)
            self._reaped = True
        return status, usage.ru_utime + usage.ru_stime

    def _read_output(self) -> bool:
        data = os.read(self._out_read, 65536)
        if not data:
            return False
        limits = self._plan.limits
        with self._lock:
            self._total_output += len(data)
            if len(self._head) < LOG_PART_BYTES:
                self._head += data[: LOG_PART_BYTES - len(self._head)]
            self._tail += data
            if len(self._tail) > 2 * _TAIL_BYTES:
                del self._tail[:-_TAIL_BYTES]
            now = time.monotonic()
            if limits.output_window_s is not None and now >= self._window_ends:
                self._window_output, self._window_ends = 0, now + limits.output_window_s
            self._window_output += len(data)
            over = self._window_output > limits.output_kb * 1024
        if over:
            within = "" if limits.output_window_s is None else f" in {limits.output_window_s:g} s"
            self._kill("output", f"printed more than {limits.output_kb} KB{within}")
        return True

    def _kill(self, reason: TerminationReason, detail: str) -> None:
        with self._lock:
            if self._reaped or not self._pid:
                return
            if self._kill_reason is None:
                self._kill_reason = (reason, detail)
            self._kill_everything()

    def _kill_everything(self) -> None:
        if self._cgroup is not None:
            self._cgroup.kill_all()
        try:
            os.killpg(self._pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _classify(self, status: int, cpu_s: float) -> Termination:
        code = os.waitstatus_to_exitcode(status)
        if self._plan.sandboxed and code - 128 in set(signal.valid_signals()):
            code = 128 - code
        limits = self._plan.limits
        if self._kill_reason is not None:
            reason, detail = self._kill_reason
            return Termination(reason, code, detail)
        oom_kills = 0
        if self._cgroup is not None:
            oom_kills = self._cgroup.oom_kills()
            cpu_s = max(cpu_s, self._cgroup.cpu_seconds() or 0.0)
        if oom_kills and code != 0:
            detail = (
                f"out of memory: {oom_kills} process(es) killed at the {limits.memory_mb} MB limit"
            )
            return Termination("memory", code, detail)
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and cpu_s >= limits.cpu_s):
            return Termination("cpu", code, f"used {cpu_s:.1f} s of CPU (limit {limits.cpu_s} s)")
        if code < 0:
            return Termination("killed", code, f"killed by signal {signal.Signals(-code).name}")
        return Termination("exited", code, f"exited with code {code}")


def launch(
    argv: Sequence[str],
    *,
    readonly_binds: Mapping[Path, str],
    limits: SandboxLimits,
    mode: SandboxMode,
    uid: int = 65534,
) -> AgentProcess:
    """Start ``argv`` sandboxed; ``readonly_binds`` maps host paths to paths inside the sandbox.

    In ``unsafe-local`` mode arguments equal to a bind's inside path are replaced by its host
    path. Raises :class:`SandboxUnavailable` when the sandbox cannot be set up.
    """
    if not argv:
        raise ValueError("argv is empty")
    farm_dir = Path(__file__).resolve().parents[1]
    if mode == "unsafe-local":
        logger.warning("unsafe-local sandbox: agent code runs WITHOUT isolation (%s)", argv[0])
        env = {**_ENV, "PYTHONPATH": str(farm_dir.parent)}
        command = [_rebind(arg, readonly_binds) for arg in argv]
        return AgentProcess(_Plan(list(argv), command, env, limits, sandboxed=False), None)
    fds: list[int] = []
    try:
        bwrap = _bwrap_command(argv, readonly_binds, limits, uid, farm_dir, fds)
        cgroup = Cgroup.create(
            detect_layout(), memory_bytes=limits.memory_mb * _MB, pids=limits.pids
        )
    except BaseException as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, CgroupError):
            raise SandboxUnavailable(str(exc)) from exc
        raise
    plan = _Plan(list(argv), [*bwrap, *argv], {}, limits, sandboxed=True, fds=tuple(fds))
    try:
        return AgentProcess(plan, cgroup)
    except BaseException:
        cgroup.remove()
        raise


def check_sandbox(settings: Settings) -> None:
    """Run a trivial agent the way ``settings`` asks; raise SandboxUnavailable saying what to fix.

    Call it once at start-up. It also removes cgroups left behind by hosts that died.
    """
    if settings.sandbox == "unsafe-local":
        logger.warning(
            "FARM_SANDBOX=unsafe-local: agents run WITHOUT isolation; never use it in production"
        )
        return
    try:
        remove_stale(detect_layout())
    except CgroupError as exc:
        raise SandboxUnavailable(str(exc)) from exc
    limits = SandboxLimits(memory_mb=256, cpu_s=20, wall_s=30, pids=16, file_mb=1, output_kb=64)
    probe = "import os, farm.sandbox; assert os.getuid() != 0; os.write(4, os.read(3, 2))"
    with launch(
        [sys.executable, "-c", probe],
        readonly_binds={},
        limits=limits,
        mode="bwrap",
        uid=settings.sandbox_uid,
    ) as proc:
        with contextlib.suppress(BrokenPipeError):
            proc.to_agent.write(b"ok")
            proc.to_agent.flush()
        echoed = proc.read_exact(2, timeout=limits.wall_s)
        end = proc.wait()
        if end.reason != "exited" or end.returncode != 0 or echoed != b"ok":
            tail = proc.output_tail().strip()[-2000:]
            hint = ""
            if "namespace" in tail or "uid map" in tail:
                hint = (
                    " User namespaces look blocked: in Docker run with --security-opt "
                    "seccomp=unconfined --security-opt apparmor=unconfined, or allow them with the "
                    "sysctls kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0."
                )
            raise SandboxUnavailable(
                f"a trial sandboxed Python did not run ({end.detail}). Output: {tail!r}.{hint}"
            )


def _bwrap_command(
    argv: Sequence[str],
    binds: Mapping[Path, str],
    limits: SandboxLimits,
    uid: int,
    farm_dir: Path,
    fds: list[int],
) -> list[str]:
    """The bwrap command line; memory files it reads are appended to ``fds`` (caller closes)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            f"bubblewrap is not installed: apt-get install bubblewrap, {_DEV_ONLY}"
        )
    _check_userns()
    seccomp = _seccomp_file(fds)
    drop = _privilege_drop(uid)
    runtime = _runtime_paths(farm_dir)
    executable = [Path(argv[0])] if os.path.isabs(argv[0]) else []
    mounts = [(path, str(path)) for path in runtime]
    files: list[tuple[Path, str]] = []  # copied in, so no host path shows in the mount table
    for host, inside in binds.items():
        if not inside.startswith("/"):
            raise ValueError(f"sandbox path must be absolute: {inside!r}")
        (mounts if host.is_dir() else files).append((host.resolve(), inside))
    # As root, stage every source in a private mount namespace first, so that only the
    # sources themselves (not their parent folders) must be readable by the sandbox uid.
    staging = _staging_prefix(mounts) if drop else []
    sources = [str(_STAGE / str(i)) if staging else str(m[0]) for i, m in enumerate(mounts)]
    _check_readable([*(m[0] for m in (*mounts, *files)), *executable], uid, parents=not staging)
    args = [*staging, *drop, bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
    args += ["--die-with-parent", "--new-session", "--clearenv", "--hostname", HOSTNAME]
    # The private /tmp comes first: binds of paths under /tmp (a checkout there) go on top.
    args += ["--size", str(limits.file_mb * _MB), "--tmpfs", _TMP]
    for source, (_, inside) in zip(sources[: len(runtime)], mounts, strict=False):
        args += ["--ro-bind", source, inside]
    args += _top_level()
    for file in _ETC_FILES:
        args += ["--ro-bind-try", file, file]
    args += ["--proc", "/proc", "--dev", "/dev", *_proc_masks()]
    args += ["--chdir", _TMP]
    for source, (_, inside) in zip(sources[len(runtime) :], mounts[len(runtime) :], strict=True):
        args += ["--ro-bind", source, inside]
    for host, inside in files:
        fd = _memory_file(host.read_bytes(), "farm-file", fds)
        args += ["--perms", "0444", "--ro-bind-data", str(fd), inside]
    args += ["--remount-ro", "/"]  # only the /tmp tmpfs stays writable
    for key, value in {**_ENV, "PYTHONPATH": str(farm_dir.parent)}.items():
        args += ["--setenv", key, value]
    return [*args, "--seccomp", str(seccomp), "--"]


def _seccomp_file(fds: list[int]) -> int:
    """A memory file holding the compiled seccomp filter, for ``bwrap --seccomp``."""
    try:
        return _memory_file(bpf_program(), "farm-seccomp", fds)
    except SeccompUnavailable as exc:
        raise SandboxUnavailable(
            f"the sandbox's seccomp filter cannot be built: {exc}; {_DEV_ONLY}"
        ) from exc


def _top_level() -> list[str]:
    """/bin, /lib and friends: symlinks as they are (merged /usr), folders bound read-only."""
    args: list[str] = []
    for name in _TOP_LEVEL:
        top = Path("/", name)
        if top.is_symlink():
            args += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            args += ["--ro-bind", str(top), str(top)]
    return args


def _proc_masks() -> list[str]:
    """bwrap options hiding /proc's global figures (after ``--proc`` and ``--dev``)."""
    args: list[str] = []
    for name in _PROC_HIDDEN_FILES:
        if Path("/proc", name).exists():
            args += ["--dev-bind", "/dev/null", f"/proc/{name}"]  # reads as empty
    for name in _PROC_HIDDEN_DIRS:
        if Path("/proc", name).is_dir():
            args += ["--perms", "0555", "--size", "4096", "--tmpfs", f"/proc/{name}"]
            args += ["--remount-ro", f"/proc/{name}"]
    return args


def _memory_file(data: bytes, name: str, fds: list[int]) -> int:
    """A memory file holding ``data``, numbered above 9 so the wrapper's fds 3-4 cannot clobber
    it; appended to ``fds``."""
    memfd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        fd = fcntl.fcntl(memfd, fcntl.F_DUPFD_CLOEXEC, 10)
    finally:
        os.close(memfd)
    fds.append(fd)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _runtime_paths(farm_dir: Path) -> list[Path]:
    """The folders the sandboxed Python needs: /usr, the interpreter, the venv, farm itself."""
    runtime: list[Path] = [Path("/usr")]
    for extra in (Path(sys.base_prefix), Path(sys.prefix), farm_dir):
        resolved = extra.resolve()
        if not any(resolved.is_relative_to(bound) for bound in runtime):
            runtime.append(resolved)
    return runtime


def _staging_prefix(mounts: Sequence[tuple[Path, str]]) -> list[str]:
    """``unshare`` + a script binding each source at ``_STAGE/<i>`` on a private tmpfs."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise SandboxUnavailable("unshare is not installed: apt-get install util-linux")
    bash = shutil.which("bash")
    if bash is None:
        raise SandboxUnavailable("bash is not installed: apt-get install bash")
    _STAGE.mkdir(mode=0o755, parents=True, exist_ok=True)
    kinds = ["d" if source.is_dir() else "f" for source, _ in mounts]
    pairs = [
        item
        for (source, _), kind in zip(mounts, kinds, strict=True)
        for item in (kind, str(source))
    ]
    return [
        unshare,
        "--mount",
        "--propagation",
        "private",
        "--",
        bash,
        "-c",
        _STAGE_SCRIPT,
        "farm-stage",
        str(_STAGE),
        *pairs,
        "--",
    ]


def _check_readable(paths: Sequence[Path], uid: int, *, parents: bool) -> None:
    for path in paths:
        problem = _unreadable(path, uid, parents=parents)
        if problem:
            raise SandboxUnavailable(
                f"{problem}, so the sandbox (uid {uid}) cannot use it: install the platform and "
                "its virtual environment somewhere world-readable (e.g. /opt/farm, not /root)"
            )


def _check_userns() -> None:
    for path, bad, fix in _USERNS_SYSCTLS:
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value == bad:
            raise SandboxUnavailable(f"user namespaces are disabled ({path} is {bad}): {fix}")


def _privilege_drop(uid: int) -> list[str]:
    """The ``setpriv`` prefix that makes bwrap and the agent run as ``uid``."""
    if uid == 0:
        raise SandboxUnavailable("agents must not run as root: set FARM_SANDBOX_UID (e.g. 65534)")
    euid = os.geteuid()
    if euid == uid:
        return []
    if euid != 0:
        raise SandboxUnavailable(
            f"the platform runs as uid {euid} and cannot switch agents to uid {uid}: "
            f"run it as root or set FARM_SANDBOX_UID={euid}"
        )
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SandboxUnavailable("setpriv is not installed: apt-get install util-linux")
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs"]


def _unreadable(path: Path, uid: int, *, parents: bool = True) -> str | None:
    """Why ``uid`` (group ``uid``, no others) cannot read ``path`` (and, with ``parents``, reach
    it); None if it can."""
    target = path.resolve()
    if not target.exists():
        return f"{path} does not exist"
    for part in (*reversed(target.parents), target) if parents else (target,):
        info = part.stat()
        if part != target:
            need = 0o1
        elif stat.S_ISDIR(info.st_mode):
            need = 0o5
        else:
            need = 0o5 if info.st_mode & 0o111 else 0o4
        if info.st_uid == uid:
            bits = info.st_mode >> 6
        elif info.st_gid == uid:
            bits = info.st_mode >> 3
        else:
            bits = info.st_mode
        if bits & need != need:
            return (
                f"{part} (mode {stat.filemode(info.st_mode)}, owner {info.st_uid}) is not readable"
            )
    return None


def _set_rlimit(pid: int, which: int, soft: int, hard: int) -> None:
    _, current_hard = resource.prlimit(pid, which)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.prlimit(pid, which, (soft, hard))


def _rebind(arg: str, binds: Mapping[Path, str]) -> str:
    inverse = {inside: str(host) for host, inside in binds.items()}
    return inverse.get(arg, arg)
