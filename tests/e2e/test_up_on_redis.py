"""`farm up` on the Redis bus (issue 13): the one process publishes its feed's steps to the
Redis stream and its paper runtime reads them back, as `farm feed` and `farm worker paper` do
apart, so a paper session runs on live bars; its events go through Redis Streams too."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import redis
from server_support import start_server

from farm.marketdata.fanout import PREFIX
from support import flushed_redis, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"


@pytest.mark.sandbox
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_farm_up_on_the_redis_bus_runs_a_paper_session_on_the_streamed_feed(
    tmp_path: Path, real_bars: Path
) -> None:
    with flushed_redis() as url:
        home = tmp_path / "farm"
        shutil.copytree(real_bars, home / "bars")
        server = start_server(
            home,
            FARM_REDIS_URL=url,
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
            with redis.Redis.from_url(url) as client:  # the steps went through Redis
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
