"""Re-evaluation: an import that changes the standard universe re-queues every agent's standard
evaluation once; ``POST /api/agents/{id}/evaluate`` re-runs one on demand, rate-limited."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, submit
from typer.testing import CliRunner

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.marketdata.cli import app as data_cli
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[2]
SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()
OTHER = SMA + b"\n# another agent\n"


def standard_sessions(client: TestClient, headers: Headers, agent_id: str) -> list[Any]:
    body = client.get(f"/api/agents/{agent_id}/backtests", headers=headers).json()
    return [s for s in body["sessions"] if s["kind"] == "standard"]


def cancel_all(client: TestClient, headers: Headers, agent_id: str) -> None:
    for s in standard_sessions(client, headers, agent_id):
        if s["status"] == "queued":
            cancelled = client.post(f"/api/backtest/{s['sessionId']}/cancel", headers=headers)
            assert cancelled.status_code == 200


@pytest.fixture
def cli_env(context: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    """``farm data import`` works on the running app's FARM_HOME and database."""
    monkeypatch.setenv("FARM_HOME", str(context.settings.home))
    if context.settings.database_url:
        monkeypatch.setenv("FARM_DATABASE_URL", context.settings.database_url)


def test_an_import_of_a_standard_symbol_requeues_each_agent_once(
    client: TestClient,
    make_user: Callable[[str], Headers],
    cli_env: None,
    shared_data: Path,
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    waiting = submit(client, alice, SMA, "waiting")  # its first evaluation is still queued
    done = submit(client, bob, OTHER, "done")
    cancel_all(client, bob, done)
    gone = submit(client, bob, SMA, "gone")
    cancel_all(client, bob, gone)
    assert client.delete(f"/api/agents/{gone}", headers=bob).status_code == 200

    result = CliRunner().invoke(data_cli, ["import", str(shared_data / "daily" / "AAPL.csv")])
    assert result.exit_code == 0, result.output
    assert "1 standard evaluations queued" in " ".join(result.output.split())
    assert [s["status"] for s in standard_sessions(client, alice, waiting)] == ["queued"]
    assert [s["status"] for s in standard_sessions(client, bob, done)] == ["queued", "cancelled"]

    again = CliRunner().invoke(data_cli, ["import", str(shared_data / "daily" / "MSFT.csv")])
    assert again.exit_code == 0, again.output
    assert len(standard_sessions(client, bob, done)) == 2  # still one queued, not two

    cancel_all(client, bob, done)
    other = CliRunner().invoke(data_cli, ["import", str(shared_data / "daily" / "AB.csv")])
    assert other.exit_code == 0, other.output
    assert "standard evaluations queued" not in other.output  # AB is not a standard symbol
    assert [s["status"] for s in standard_sessions(client, bob, done)] == [
        "cancelled",
        "cancelled",
    ]


def test_evaluate_on_demand_is_the_owners_and_rate_limited(
    client: TestClient, make_user: Callable[[str], Headers], context: Context
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    agent_id = submit(client, alice, SMA)
    busy = client.post(f"/api/agents/{agent_id}/evaluate", headers=alice)
    assert busy.status_code == 429
    assert "queued" in busy.json()["message"]
    assert busy.headers["Retry-After"]
    cancel_all(client, alice, agent_id)
    recent = client.post(f"/api/agents/{agent_id}/evaluate", headers=alice)
    assert recent.status_code == 429
    assert "FARM_EVALUATE_COOLDOWN_S" in recent.json()["message"]
    assert 0 < int(recent.headers["Retry-After"]) <= 600
    assert client.post(f"/api/agents/{agent_id}/evaluate", headers=bob).status_code == 403
    assert client.post("/api/agents/nope/evaluate", headers=alice).status_code == 404
    assert client.post(f"/api/agents/{agent_id}/evaluate").status_code == 401

    context.settings.evaluate_cooldown_s = 0
    accepted = client.post(f"/api/agents/{agent_id}/evaluate", headers=alice)
    assert accepted.status_code == 202, accepted.text
    session_id = accepted.json()["sessionId"]
    sessions = standard_sessions(client, alice, agent_id)
    assert [s["sessionId"] for s in sessions if s["status"] == "queued"] == [session_id]
    assert sessions[0]["parameters"]["fmel"] is True


@pytest.fixture
def sandbox_client(tmp_path: Path) -> Iterator[TestClient]:
    """A server with workers, started on the synthetic demo (no real bars yet)."""
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=2,
        sandbox_wall_s=60,
        standard_symbols=["SPY", "AAPL"],
        standard_start="2023-01-01",
        standard_end="2023-06-30",
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def wait_until(check: Callable[[], bool], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"not reached in {timeout} s")


@pytest.mark.sandbox
def test_an_import_of_the_standard_universe_ranks_agents_submitted_before_it(
    sandbox_client: TestClient,
    shared_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = sandbox_client
    context: Context = client.app.state.context  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        _, token = create_user(session, "alice")
    alice = {"Authorization": f"Bearer {token}"}
    agent_id = submit(client, alice, SMA)

    def finished() -> bool:
        sessions = standard_sessions(client, alice, agent_id)
        return bool(sessions) and all(s["status"] == "completed" for s in sessions)

    wait_until(finished)
    assert standard_sessions(client, alice, agent_id)[0]["dataSource"] == "synthetic"
    board = client.get("/api/leaderboard?type=backtest&timeframe=all_time").json()
    assert board["leaderboard"] == []

    monkeypatch.setenv("FARM_HOME", str(context.settings.home))
    monkeypatch.setenv("FARM_STANDARD_SYMBOLS", '["SPY", "AAPL"]')
    monkeypatch.setenv("FARM_STANDARD_START", "2023-01-01")
    monkeypatch.setenv("FARM_STANDARD_END", "2023-06-30")
    folder = tmp_path / "real"
    folder.mkdir()
    for symbol in ("SPY", "AAPL"):
        (folder / f"{symbol}.csv").symlink_to(shared_data / "daily" / f"{symbol}.csv")
    result = CliRunner().invoke(data_cli, ["import", str(folder)])
    assert result.exit_code == 0, result.output

    wait_until(lambda: finished() and len(standard_sessions(client, alice, agent_id)) == 2)
    sessions = standard_sessions(client, alice, agent_id)
    assert [s["dataSource"] for s in sessions] == ["real", "synthetic"], sessions
    board = client.get("/api/leaderboard?type=backtest&timeframe=all_time").json()
    assert [row["agentId"] for row in board["leaderboard"]] == [agent_id]


def test_a_changed_data_dir_at_start_requeues_and_an_unchanged_one_does_not(
    tmp_path: Path, shared_data: Path
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    spy = (shared_data / "daily" / "SPY.csv").read_text()
    (folder / "SPY.csv").write_text(spy)
    settings = Settings(
        home=tmp_path / "farm", backtest_workers=0, data_dir=folder, standard_symbols=["SPY"]
    )

    def standard_statuses() -> list[str]:
        with TestClient(create_app(settings)) as client:
            return [s["status"] for s in standard_sessions(client, alice, agent_id)]

    with TestClient(create_app(settings)) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "alice")
        alice = {"Authorization": f"Bearer {token}"}
        agent_id = submit(client, alice, SMA)
        cancel_all(client, alice, agent_id)
    assert standard_statuses() == ["cancelled"]  # the same files: nothing changed
    (folder / "SPY.csv").write_text(spy.rsplit("\n", 2)[0] + "\n")  # one bar fewer
    assert standard_statuses() == ["queued", "cancelled"]
