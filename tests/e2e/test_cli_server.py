"""End to end: a real `farm up` server, driven by the `farm` CLI over HTTP."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_support import farm, start_server

from support import free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    """`farm up` in its own FARM_HOME; yields the env a CLI user would have."""
    running = start_server(tmp_path / "home", FARM_BACKTEST_WORKERS="0")
    try:
        assert "FARM_TOKEN" in running.env, "farm up did not print the demo user's token"
        yield running.env
    finally:
        running.stop()


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
    assert "FARM_URL" in down.stderr  # says what to fix


def test_users_create_prints_a_working_token(server: dict[str, str]) -> None:
    created = farm(server, "users", "create", "carol")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    listed = farm({**server, "FARM_TOKEN": token}, "agents", "list", "--json")
    assert json.loads(listed.stdout)["pagination"]["total"] == 0
    again = farm(server, "users", "create", "carol")
    assert again.returncode == 1
    assert "already exists" in again.stderr


def test_users_token_reissues_and_revokes(server: dict[str, str]) -> None:
    def works(token: str) -> bool:
        listed = farm({**server, "FARM_TOKEN": token}, "agents", "list", "--json")
        assert listed.returncode == 0 or "(401)" in listed.stderr, listed.stderr
        return listed.returncode == 0

    first = server["FARM_TOKEN"]
    issued = farm(server, "users", "token", "demo")
    assert issued.returncode == 0, issued.stderr
    second = issued.stdout.strip().splitlines()[-1]
    assert second != first
    assert works(first)
    assert works(second)
    rotated = farm(server, "users", "token", "demo", "--revoke-others")
    assert rotated.returncode == 0, rotated.stderr
    assert "2 older token(s) revoked" in rotated.stdout
    third = rotated.stdout.strip().splitlines()[-1]
    assert not works(first)
    assert not works(second)
    assert works(third)
    revoked = farm(server, "users", "revoke", "demo")
    assert "Revoked 1 API token(s)" in revoked.stdout
    assert not works(third)
    unknown = farm(server, "users", "token", "nobody")
    assert unknown.returncode == 1
    assert "no user named 'nobody'" in unknown.stderr


def test_the_printed_exports_reach_a_server_on_another_port(tmp_path: Path) -> None:
    """`farm up` on FARM_PORT prints FARM_URL and FARM_TOKEN; with FARM_PORT alone the CLI finds
    the server too; FARM_LOG_FORMAT=json logs JSON lines carrying each request's id."""
    port = str(free_port())
    running = start_server(
        tmp_path / "home", FARM_BACKTEST_WORKERS="0", FARM_PORT=port, FARM_LOG_FORMAT="json"
    )
    try:
        output = running.output()
        exports = re.search(r"export FARM_URL=(\S+)\s+export FARM_TOKEN=(\S+)", output)
        assert exports, output
        assert exports.group(1) == f"http://127.0.0.1:{port}"
        env = {k: v for k, v in running.env.items() if k != "FARM_URL"}
        listed = farm(env, "agents", "list", "--json")  # FARM_PORT set, FARM_URL unset
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["pagination"]["total"] == 0

        answer = httpx.get(f"{running.url}/health", headers={"X-Request-ID": "e2e-trace-1"})
        assert answer.headers["X-Request-ID"] == "e2e-trace-1"
        deadline = time.monotonic() + 10
        while "e2e-trace-1" not in running.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        lines = [json.loads(line) for line in running.output().splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("request_id") == "e2e-trace-1"]
        assert access, running.output()
        assert access[0]["logger"] == "uvicorn.access"
        assert "/health" in access[0]["message"]
    finally:
        running.stop()


@pytest.mark.sandbox
def test_cli_backtest_with_progress_then_results(tmp_path: Path) -> None:
    """On a fresh home with no data: the synthetic universe, labelled as such."""
    running = start_server(tmp_path / "home")
    try:
        env = running.env
        example = str(REPO / "examples/agents/rsi_mean_reversion.py")
        submitted = farm(env, "agents", "submit", example, "--name", "RSI", "--json")
        agent_id = json.loads(submitted.stdout)["agentId"]
        listed = farm(env, "agents", "list")
        assert agent_id in listed.stdout  # ids are printed whole, never cut

        waited = farm(
            env,
            "backtest",
            agent_id,
            "--symbols",
            "SPY,AAPL",
            "--start",
            "2022-01-03",
            "--end",
            "2022-12-30",
            "--cash",
            "25000",
            "--wait",
        )
        assert waited.returncode == 0, waited.stderr
        assert "completed" in waited.stdout
        assert "data: synthetic" in waited.stdout
        assert "sharpeRatio" in waited.stdout

        started = farm(env, "backtest", agent_id, "--symbols", "SPY", "--json")
        session_id = json.loads(started.stdout)["sessionId"]
        result = json.loads(farm(env, "results", session_id, "--json").stdout)
        assert result["sessionId"] == session_id
        assert result["parameters"]["symbols"] == ["SPY"]

        bad = farm(env, "backtest", agent_id, "--symbols", "NOPE")
        assert bad.returncode == 1
        assert "unknown symbols: NOPE" in bad.stderr
    finally:
        running.stop()
