"""Sandboxes cannot talk to each other or see the host (issue 8, item 1; DESIGN §4).

Two concurrent real bubblewrap sandboxes: a sender raises every signal it can (file locks on the
shared read-only stdlib, files in /dev/shm and /tmp, an abstract unix socket) and a receiver looks
for each. Then each kernel surface the seccomp filter closes is probed from inside a sandbox, and
the host's name, paths and load figures must not show.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from farm.backtest.runner import BacktestConfig, run_backtest
from farm.config import Settings
from farm.marketdata.store import BarStore
from farm.sandbox import seccomp
from farm.sandbox.launcher import (
    HOSTNAME,
    AgentProcess,
    SandboxLimits,
    SandboxUnavailable,
    check_sandbox,
    launch,
)

pytestmark = pytest.mark.sandbox

LIMITS = SandboxLimits(memory_mb=512, cpu_s=30, wall_s=60, pids=32, file_mb=8, output_kb=256)
REPO = Path(__file__).resolve().parents[2]

# Takes every lock it can on the stdlib's os.py (read-only and shared by every sandbox), leaves
# files and an abstract socket behind, says "ready" on fd 4 and holds all of it until fd 3 closes.
SENDER = r"""
import fcntl, json, os, socket, struct
held, report = [], {}
def attempt(name, action):
    try:
        held.append(action())
        report[name] = "done"
    except OSError as exc:
        report[name] = errno_name(exc)
def errno_name(exc):
    return __import__("errno").errorcode.get(exc.errno, str(exc.errno))
def posix(cmd, start):
    fd = os.open(os.__file__, os.O_RDONLY)
    fcntl.fcntl(fd, cmd, struct.pack("hhqqi", fcntl.F_RDLCK, os.SEEK_SET, start, 1, 0))
    return fd
def flock():
    fd = os.open(os.__file__, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd
attempt("posix lock", lambda: posix(fcntl.F_SETLK, 1))
attempt("ofd lock", lambda: posix(fcntl.F_OFD_SETLK, 2))
attempt("flock", flock)
for path in ("/dev/shm/bit", "/tmp/bit", "/dev/bit", os.__file__ + ".bit"):
    attempt("write " + path, lambda path=path: open(path, "w").write("1"))
def abstract():
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\0farm-bit")
    server.listen()
    return server
attempt("abstract socket", abstract)
print(json.dumps(report), flush=True)
os.write(4, b"ready")
os.read(3, 1)
"""

# Looks for each of the sender's signals and reports what it saw.
RECEIVER = r"""
import fcntl, json, os, socket, struct
seen = {}
fd = os.open(os.__file__, os.O_RDONLY)
for name, cmd, start in (("posix lock", fcntl.F_GETLK, 1), ("ofd lock", fcntl.F_OFD_GETLK, 2)):
    for probe in (fcntl.F_GETLK, fcntl.F_OFD_GETLK):
        try:
            got = fcntl.fcntl(fd, probe, struct.pack("hhqqi", fcntl.F_WRLCK, 0, start, 1, 0))
            seen[f"{name} via {probe}"] = struct.unpack("hhqqi", got)[0] != fcntl.F_UNLCK
        except OSError:
            seen[f"{name} via {probe}"] = False
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    seen["flock"] = False
except BlockingIOError:
    seen["flock"] = True
except OSError:
    seen["flock"] = False
for path in ("/dev/shm/bit", "/tmp/bit", "/dev/bit", os.__file__ + ".bit"):
    seen["file " + path] = os.path.exists(path)
try:
    socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).connect("\0farm-bit")
    seen["abstract socket"] = True
except OSError:
    seen["abstract socket"] = False
print(json.dumps(seen), flush=True)
"""

PROBES = r"""
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
def call(number, *args):
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), *[ctypes.c_long(a) for a in args])
    return "ok" if result >= 0 else errno.errorcode[ctypes.get_errno()]
addr = ctypes.addressof(buf)
report = {
    "io_uring_setup": call(425, 8, addr),
    "io_uring_enter": call(426, 0, 0, 0, 0, 0, 0),
    "io_uring_register": call(427, 0, 0, 0, 0),
    "keyctl": call(250, 0, -3, 1),  # KEYCTL_GET_KEYRING_ID of the session keyring, create
    "add_key": call(248, ctypes.addressof(ctypes.create_string_buffer(b"user")),
                    ctypes.addressof(ctypes.create_string_buffer(b"bit")), addr, 1, -3),
    "request_key": call(249, 0, 0, 0, 0),
    "ptrace": call(101, 0, 0, 0, 0),  # PTRACE_TRACEME (unfiltered, bwrap then exits 255)
    "process_vm_readv": call(310, os.getpid(), 0, 0, 0, 0, 0),
    "bpf": call(321, 0, addr, 48),
    "perf_event_open": call(298, addr, 0, -1, -1, 0),
    "userfaultfd": call(323, 0),
    "unshare": call(272, 0x00020000),  # CLONE_NEWNS
    "setns": call(308, 0, 0),
    "mount": call(165, 0, 0, 0, 0, 0),
    "inotify_init1": call(294, 0),
    "sysinfo": call(99, addr),
    # CLONE_NEWUSER | CLONE_FS: refused by the filter, or EINVAL from the kernel (no child)
    "clone newuser": call(56, 0x10000000 | 0x200, 0, 0, 0, 0),
}
for name, family in (("AF_INET", 2), ("AF_INET6", 10), ("AF_VSOCK", 40), ("AF_NETLINK", 16),
                     ("AF_PACKET", 17)):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_RAW):
        report[f"socket {name} {kind}"] = call(41, family, kind, 0)
    report[f"socketpair {name}"] = call(53, family, socket.SOCK_STREAM, 0, addr)
# What must keep working.
import fcntl, subprocess, threading
fd = os.open(os.__file__, os.O_RDONLY)
fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
works = {
    "fcntl F_GETFL": fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY,
    "fcntl F_DUPFD": fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 20) >= 20,
    "AF_UNIX socketpair": len(socket.socketpair()) == 2,
    "subprocess": subprocess.run(["true"]).returncode == 0,
}
thread = threading.Thread(target=works.__setitem__, args=("thread", True))
thread.start()
thread.join()
print(json.dumps({"blocked": report, "works": works}))
"""


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the sandbox uid may read (pytest's tmp_path sits under a 0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="farm-isolation-test-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def start(code: str, binds: dict[Path, str] | None = None) -> AgentProcess:
    return launch(
        [sys.executable, "-c", code], readonly_binds=binds or {}, limits=LIMITS, mode="bwrap"
    )


def report_of(proc: AgentProcess) -> Any:
    end = proc.wait(timeout=60)
    assert end.reason == "exited", (end, proc.output_tail())
    assert end.returncode == 0, proc.output_tail()
    return json.loads(proc.output_tail().strip().splitlines()[-1])


def test_two_concurrent_sandboxes_cannot_pass_a_bit() -> None:
    with start(SENDER) as sender:
        assert sender.read_exact(5, timeout=30) == b"ready", sender.output_tail()
        with start(RECEIVER) as receiver:
            seen = report_of(receiver)
        attempts = json.loads(sender.output_tail().strip().splitlines()[-1])
        sender.to_agent.close()
        assert sender.wait(timeout=30).reason == "exited"
    assert len(seen) == 10
    assert not any(seen.values()), (seen, attempts)
    # The locks were refused by the filter (not merely invisible), and the files stayed private.
    assert attempts["posix lock"] == attempts["ofd lock"] == attempts["flock"] == "EPERM"
    assert attempts["write /tmp/bit"] == "done"
    assert attempts["abstract socket"] == "done"


def test_each_blocked_system_call_fails_with_an_error_and_the_rest_works() -> None:
    with start(PROBES) as proc:
        report = report_of(proc)
    blocked = report["blocked"]
    refused = {"EPERM", "ENOSYS"}
    assert {name: result for name, result in blocked.items() if result not in refused} == {}
    assert all(report["works"].values()), report["works"]


I386_GETPID = r"""
import ctypes, mmap
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))  # mov eax, 20; int 0x80; ret
address = ctypes.addressof(ctypes.c_char.from_buffer(page))
ctypes.CFUNCTYPE(ctypes.c_int)(address)()
print('survived')
"""


@pytest.mark.parametrize(
    "code",
    [
        "import ctypes; ctypes.CDLL(None).syscall(0x40000000 | 39); print('survived')",
        I386_GETPID,
    ],
    ids=["x32", "i386 int 0x80"],
)
def test_a_call_through_another_abi_kills_the_process(code: str) -> None:
    """x32 and i386 numbers differ from x86_64's, so an x86_64 filter would let them through:
    the filter checks the architecture and kills the process instead."""
    with start(code) as proc:
        end = proc.wait(timeout=30)
        assert "survived" not in proc.output_tail()
    assert end.reason == "killed", end
    assert end.returncode == -31  # SIGSYS


def test_numeric_libraries_import_and_run() -> None:
    code = (
        "import json, numpy, pandas, backtrader\n"
        "frame = pandas.DataFrame({'x': numpy.arange(1000.0)})\n"
        "print(json.dumps({'sum': float(frame.x.rolling(10).mean().sum()),"
        " 'dot': float(numpy.ones(500) @ numpy.ones(500)), 'bt': backtrader.__version__}))"
    )
    with start(code) as proc:
        report = report_of(proc)
    assert report["sum"] == pytest.approx(sum(i - 4.5 for i in range(9, 1000)))
    assert report["dot"] == 500.0


def test_an_example_agent_still_runs(real_bars: Path) -> None:
    steps = list(BarStore(real_bars).steps(["SPY"], date(2023, 1, 3), date(2023, 12, 29)))
    outcome = run_backtest(
        steps, REPO / "examples" / "agents" / "sma_cross.py", BacktestConfig(symbols=("SPY",))
    )
    assert outcome.failure is None
    assert outcome.steps == len(steps) > 200
    assert len(outcome.fills) > 0


def test_host_name_paths_and_load_figures_are_hidden(public_dir: Path) -> None:
    home = public_dir / "farm-home-7f3a"
    agent = home / "agents" / "user-8c21" / "agent-4d9e.py"
    agent.parent.mkdir(parents=True)
    for folder in (home, home / "agents", agent.parent):
        folder.chmod(0o755)
    agent.write_text("import os\nos.write(4, b'agent ran')\n")
    agent.chmod(0o644)
    code = r"""
import json, os, socket, runpy
report = {"hostname": socket.gethostname(), "uname": os.uname().nodename,
          "mountinfo": open("/proc/self/mountinfo").read(), "proc": {}}
for name in ("loadavg", "meminfo", "stat", "uptime", "vmstat", "diskstats", "locks", "cgroups"):
    try:
        report["proc"][name] = open("/proc/" + name).read()
    except OSError as exc:
        report["proc"][name] = exc.strerror
for name in ("pressure", "sys"):
    report["proc"][name] = os.listdir("/proc/" + name) if os.path.isdir("/proc/" + name) else []
try:
    report["getloadavg"] = os.getloadavg()
except OSError:
    report["getloadavg"] = None
runpy.run_path("/agent/agent.py")
print(json.dumps(report))
"""
    with start(code, {agent: "/agent/agent.py"}) as proc:
        report = report_of(proc)
        assert proc.from_agent.read() == b"agent ran"
    assert report["hostname"] == report["uname"] == HOSTNAME
    assert "/agent/agent.py" in report["mountinfo"]
    for leak in (str(public_dir), "farm-home-7f3a", "user-8c21", "agent-4d9e"):
        assert leak not in report["mountinfo"]
    assert all(value in ("", []) for value in report["proc"].values()), report["proc"]
    assert report["getloadavg"] is None


def test_a_host_without_the_filter_refuses_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seccomp.bpf_program.cache_clear()
    monkeypatch.setattr(seccomp.platform, "machine", lambda: "aarch64")
    try:
        with pytest.raises(SandboxUnavailable, match=r"seccomp filter cannot be built.*x86_64"):
            check_sandbox(Settings(sandbox="bwrap"))
    finally:
        seccomp.bpf_program.cache_clear()


def test_missing_libseccomp_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    seccomp.bpf_program.cache_clear()
    monkeypatch.setitem(sys.modules, "pyseccomp", None)  # import fails as without the package
    try:
        with pytest.raises(SandboxUnavailable, match="apt-get install libseccomp2"):
            start("pass")
    finally:
        seccomp.bpf_program.cache_clear()


def test_the_filter_is_raw_bpf_checking_the_architecture() -> None:
    program = seccomp.bpf_program()
    assert len(program) % 8 == 0
    # The first instructions load the arch field (offset 4) and compare it with x86_64's.
    first = [program[i : i + 8] for i in range(0, 24, 8)]
    assert first[0][4:] == (4).to_bytes(4, "little")
    assert first[1][4:] == (0xC000003E).to_bytes(4, "little")
