"""Fair queues with real sandboxed runs: one user's long queue does not hold up another user's
backtest, and standard evaluations are not starved by anyone's custom backtests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[2]
SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()
SHORT = {"symbols": ["SPY"], "startDate": "2024-01-02", "endDate": "2024-01-31", "fmel": False}

pytestmark = pytest.mark.sandbox


def users(client: TestClient) -> Callable[[str], Headers]:
    def make(name: str) -> Headers:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, name)
        return {"Authorization": f"Bearer {token}"}

    return make


def statuses(client: TestClient, headers: Headers, sessions: list[str]) -> list[str]:
    return [
        client.get(f"/api/backtest/{s}/results", headers=headers).json()["status"] for s in sessions
    ]


def test_a_second_users_backtest_starts_within_seconds_while_the_first_has_50_queued(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(
        tmp_path,
        real_bars,
        max_queued_backtests_per_user=50,
        standard_symbols=["SPY"],
        standard_start="2024-01-02",
        standard_end="2024-01-05",
    )
    with TestClient(create_app(settings)) as client:
        make = users(client)
        alice, bob = make("alice"), make("bob")
        alices = submit(client, alice, SMA)
        bobs = submit(client, bob, SMA + b"\n# bob\n")
        flood = [start(client, alice, alices, **SHORT).json()["sessionId"] for _ in range(50)]
        queued_at = time.monotonic()
        mine = start(client, bob, bobs, **SHORT).json()["sessionId"]
        result: Any = wait_for(client, bob, mine, timeout=60)
        waited = time.monotonic() - queued_at
        left = statuses(client, alice, flood).count("queued")
    assert result["status"] == "completed", result
    assert left >= 40, f"bob's backtest waited for {50 - left} of alice's"
    assert waited < 30


def test_standard_evaluations_start_while_custom_backtests_are_queued(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(
        tmp_path,
        real_bars,
        backtest_workers=1,
        standard_symbols=["SPY"],
        standard_start="2024-01-02",
        standard_end="2024-01-31",
    )
    with TestClient(create_app(settings)) as client:
        make = users(client)
        alice, bob = make("alice"), make("bob")
        alices = submit(client, alice, SMA)
        custom = [start(client, alice, alices, **SHORT).json()["sessionId"] for _ in range(10)]
        bobs = submit(client, bob, SMA + b"\n# bob\n")
        (standard,) = client.get(f"/api/agents/{bobs}/backtests", headers=bob).json()["sessions"]
        result: Any = wait_for(client, bob, standard["sessionId"], timeout=60)
        left = statuses(client, alice, custom).count("queued")
    assert result["status"] == "completed", result
    assert left >= 6, f"the standard evaluation waited for {10 - left} custom backtests"
