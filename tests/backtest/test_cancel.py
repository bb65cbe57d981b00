"""Cancelling backtests (queued at once, running ones stopped promptly), deleting an agent
cancels its work, per-user queue quotas, and the host loop running outside the API process."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.users.service import create_user
from support import command_of, sandboxed_descendants

REPO = Path(__file__).resolve().parents[2]
SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()
SLEEPER = b"""import time
import backtrader as bt


class Sleeper(bt.Strategy):
    def next(self):
        if len(self) > 5:
            time.sleep(3600)
"""
YEAR = {"symbols": ["SPY"], "startDate": "2023-01-01", "endDate": "2023-12-31"}


def status(client: TestClient, headers: Headers, session_id: str) -> str:
    result: str = client.get(f"/api/backtest/{session_id}/results", headers=headers).json()[
        "status"
    ]
    return result


def cancel(client: TestClient, headers: Headers, session_id: str) -> int:
    return client.post(f"/api/backtest/{session_id}/cancel", headers=headers).status_code


# Queued work, on SQLite and PostgreSQL, in an API-only process (nothing runs).


def test_a_queued_backtest_is_cancelled_at_once_by_its_owner_only(
    client: TestClient, make_user: Callable[[str], Headers]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    agent_id = submit(client, alice, SMA)
    session_id = start(client, alice, agent_id).json()["sessionId"]
    assert cancel(client, bob, session_id) == 403
    assert cancel(client, alice, "no-such-session") == 404

    response = client.post(f"/api/backtest/{session_id}/cancel", headers=alice)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["finishedAt"] is not None
    assert status(client, alice, session_id) == "cancelled"

    again = client.post(f"/api/backtest/{session_id}/cancel", headers=alice)
    assert again.status_code == 409
    assert "cancelled already" in again.json()["message"]


def test_deleting_an_agent_cancels_its_queued_backtests(
    client: TestClient, make_user: Callable[[str], Headers]
) -> None:
    alice = make_user("alice")
    agent_id = submit(client, alice, SMA)
    custom = start(client, alice, agent_id).json()["sessionId"]
    listed = client.get(f"/api/agents/{agent_id}/backtests", headers=alice).json()["sessions"]
    assert {s["kind"] for s in listed} == {"custom", "standard"}
    kept = start(client, alice, submit(client, alice, SMA + b"\n# other\n")).json()["sessionId"]

    assert client.delete(f"/api/agents/{agent_id}", headers=alice).status_code == 200
    assert [status(client, alice, s["sessionId"]) for s in listed] == ["cancelled"] * 2
    assert status(client, alice, custom) == "cancelled"
    assert status(client, alice, kept) == "queued", "other agents' work is untouched"


def test_queueing_past_the_users_quota_is_a_429(
    client: TestClient, make_user: Callable[[str], Headers]
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    agent_id = submit(client, alice, SMA)  # its standard evaluation does not count
    limit = 10  # FARM_MAX_QUEUED_BACKTESTS_PER_USER's default
    sessions = [start(client, alice, agent_id).json()["sessionId"] for _ in range(limit)]

    refused = start(client, alice, agent_id)
    assert refused.status_code == 429
    assert refused.json()["error"] == "quota_exceeded"
    assert f"already have {limit} backtests queued" in refused.json()["message"]
    assert int(refused.headers["Retry-After"]) > 0
    listed = client.get(f"/api/agents/{agent_id}/backtests", headers=alice).json()
    assert listed["total"] == limit + 1, "the refused request queued nothing"

    assert start(client, bob, submit(client, bob, SMA)).status_code == 202, "per user"
    assert cancel(client, alice, sessions[0]) == 200
    assert start(client, alice, agent_id).status_code == 202


# Running work, in real sandboxes.


@pytest.fixture
def server(tmp_path: Path, real_bars: Path) -> Iterator[tuple[TestClient, Headers]]:
    settings = app_settings(
        tmp_path,
        real_bars,
        backtest_workers=1,
        standard_symbols=["SPY"],
        standard_start="2024-01-02",
        standard_end="2024-01-05",
    )
    with TestClient(create_app(settings)) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "alice")
        yield client, {"Authorization": f"Bearer {token}"}


def sleeping_agent(client: TestClient, headers: Headers) -> tuple[str, str]:
    """An agent asleep in its sixth step: its id and its running session's."""
    agent_id = submit(client, headers, SLEEPER)
    session_id = start(client, headers, agent_id, **YEAR).json()["sessionId"]
    deadline = time.monotonic() + 60
    while status(client, headers, session_id) != "running" or not sandboxed_descendants(
        os.getpid()
    ):
        assert time.monotonic() < deadline, "the backtest never started"
        time.sleep(0.1)
    time.sleep(1)  # five quick steps, then the sleep
    return agent_id, session_id


def wait_for_no_agent_process(within: float) -> None:
    deadline = time.monotonic() + within
    while left := sandboxed_descendants(os.getpid()):
        assert time.monotonic() < deadline, f"agent processes left: {left}"
        time.sleep(0.05)


@pytest.mark.sandbox
def test_the_host_loop_runs_in_a_worker_process_not_the_api_process(
    server: tuple[TestClient, Headers],
) -> None:
    client, alice = server
    _, session_id = sleeping_agent(client, alice)
    (parent,) = sandboxed_descendants(os.getpid()).values()
    assert parent != os.getpid(), "the agent was started by the API process"
    assert "farm.backtest.worker" in command_of(parent)
    assert cancel(client, alice, session_id) == 200


@pytest.mark.sandbox
def test_a_worker_process_that_dies_fails_its_backtest_and_is_replaced(
    server: tuple[TestClient, Headers],
) -> None:
    client, alice = server
    _, session_id = sleeping_agent(client, alice)
    (worker,) = sandboxed_descendants(os.getpid()).values()
    os.kill(worker, signal.SIGKILL)
    wait_for_no_agent_process(within=5)
    result = wait_for(client, alice, session_id, timeout=10)
    assert result["status"] == "failed"
    assert result["failure"]["reason"] == "killed"
    assert "worker process died" in result["failure"]["message"]

    after = start(client, alice, submit(client, alice, SMA), **YEAR).json()["sessionId"]
    assert wait_for(client, alice, after, timeout=60)["status"] == "completed"


@pytest.mark.sandbox
def test_cancelling_a_running_backtest_kills_its_agent_and_keeps_its_records(
    server: tuple[TestClient, Headers],
) -> None:
    client, alice = server
    _, session_id = sleeping_agent(client, alice)
    cancelled = time.monotonic()
    assert cancel(client, alice, session_id) == 200
    wait_for_no_agent_process(within=5)
    assert time.monotonic() - cancelled < 5
    assert status(client, alice, session_id) == "cancelled"
    deadline = time.monotonic() + 10  # the job flushes them once its agent is dead
    path = f"/api/fmel/decisions?sessionId={session_id}&limit=1"
    while "total" not in (decisions := client.get(path, headers=alice).json()):
        assert time.monotonic() < deadline, decisions
        time.sleep(0.05)
    assert decisions["total"] == 5, "the records received before the cancel are flushed"
    assert cancel(client, alice, session_id) == 409

    # the worker is free again: the next backtest runs
    agent_id = submit(client, alice, SMA)
    after = start(client, alice, agent_id, **YEAR).json()["sessionId"]
    deadline = time.monotonic() + 60
    while status(client, alice, after) != "completed":
        assert time.monotonic() < deadline, "the worker did not take the next backtest"
        time.sleep(0.1)


@pytest.mark.sandbox
def test_deleting_an_agent_stops_its_running_backtest(
    server: tuple[TestClient, Headers],
) -> None:
    client, alice = server
    agent_id, running = sleeping_agent(client, alice)
    queued = start(client, alice, agent_id, **YEAR).json()["sessionId"]
    assert client.delete(f"/api/agents/{agent_id}", headers=alice).status_code == 200
    wait_for_no_agent_process(within=5)
    assert status(client, alice, running) == "cancelled"
    assert status(client, alice, queued) == "cancelled"
