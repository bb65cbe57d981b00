"""End to end: a real `farm up` server, driven by the `farm` CLI over HTTP."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
FARM = [sys.executable, "-m", "farm"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`farm up` in its own FARM_HOME; yields the env a CLI user would have."""
    port = free_port()
    env = {**os.environ, "FARM_HOME": str(tmp_path / "home"), "FARM_PORT": str(port)}
    log = (tmp_path / "server.log").open("w+")
    process = subprocess.Popen([*FARM, "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"farm up did not start:\n{log.read()}")
            time.sleep(0.2)
        log.seek(0)
        token = re.search(r"FARM_TOKEN=(\S+)", log.read())
        assert token, "farm up did not print the demo user's token"
        yield {**env, "FARM_URL": url, "FARM_TOKEN": token.group(1)}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def farm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], env=env, capture_output=True, text=True, timeout=60)


def test_cli_round_trip_against_a_running_server(server: dict[str, str]) -> None:
    example = str(REPO / "examples/agents/sma_cross.py")
    submitted = farm(
        server, "agents", "submit", example, "--name", "SMA", "--tags", "trend", "--json"
    )
    assert submitted.returncode == 0, submitted.stderr
    agent_id = json.loads(submitted.stdout)["agentId"]

    listed = farm(server, "agents", "list", "--json")
    assert [a["agentId"] for a in json.loads(listed.stdout)["agents"]] == [agent_id]
    table = farm(server, "agents", "list")
    assert "SMA" in table.stdout
    assert "1 in all" in table.stdout

    shown = farm(server, "agents", "show", agent_id, "--json", "--source")
    assert json.loads(shown.stdout)["source"] == Path(example).read_text()

    duplicate = farm(server, "agents", "submit", example, "--name", "again")
    assert duplicate.returncode == 1
    assert "already submitted this exact code" in duplicate.stderr

    assert farm(server, "agents", "delete", agent_id).returncode == 0
    gone = farm(server, "agents", "show", agent_id)
    assert gone.returncode == 1
    assert "no agent with id" in gone.stderr


def test_cli_reports_auth_and_connection_failures(server: dict[str, str]) -> None:
    bad_token = farm({**server, "FARM_TOKEN": "farm_nope"}, "agents", "list")
    assert bad_token.returncode == 1
    assert "(401)" in bad_token.stderr
    down = farm({**server, "FARM_URL": f"http://127.0.0.1:{free_port()}"}, "agents", "list")
    assert down.returncode == 1
    assert "cannot reach the server" in down.stderr


def test_users_create_prints_a_working_token(server: dict[str, str]) -> None:
    created = farm(server, "users", "create", "carol")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    listed = farm({**server, "FARM_TOKEN": token}, "agents", "list", "--json")
    assert json.loads(listed.stdout)["pagination"]["total"] == 0
    again = farm(server, "users", "create", "carol")
    assert again.returncode == 1
    assert "already exists" in again.stderr
