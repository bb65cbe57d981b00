"""Attack and accounting tests for the sandbox launcher, on real bubblewrap sandboxes (DESIGN §4).

Each test runs a small Python script as an agent and checks what it could do and how it ended.
Without a usable sandbox they skip, except under CI=true where they fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import farm
from farm.config import Settings
from farm.sandbox.cgroups import PARENT, detect_layout
from farm.sandbox.launcher import (
    AgentProcess,
    SandboxLimits,
    SandboxUnavailable,
    Termination,
    launch,
)
from support import wait_until

pytestmark = pytest.mark.sandbox

LIMITS = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=20, pids=32, file_mb=8, output_kb=256)
ALLOWED_ENV = {
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONHASHSEED",
    "PYTHONUNBUFFERED",
    "HOME",
    "PATH",
    "LANG",
    "PWD",
    "LC_CTYPE",
}


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory the sandbox uid may read (pytest's tmp_path sits under a 0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="farm-sandbox-test-") as name:
        path = Path(name)
        path.chmod(0o755)
        yield path


def run(
    code: str,
    limits: SandboxLimits = LIMITS,
    binds: Mapping[Path, str] | None = None,
    *args: str,
) -> tuple[Termination, str, float]:
    """Run ``code`` as a sandboxed agent; return how it ended, its output and the seconds taken."""
    start = time.monotonic()
    with launch(
        [sys.executable, "-c", code, *args],
        readonly_binds=binds or {},
        limits=limits,
        mode="bwrap",
    ) as proc:
        end = proc.wait(timeout=60)
        return end, proc.output_tail(), time.monotonic() - start


def last_json(output: str) -> Any:
    """The agent's report: the last line of its output, as JSON."""
    return json.loads(output.strip().splitlines()[-1])


def processes_with(marker: str) -> list[int]:
    """Live host processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_normal_exit_reports_its_code_and_output() -> None:
    end, output, _ = run("print('hello from the agent'); raise SystemExit(7)")
    assert end == Termination("exited", 7, "exited with code 7")
    assert "hello from the agent" in output


def test_runs_as_an_unprivileged_user() -> None:
    end, output, _ = run(
        "import json, os; print(json.dumps({'ids': [*os.getresuid(), *os.getresgid()],"
        " 'groups': os.getgroups()}))"
    )
    assert end.reason == "exited"
    report = last_json(output)
    assert 0 not in report["ids"]
    assert report["groups"] in ([], [65534])


def test_protocol_pipes_work_both_ways() -> None:
    code = "import os\nwhile data := os.read(3, 100):\n    os.write(4, data[::-1])"
    with launch(
        [sys.executable, "-c", code], readonly_binds={}, limits=LIMITS, mode="bwrap"
    ) as proc:
        for message in (b"hello", b"agent"):
            proc.to_agent.write(message)
            proc.to_agent.flush()
            assert proc.read_exact(len(message), timeout=10) == message[::-1]
        proc.to_agent.close()  # EOF on fd 3 ends the loop
        assert proc.wait(timeout=10).reason == "exited"
        assert proc.from_agent.read() == b""


def test_read_exact_times_out_instead_of_blocking() -> None:
    code = "import time; time.sleep(30)"
    with launch(
        [sys.executable, "-c", code], readonly_binds={}, limits=LIMITS, mode="bwrap"
    ) as proc:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            proc.read_exact(1, timeout=0.2)
        assert time.monotonic() - start < 2
        assert proc.kill().reason == "killed"


def test_only_the_protocol_pipes_are_inherited(public_dir: Path) -> None:
    leak = (public_dir / "leak").open("w")
    os.set_inheritable(leak.fileno(), True)
    try:
        end, output, _ = run(
            "import json, os; print(json.dumps(sorted(os.listdir('/proc/self/fd'))))"
        )
    finally:
        leak.close()
    assert end.reason == "exited"
    fds = set(last_json(output)) - {"5"}  # 5: listdir's own fd
    assert fds == {"0", "1", "2", "3", "4"}


def test_no_network() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = f"""
import json, socket
result = {{}}
try:
    result["interfaces"] = [name for _, name in socket.if_nameindex()]
except OSError as exc:
    result["interfaces"] = repr(exc)
for port in ({port}, 5432):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        result[str(port)] = "connected"
    except OSError as exc:
        result[str(port)] = repr(exc)
try:
    socket.getaddrinfo("example.com", 443)
    result["dns"] = "resolved"
except OSError as exc:
    result["dns"] = repr(exc)
print(json.dumps(result))
"""
        end, output, _ = run(code)
    assert end.reason == "exited"
    report = last_json(output)
    # No interface but loopback, and the seccomp filter refuses IP and netlink sockets outright.
    assert report["interfaces"] in (["lo"], "PermissionError(1, 'Operation not permitted')")
    assert "PermissionError" in str(report[str(port)])
    assert "PermissionError" in str(report["5432"])
    assert "gaierror" in str(report["dns"])


def test_host_files_are_invisible_and_binds_read_only(
    tmp_path: Path, public_dir: Path, settings: Settings
) -> None:
    settings.sqlite_path.parent.mkdir(parents=True)
    settings.sqlite_path.write_bytes(b"SQLite format 3\x00 secret ledger")
    host_secret = public_dir / "other-agent.py"
    host_secret.write_text("SECRET = 1\n")
    agent = public_dir / "agent.py"
    agent.write_text("ALPHA = 42\n")
    agent.chmod(0o644)
    code = """
import json, os, sys
result = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as file:
            result[path] = file.read().decode()
    except OSError as exc:
        result[path] = type(exc).__name__
for path in ("/agent/agent.py", "/agent/new.py", sys.prefix + "/evil.pth"):
    try:
        open(path, "w").close()
        result["write " + path] = "written"
    except OSError as exc:
        result["write " + path] = type(exc).__name__
result["root"] = sorted(os.listdir("/"))
print(json.dumps(result))
"""
    targets = [
        "/etc/shadow",
        "/etc/passwd",
        str(settings.sqlite_path),
        str(host_secret),
        "/agent/agent.py",
    ]
    end, output, _ = run(code, LIMITS, {agent: "/agent/agent.py"}, *targets)
    assert end.reason == "exited", output
    report = last_json(output)
    assert report["/etc/shadow"] == "FileNotFoundError"
    assert report["/etc/passwd"] == "FileNotFoundError"
    assert report[str(settings.sqlite_path)] == "FileNotFoundError"
    assert report[str(host_secret)] == "FileNotFoundError"
    assert report["/agent/agent.py"] == "ALPHA = 42\n"
    assert all(report[k] == "OSError" for k in report if k.startswith("write ")), report
    hidden = {"root", "home", "var", "run", "srv", "mnt", "boot"}
    assert not hidden & set(report["root"])


def test_environment_has_nothing_from_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARM_SECRET", "hunter2")
    end, output, _ = run("import json, os; print(json.dumps(dict(os.environ)))")
    assert end.reason == "exited"
    environ = last_json(output)
    assert "FARM_SECRET" not in environ
    assert "hunter2" not in output
    assert set(environ) <= ALLOWED_ENV


def test_fork_bomb_is_contained_by_the_pids_limit() -> None:
    marker = f"forkbomb-{uuid.uuid4().hex}"
    code = f"""
import os, time
# {marker}
count = 0
while True:
    try:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        count += 1
    except OSError:
        break
print("forked", count, flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=2, pids=16, file_mb=1, output_kb=64)
    end, output, elapsed = run(code, limits)
    assert end.reason == "timeout"
    assert elapsed < 10
    forked = int(output.split("forked")[1].split()[0])
    assert 0 < forked < limits.pids
    assert processes_with(marker) == []
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork


def test_memory_bomb_is_killed_for_memory() -> None:
    code = "chunks = []\nwhile True:\n    chunks.append(b'x' * (1 << 20))"
    limits = SandboxLimits(memory_mb=64, cpu_s=10, wall_s=20, pids=16, file_mb=1, output_kb=64)
    end, _, elapsed = run(code, limits)
    assert end.reason == "memory", end
    assert "64 MB" in end.detail
    assert elapsed < 10


def test_cpu_spin_is_stopped_by_the_cpu_limit() -> None:
    limits = SandboxLimits(memory_mb=256, cpu_s=1, wall_s=20, pids=16, file_mb=1, output_kb=64)
    end, _, elapsed = run("while True: pass", limits)
    assert end.reason == "cpu", end
    assert end.returncode == -24  # SIGXCPU
    assert elapsed < 10


def test_cpu_limit_holds_when_the_agent_ignores_sigxcpu() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass"
    limits = SandboxLimits(memory_mb=256, cpu_s=1, wall_s=20, pids=16, file_mb=1, output_kb=64)
    end, _, elapsed = run(code, limits)
    assert end.reason == "cpu", end
    assert end.returncode == -9  # SIGKILL at the hard limit
    assert elapsed < 10


def test_an_output_window_bounds_the_rate_of_printing_not_the_total() -> None:
    """A live session's agent may print without end at a modest rate (2 KB every half second:
    five times the cap in all); a flood within one window is killed."""
    limits = SandboxLimits(
        memory_mb=256, cpu_s=10, wall_s=20, pids=16, file_mb=1, output_kb=8, output_window_s=1.0
    )
    steady = (
        "import time\nfor _ in range(20):\n    print('x' * 2000, flush=True)\n    time.sleep(0.5)"
    )
    end, _, _ = run(steady, limits)
    assert end.reason == "exited", end
    end, _, elapsed = run("print('x' * 20_000, flush=True)\nimport time; time.sleep(30)", limits)
    assert end.reason == "output", end
    assert end.detail == "printed more than 8 KB in 1 s"
    assert elapsed < 10


def test_restarting_the_output_window_forgives_what_was_printed_before() -> None:
    """What a live session's agent printed while it was warmed up does not count against its
    live rate: the runtime restarts the window once the warm-up is done."""
    limits = SandboxLimits(
        memory_mb=256, cpu_s=10, wall_s=20, pids=16, file_mb=1, output_kb=8, output_window_s=60
    )
    code = "import time\nprint('w' * 6000, flush=True)\ntime.sleep(1.5)\nprint('x' * 6000)"
    for restart, reason in ((True, "exited"), (False, "output")):
        with launch(
            [sys.executable, "-c", code], readonly_binds={}, limits=limits, mode="bwrap"
        ) as proc:
            wait_until(lambda proc=proc: "w" * 6000 in proc.output_tail(), 10, "the warm-up")
            if restart:
                proc.restart_output_window()
            assert proc.wait(timeout=60).reason == reason


def test_sleeping_forever_times_out() -> None:
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=1, pids=16, file_mb=1, output_kb=64)
    end, _, elapsed = run("import time; time.sleep(3600)", limits)
    assert end.reason == "timeout"
    assert end.detail == "ran longer than 1 s"
    assert elapsed < 5


def test_stdout_flood_is_cut_off() -> None:
    code = "import sys\nfor _ in range(1024):\n    sys.stdout.buffer.write(b'y' * (1 << 20))"
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=20, pids=16, file_mb=1, output_kb=64)
    end, output, elapsed = run(code, limits)
    assert end.reason == "output"
    assert elapsed < 5
    assert 0 < len(output) <= 128 * 1024


def test_huge_file_write_is_stopped() -> None:
    code = """
chunk = b"z" * (1 << 20)
with open("/tmp/big", "wb") as file:
    for _ in range(10 * 1024):
        file.write(chunk)
"""
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=20, pids=16, file_mb=4, output_kb=64)
    end, output, elapsed = run(code, limits)
    assert end.reason == "exited"
    assert end.returncode == 1
    assert "File too large" in output or "No space left" in output
    assert elapsed < 10


def test_segfault_is_reported_as_a_signal() -> None:
    end, _, _ = run("import ctypes; ctypes.string_at(0)")
    assert end == Termination("killed", -11, "killed by signal SIGSEGV")


def _orphan_code(marker: str, then: str) -> str:
    return f"""
import os, subprocess, sys, time
if os.fork() == 0:
    os.setsid()
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "{marker}"])
    os._exit(0)
os.wait()
time.sleep(0.3)
print("started", flush=True)
{then}
"""


def test_orphans_die_with_the_agent() -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    end, output, _ = run(_orphan_code(marker, "raise SystemExit(0)"))
    assert end == Termination("exited", 0, "exited with code 0")
    assert "started" in output
    assert processes_with(marker) == []


def test_kill_stops_everything_the_agent_started() -> None:
    marker = f"orphan-{uuid.uuid4().hex}"
    code = _orphan_code(marker, "time.sleep(60)")
    with launch(
        [sys.executable, "-c", code], readonly_binds={}, limits=LIMITS, mode="bwrap"
    ) as proc:
        deadline = time.monotonic() + 10
        while "started" not in proc.output_tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_with(marker)) >= 1
        end = proc.kill()
    assert end == Termination("killed", -9, "killed by the host")
    assert processes_with(marker) == []


def test_cgroup_is_removed_after_exit() -> None:
    run("pass")
    layout = detect_layout()
    leftovers = [
        path
        for mount in layout.mounts.values()
        for path in (mount / PARENT).glob(f"agent-{os.getpid()}-*")
    ]
    assert leftovers == []


def test_readable_file_under_a_private_folder_is_staged(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    agent = private / "agent.py"
    agent.write_text("import os\nos.write(4, open(__file__).read().encode())\n")
    agent.chmod(0o644)
    with launch(
        [sys.executable, "/agent/agent.py"],
        readonly_binds={agent: "/agent/agent.py"},
        limits=LIMITS,
        mode="bwrap",
    ) as proc:
        end = proc.wait(timeout=30)
        assert end.reason == "exited", (end, proc.output_tail())
        assert end.returncode == 0
        assert proc.from_agent.read() == agent.read_bytes()


def test_unreadable_bind_is_refused_with_a_clear_reason(tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text("pass\n")
    agent.chmod(0o600)
    with pytest.raises(SandboxUnavailable, match="is not readable"):
        launch(
            [sys.executable, "/agent/agent.py"],
            readonly_binds={agent: "/agent/agent.py"},
            limits=LIMITS,
            mode="bwrap",
        )


def test_missing_bubblewrap_is_explained(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        launch([sys.executable, "-c", "pass"], readonly_binds={}, limits=LIMITS, mode="bwrap")


def test_agent_outlives_the_thread_that_launched_it() -> None:
    """Launching from a short-lived worker thread must not tie the agent's life to that thread."""
    code = "import os, time; time.sleep(0.5); os.write(4, os.read(3, 2))"
    procs: list[AgentProcess] = []
    thread = threading.Thread(
        target=lambda: procs.append(
            launch([sys.executable, "-c", code], readonly_binds={}, limits=LIMITS, mode="bwrap")
        )
    )
    thread.start()
    thread.join()
    with procs[0] as proc:
        proc.to_agent.write(b"hi")
        proc.to_agent.flush()
        assert proc.read_exact(2, timeout=10) == b"hi"
        assert proc.wait(timeout=10).reason == "exited"


def test_concurrent_agents_do_not_share_pipes() -> None:
    code = "import os; os.write(4, os.read(3, 16) * 2)"
    procs = [
        launch([sys.executable, "-c", code], readonly_binds={}, limits=LIMITS, mode="bwrap")
        for _ in range(4)
    ]
    try:
        for number, proc in enumerate(procs):
            proc.to_agent.write(f"agent-{number:02d}".encode())
            proc.to_agent.close()
        for number, proc in enumerate(procs):
            assert proc.from_agent.read() == f"agent-{number:02d}".encode() * 2
            assert proc.wait(timeout=10) == Termination("exited", 0, "exited with code 0")
    finally:
        for proc in procs:
            proc.close()


def test_a_runtime_under_tmp_is_not_hidden_by_the_private_tmp() -> None:
    """A checkout under /tmp (as CI's may be): its venv must stay visible in the sandbox."""
    with tempfile.TemporaryDirectory(prefix="farm-checkout-") as checkout:
        venv = Path(checkout) / "venv"
        subprocess.run(
            [sys.base_prefix + "/bin/python3", "-m", "venv", "--without-pip", str(venv)],
            check=True,
        )
        site = next(venv.glob("lib/python3*/site-packages"))
        (site / "farm.pth").write_text(
            "\n".join([str(Path(farm.__file__).parents[1]), *sys.path[1:]]) + "\n"
        )
        probe = (
            "import sys; from farm.config import Settings; "
            "from farm.sandbox.launcher import check_sandbox; "
            "check_sandbox(Settings(sandbox='bwrap')); print('sandbox ok', sys.prefix)"
        )
        ran = subprocess.run(
            [str(venv / "bin" / "python"), "-c", probe], capture_output=True, text=True
        )
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert f"sandbox ok {venv}" in ran.stdout
