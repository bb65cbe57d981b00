"""A server killed mid-backtest: after restart the session is re-queued and completes."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import httpx
import pytest
from server_support import start_server

SLOW = b"""import time
import backtrader as bt


class Slow(bt.Strategy):
    def next(self):
        time.sleep(0.02)
"""


@pytest.mark.sandbox
def test_a_killed_server_resumes_its_running_backtest(tmp_path: Path, shared_data: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(shared_data / "daily" / "SPY.csv", data)
    env = {
        "FARM_DATA_DIR": str(data),
        "FARM_BACKTEST_WORKERS": "1",
        "FARM_STANDARD_SYMBOLS": '["SPY"]',
        "FARM_STANDARD_START": "2024-10-01",
        "FARM_STANDARD_END": "2024-10-31",
    }
    home = tmp_path / "home"
    server = start_server(home, **env)
    headers = {"Authorization": f"Bearer {server.env['FARM_TOKEN']}"}
    api = httpx.Client(base_url=server.url, headers=headers, timeout=30)
    try:
        agent_id = api.post(
            "/api/agents/submit", data={"agentName": "slow"}, files={"file": ("a.py", SLOW)}
        ).json()["agentId"]
        session_id = api.post(
            f"/api/backtest/{agent_id}/start",
            json={"symbols": ["SPY"], "startDate": "2023-01-01", "endDate": "2023-12-31"},
        ).json()["sessionId"]
        deadline = time.monotonic() + 60
        while api.get(f"/api/backtest/{session_id}/results").json()["progress"]["barsDone"] < 10:
            assert time.monotonic() < deadline, "the backtest never started"
            time.sleep(0.1)
        server.stop(signal.SIGKILL)  # a crash: nothing is cleaned up

        server = start_server(home, FARM_PORT=server.env["FARM_PORT"], **env)
        assert f"re-queueing backtest {session_id}" in server.output()
        deadline = time.monotonic() + 120
        while (result := api.get(f"/api/backtest/{session_id}/results").json())["status"] not in {
            "completed",
            "failed",
        }:
            assert time.monotonic() < deadline, result
            time.sleep(0.2)
        assert result["status"] == "completed", result
        assert result["progress"]["barsDone"] == result["progress"]["barsTotal"] == 250
    finally:
        api.close()
        server.stop()
