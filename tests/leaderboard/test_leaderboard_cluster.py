"""Redis Cluster safety: every key of the cache in one slot, boards rebuilt after their TTL, and
the cache on a real three-master cluster."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from leaderboard_support import Farm
from redis.crc import key_slot

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.leaderboard.cache import ALL_BOARDS, Board, RedisLeaderboardCache, _Keys
from farm.leaderboard.schemas import BoardType, Metric, Timeframe
from support import RedisCluster, redis_cluster

URL = "/api/leaderboard?type=backtest&metric=sharpe&timeframe=all_time&limit=1000"


def names(client: TestClient) -> tuple[list[str], str]:
    response = client.get(URL)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return [row["agentName"] for row in body["leaderboard"]], body["source"]


def test_every_script_and_transaction_touches_one_slot() -> None:
    # Scripts take one board's keys; a write's transaction spans every board of its entries
    # and the recovery probe deletes every board's meta: all must hash to one slot.
    keys = [_Keys.of("farm:lb", board, "n20") for board in ALL_BOARDS]
    used = [k for ks in keys for m in Metric for k in (*ks.read(m), *ks.remove(), ks.lock)]
    assert len(set(used)) > 100
    assert {key_slot(k.encode()) for k in used} == {key_slot(b"{farm:lb}")}
    other = _Keys.of("other", ALL_BOARDS[0], "")
    assert key_slot(other.meta.encode()) != key_slot(b"{farm:lb}")


@pytest.mark.redis
def test_a_missed_event_is_healed_by_the_board_ttl(db_settings: Settings, redis_url: str) -> None:
    settings = db_settings.model_copy(
        update={"redis_url": redis_url, "leaderboard_cache_ttl_s": 1.5}
    )
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        farm = Farm(context)
        farm.result(farm.agent("first"), sharpeRatio=1.0)
        assert names(client) == (["first"], "cache")
        cache = context.leaderboard.cache
        assert isinstance(cache, RedisLeaderboardCache)
        meta = cache._keys[Board(BoardType.BACKTEST, Timeframe.ALL_TIME)].meta
        with redis.Redis.from_url(redis_url) as direct:
            ttl = direct.pttl(meta)
            assert 0 < ttl <= 1500
            farm.result(farm.agent("second"), sharpeRatio=2.0)  # written through: TTL kept
            assert 0 < direct.pttl(meta) <= ttl
            assert names(client) == (["second", "first"], "cache")
            farm.result(farm.agent("missed"), sharpeRatio=3.0, publish=False)
            assert names(client) == (["second", "first"], "cache")  # stale: the event was lost
            time.sleep(1.6)
            assert names(client) == (["missed", "second", "first"], "cache")
            assert direct.pttl(meta) > 0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    """A private Redis Cluster of three masters."""
    with redis_cluster(tmp_path / "cluster") as started:
        yield started


@pytest.mark.redis
def test_the_cache_runs_on_a_real_redis_cluster(
    db_settings: Settings, cluster: RedisCluster
) -> None:
    settings = db_settings.model_copy(update={"redis_url": cluster.url, "redis_cluster": True})
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        assert context.leaderboard.cache.health() == ("cache:redis", "ok")
        farm = Farm(context)
        low, high = farm.agent("low"), farm.agent("high")
        farm.result(low, sharpeRatio=0.5)
        farm.result(high, sharpeRatio=1.5)
        assert names(client) == (["high", "low"], "cache")
        rank = client.get(
            f"/api/leaderboard/rank/{low}?type=backtest&metric=sharpe&timeframe=all_time"
        ).json()
        assert (rank["rank"], rank["total"], rank["source"]) == (2, 2, "cache")
        farm.result(farm.agent("top"), sharpeRatio=9.0)
        assert names(client) == (["top", "high", "low"], "cache")
        context.leaderboard.cache.remove(high)
        assert names(client) == (["top", "low"], "cache")
        # The keys really are on the cluster, in the tag's slot.
        with redis.RedisCluster.from_url(cluster.url) as direct:
            assert direct.cluster_countkeysinslot(key_slot(b"{farm:lb}")) > 0
