"""`farm up` on the Redis bus (issue 13): the one process publishes its feed's steps to the
Redis stream and its paper runtime reads them back, as `farm feed` and `farm worker paper` do
apart, so a paper session runs on live bars; its events go through Redis Streams too. On a Redis
server, and on a Redis Cluster (`FARM_REDIS_CLUSTER`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from server_support import start_server

from farm.marketdata.fanout import PREFIX
from farm.streams import connect
from support import flushed_redis, redis_cluster, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


@contextmanager
def redis_of(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty Redis server, or of a node of a private Redis Cluster: the second,
    which does not hold the feed's stream (slot 5107 of ``farm:feed:replay`` is the first's),
    so a client that did not speak Redis Cluster would be sent elsewhere (MOVED)."""
    if kind == "server":
        with flushed_redis() as url:
            yield url
    else:
        with redis_cluster(folder) as cluster:
            yield f"redis://127.0.0.1:{cluster.ports[1]}/0"


@pytest.mark.sandbox
@pytest.mark.redis
@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["server", "cluster"])
def test_farm_up_on_the_redis_bus_runs_a_paper_session_on_the_streamed_feed(
    tmp_path: Path, real_bars: Path, kind: str
) -> None:
    with redis_of(kind, tmp_path / "cluster") as url:
        home = tmp_path / "farm"
        shutil.copytree(real_bars, home / "bars")
        server = start_server(
            home,
            FARM_REDIS_URL=url,
            FARM_REDIS_CLUSTER=str(kind == "cluster").lower(),
            FARM_BUS="redis",
            FARM_BACKTEST_WORKERS="0",
            FARM_FEED="replay",
            FARM_FEED_SYMBOLS='["SPY","AAPL"]',
            FARM_FEED_REPLAY_START="2024-05-01",
            FARM_FEED_INTERVAL_S="0.2",
            FARM_PAPER_POLL_S="0.05",
        )
        api = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.env['FARM_TOKEN']}"},
            timeout=30,
        )
        try:
            agent_id = api.post(
                "/api/agents/submit",
                data={"agentName": "sma"},
                files={"file": ("a.py", (EXAMPLES / "sma_cross.py").read_bytes())},
            ).json()["agentId"]
            started = api.post(
                "/api/paper-trading/start", json={"agentId": agent_id, "symbols": ["SPY", "AAPL"]}
            )
            assert started.status_code == 202, started.text

            def bars() -> int:
                status = api.get(f"/api/paper-trading/status/{agent_id}").json()
                assert status["status"] in ("starting", "running"), status
                return int(status["barsProcessed"])

            wait_until(lambda: bars() >= 5, 90, "five live bars")
            with connect(url, cluster=kind == "cluster") as client:  # the steps went via Redis
                (stream,) = client.keys(f"{PREFIX}*")
                assert client.xlen(stream) >= 5
            stopped = api.post("/api/paper-trading/stop", json={"agentId": agent_id})
            assert stopped.status_code == 200, stopped.text
            wait_until(
                lambda: (
                    api.get(f"/api/paper-trading/status/{agent_id}").json()["status"] == "stopped"
                ),
                30,
                "the stop",
            )
        finally:
            api.close()
            server.stop()
