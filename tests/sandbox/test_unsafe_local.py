"""The development-only ``unsafe-local`` mode: no isolation, but the same pipes and limits."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from farm.config import Settings
from farm.sandbox.launcher import SandboxLimits, Termination, check_sandbox, launch

pytestmark = pytest.mark.sandbox

LIMITS = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=20, pids=32, file_mb=8, output_kb=256)


def test_unsafe_local_works_and_warns(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text("import os, sys\nos.write(4, os.read(3, 4).upper())\nsys.exit(5)\n")
    with (
        caplog.at_level(logging.WARNING, logger="farm.sandbox"),
        launch(
            [sys.executable, "/agent/agent.py"],
            readonly_binds={agent: "/agent/agent.py"},
            limits=LIMITS,
            mode="unsafe-local",
        ) as proc,
    ):
        proc.to_agent.write(b"ping")
        proc.to_agent.flush()
        assert proc.read_exact(4, timeout=10) == b"PING"
        assert proc.wait(timeout=10) == Termination("exited", 5, "exited with code 5")
    assert any(
        "WITHOUT isolation" in r.getMessage() for r in caplog.records if r.name == "farm.sandbox"
    )


def test_unsafe_local_still_enforces_wall_time() -> None:
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=1, pids=16, file_mb=1, output_kb=64)
    with launch(
        [sys.executable, "-c", "import time; time.sleep(3600)"],
        readonly_binds={},
        limits=limits,
        mode="unsafe-local",
    ) as proc:
        assert proc.wait(timeout=10).reason == "timeout"


def test_check_sandbox_in_unsafe_mode_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="farm.sandbox"):
        check_sandbox(Settings(sandbox="unsafe-local"))
    assert "WITHOUT isolation" in caplog.text


def _run(code: str, limits: SandboxLimits) -> Termination:
    with launch(
        [sys.executable, "-c", code], readonly_binds={}, limits=limits, mode="unsafe-local"
    ) as proc:
        return proc.wait(timeout=30)


def test_unsafe_local_caps_output_and_cpu() -> None:
    limits = SandboxLimits(memory_mb=256, cpu_s=1, wall_s=20, pids=16, file_mb=1, output_kb=64)
    flood = "import sys\nwhile True:\n    sys.stdout.buffer.write(b'y' * 65536)"
    assert _run(flood, limits).reason == "output"
    assert _run("while True: pass", limits).reason == "cpu"


def test_unsafe_local_kills_the_process_group_on_exit(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
    )
    limits = SandboxLimits(memory_mb=256, cpu_s=10, wall_s=20, pids=16, file_mb=1, output_kb=64)
    assert _run(code, limits).reason == "exited"
    stat = Path(f"/proc/{pid_file.read_text()}/stat")
    deadline = time.monotonic() + 5  # SIGKILL was sent; give the kernel a moment to finish it
    while _running(stat):
        assert time.monotonic() < deadline, "the agent's child survived"
        time.sleep(0.01)


def _running(stat: Path) -> bool:
    try:
        return not stat.read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return False
