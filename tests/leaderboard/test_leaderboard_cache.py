"""The cache: write-through, rebuilds (one at a time, none lost), aging, Redis outages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from leaderboard_support import Farm, RedisServer
from sqlalchemy.orm import Session

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.leaderboard import repository
from farm.leaderboard.schemas import BoardType

URL = "/api/leaderboard?type=backtest&metric=sharpe&timeframe=all_time&limit=1000"
Calls = list[tuple[str, str]]


def get(client: TestClient, url: str = URL) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [row["agentName"] for row in body["leaderboard"]]


def count_rebuilds(
    monkeypatch: pytest.MonkeyPatch, delay: float = 0.0, during: Callable[[], None] | None = None
) -> Calls:
    """Record every SQL read of a whole board (what a rebuild runs), optionally slowed down,
    and run ``during`` once right after the first read."""
    calls: Calls = []
    original = repository.board_rows

    def board_rows(
        session: Session, board_type: BoardType, timeframe: str, since: datetime | None
    ) -> list[repository.BoardRow]:
        calls.append((board_type.value, timeframe))
        rows = original(session, board_type, timeframe, since)
        time.sleep(delay)
        if during is not None and len(calls) == 1:
            during()
        return rows

    monkeypatch.setattr(repository, "board_rows", board_rows)
    return calls


def make_cold(context: Context, cache_url: str | None) -> None:
    """Flush Redis, or drop the in-process boards."""
    if cache_url is None:
        context.leaderboard.cache.close()
        return
    with redis.Redis.from_url(cache_url) as client:
        client.flushdb()


def test_results_are_written_through_without_rebuilding(
    client: TestClient, farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    farm.result(farm.agent("first"), sharpeRatio=1.0)
    assert names(get(client)) == ["first"]
    calls = count_rebuilds(monkeypatch)
    farm.result(farm.agent("second"), sharpeRatio=2.0)
    body = get(client)
    assert names(body) == ["second", "first"]
    assert body["source"] == "cache"
    assert calls == []


def test_a_cold_cache_is_rebuilt_once_under_concurrent_misses(
    client: TestClient,
    context: Context,
    farm: Farm,
    cache_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for i in range(30):
        farm.result(farm.agent(f"a{i:02d}"), sharpeRatio=float(i % 7))
    warm = get(client)
    assert warm["source"] == "cache"
    assert len(warm["leaderboard"]) == 30

    make_cold(context, cache_url)
    calls = count_rebuilds(monkeypatch, delay=0.3)
    with ThreadPoolExecutor(16) as pool:
        bodies = list(pool.map(lambda _: get(client), range(16)))
    assert calls == [("backtest", "all_time")]
    for body in bodies:
        assert body["source"] == "cache"
        assert body["leaderboard"] == warm["leaderboard"]


def test_a_result_recorded_during_a_rebuild_is_not_lost(
    client: TestClient,
    context: Context,
    farm: Farm,
    cache_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    farm.result(farm.agent("before"), sharpeRatio=1.0)
    late = farm.agent("during")
    make_cold(context, cache_url)
    calls = count_rebuilds(monkeypatch, during=lambda: farm.result(late, sharpeRatio=2.0))
    body = get(client)
    assert len(calls) == 2  # the first snapshot missed the write, so it was read again
    assert names(body) == ["during", "before"]
    assert body["source"] == "cache"


def test_entries_leave_a_window_as_they_age(client: TestClient, farm: Farm) -> None:
    # "aging" leaves the daily window 5 s after it is recorded: room for a loaded machine to
    # read the board before that, then a wait until it has surely left.
    leaves_at = time.monotonic() + 5
    farm.result(farm.agent("aging"), age=timedelta(days=1) - timedelta(seconds=5))
    farm.result(farm.agent("fresh"), age=timedelta(hours=1))
    daily = URL.replace("all_time", "daily")
    assert sorted(names(get(client, daily))) == ["aging", "fresh"]
    time.sleep(max(0.0, leaves_at - time.monotonic()) + 0.5)
    body = get(client, daily)
    assert names(body) == ["fresh"]
    assert body["source"] == "cache"
    assert sorted(names(get(client))) == ["aging", "fresh"]


@pytest.mark.redis
def test_redis_outage_falls_back_to_sql_warns_once_and_recovers(
    db_settings: Settings, private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = db_settings.model_copy(update={"redis_url": private_redis.url})
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        farm = Farm(context)
        low, high = farm.agent("low"), farm.agent("high")
        farm.result(low, sharpeRatio=0.5)
        farm.result(high, sharpeRatio=1.5)
        assert get(client)["source"] == "cache"

        private_redis.stop()
        caplog.set_level(logging.INFO, logger="farm.leaderboard")
        for _ in range(20):
            body = get(client)
            assert body["source"] == "database"
            assert names(body) == ["high", "low"]
            assert [r["rank"] for r in body["leaderboard"]] == [1, 2]
        rank = client.get(
            f"/api/leaderboard/rank/{low}?type=backtest&metric=sharpe&timeframe=all_time"
        )
        assert (rank.json()["rank"], rank.json()["total"], rank.json()["source"]) == (
            2,
            2,
            "database",
        )
        farm.result(farm.agent("top"), sharpeRatio=9.0)  # recorded while Redis is down
        assert names(get(client)) == ["top", "high", "low"]
        warnings = [
            r
            for r in caplog.records
            if r.name == "farm.leaderboard" and r.levelno >= logging.WARNING
        ]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert "Redis is unreachable" in warnings[0].getMessage()

        private_redis.start()
        deadline = time.monotonic() + 10
        body = get(client)
        while body["source"] != "cache" and time.monotonic() < deadline:
            time.sleep(0.1)
            body = get(client)
        assert body["source"] == "cache"
        assert names(body) == ["top", "high", "low"]  # rebuilt from SQL, nothing missed
        rank = client.get(
            f"/api/leaderboard/rank/{low}?type=backtest&metric=sharpe&timeframe=all_time"
        )
        assert (rank.json()["rank"], rank.json()["source"]) == (3, "cache")
