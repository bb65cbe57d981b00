"""Hostile agents, run through the backtest service: each ends as a clean result while the
server keeps serving, and none reaches the network, the host's files or its secrets."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.users.service import create_user

pytestmark = pytest.mark.sandbox

SECRET = "farm-test-secret-d41d8cd9"
LEFTOVER = "987654"


def agent(body: str) -> bytes:
    """A strategy that runs ``body`` at its first decision."""
    indented = "\n".join("        " + line for line in body.strip().splitlines())
    return (
        "import backtrader as bt\nimport os, socket, subprocess, sys, ctypes\n\n"
        "class Attack(bt.Strategy):\n    def next(self):\n"
        f"{indented}\n"
    ).encode()


@pytest.fixture
def server(
    tmp_path: Path, real_bars: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, Headers]]:
    monkeypatch.setenv("FARM_SECRET_KEY", SECRET)
    settings = app_settings(
        tmp_path,
        real_bars,
        sandbox_wall_s=8,
        sandbox_cpu_s=4,
        sandbox_memory_mb=256,
        sandbox_pids=32,
        sandbox_file_mb=16,
        sandbox_output_kb=256,
        standard_symbols=["SPY"],
    )
    with TestClient(create_app(settings)) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "mallory")
        yield client, {"Authorization": f"Bearer {token}"}


def run_attack(server: tuple[TestClient, Headers], code: bytes) -> dict[str, object]:
    client, headers = server
    agent_id = submit(client, headers, code, name="attack")
    response = start(
        client,
        headers,
        agent_id,
        symbols=["SPY"],
        startDate="2023-01-03",
        endDate="2023-03-31",
        fmel=True,
    )
    assert response.status_code == 202
    result: dict[str, object] = wait_for(client, headers, response.json()["sessionId"])
    health = client.get("/health").json()
    assert health["status"] == "ok", "the server must keep serving"
    return result


def failure(result: dict[str, object]) -> dict[str, str]:
    assert result["status"] == "failed", result
    reason: dict[str, str] = result["failure"]  # type: ignore[assignment]
    return reason


ATTACKS: dict[str, tuple[str, set[str], str]] = {
    "tcp connect": (
        "socket.create_connection(('127.0.0.1', 5432), timeout=2)",
        {"agent_error"},
        "PermissionError",  # the seccomp filter refuses every socket but AF_UNIX
    ),
    "dns lookup": ("socket.getaddrinfo('example.com', 80)", {"agent_error"}, "gaierror"),
    "read /etc/shadow": ("open('/etc/shadow').read()", {"agent_error"}, "FileNotFoundError"),
    "fork bomb": (
        "while True:\n    os.fork()",
        {"agent_error", "timeout", "killed", "memory"},
        "",
    ),
    "memory bomb": (
        "hog = []\nwhile True:\n    hog.append(bytearray(50_000_000))",
        {"memory"},
        "",
    ),
    "cpu spin": ("while True:\n    pass", {"timeout"}, ""),
    "sleep forever": ("import time\ntime.sleep(10_000)", {"timeout"}, ""),
    "stdout flood": (
        "chunk = 'x' * 1_000_000\nfor _ in range(1000):\n    sys.stdout.write(chunk)",
        {"killed"},
        "output",
    ),
    "10 GB file write": (
        "with open('/tmp/big', 'wb') as f:\n    for _ in range(10_000):\n"
        "        f.write(b'0' * 1_000_000)",
        {"agent_error", "killed"},
        "",
    ),
    "segfault": ("ctypes.string_at(0)", {"killed"}, "SIGSEGV"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_ends_as_a_clean_failed_result(
    server: tuple[TestClient, Headers], name: str
) -> None:
    code, reasons, fragment = ATTACKS[name]
    ended = failure(run_attack(server, agent(code)))
    assert ended["reason"] in reasons, ended
    assert fragment in ended["message"] + (ended.get("traceback") or ""), ended


def test_the_platform_database_and_other_agents_files_are_invisible(
    server: tuple[TestClient, Headers],
) -> None:
    client, headers = server
    victim = submit(client, headers, agent("pass"), name="victim")
    context = client.app.state.context  # type: ignore[attr-defined]
    victim_file = context.artifacts.local_path(f"agents/{_user_id(context)}/{victim}.py")
    database = context.settings.sqlite_path
    for path in (database, victim_file, context.settings.home):
        assert Path(path).exists()
        ended = failure(
            run_attack(
                server,
                agent(
                    f"os.listdir({str(path)!r}) if os.path.isdir("
                    f"{str(path)!r}) else open({str(path)!r}).read()"
                ),
            )
        )
        assert ended["reason"] == "agent_error"
        assert "FileNotFoundError" in ended["message"]


def _user_id(context: object) -> str:
    from sqlalchemy import select

    from farm.storage.models import User

    with context.db.transaction() as session:  # type: ignore[attr-defined]
        return str(session.scalar(select(User.id).where(User.name == "mallory")))


def test_environment_snooping_finds_nothing(server: tuple[TestClient, Headers]) -> None:
    client, headers = server
    code = (
        b"import os\nimport backtrader as bt\n\nclass Snoop(bt.Strategy):\n"
        b"    def next(self):\n        pass\n\n"
        b"    def get_decision_reasoning(self):\n"
        b"        return repr(sorted(os.environ.items()))\n"
    )
    result = run_attack(server, code)
    assert result["status"] == "completed", result
    decisions = client.get(
        f"/api/fmel/decisions?sessionId={result['sessionId']}&limit=1", headers=headers
    ).json()["decisions"]
    seen = str(decisions)
    assert "PYTHONPATH" in seen, "the reasoning was recorded"
    assert SECRET not in seen
    assert "FARM_" not in seen


def test_a_child_process_left_behind_is_killed_with_the_group(
    server: tuple[TestClient, Headers],
) -> None:
    code = agent(
        f"if len(self) == 1:\n    subprocess.Popen(['sleep', '{LEFTOVER}'], start_new_session=True)"
    )
    result = run_attack(server, code)
    assert result["status"] == "completed", result
    deadline = time.monotonic() + 5  # the kill is asynchronous: allow the group to be reaped
    while (survivors := _processes(f"sleep {LEFTOVER}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert survivors == "", f"left behind: {survivors}"


def _processes(pattern: str) -> str:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return found.stdout.strip()


def test_the_server_process_never_runs_agent_code(server: tuple[TestClient, Headers]) -> None:
    marker = f"/tmp/farm-pwned-{os.getpid()}"
    result = run_attack(server, agent(f"open({marker!r}, 'w').write('x')"))
    assert result["status"] == "completed", result
    assert not Path(marker).exists(), "the agent wrote to the host's /tmp"
