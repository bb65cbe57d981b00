"""`farm backtest cancel` against a real `farm up` server: the running agent is stopped at once,
and nothing of the server is left running after it stops."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from server_support import api_client, copy_daily, farm, start_server

from support import descendants, sandboxed_descendants

SLEEPER = b"""import time
import backtrader as bt


class Sleeper(bt.Strategy):
    def next(self):
        if len(self) > 5:
            time.sleep(3600)
"""


@pytest.mark.sandbox
def test_cli_cancels_a_running_backtest(tmp_path: Path, shared_data: Path) -> None:
    data = copy_daily(shared_data, tmp_path / "data", ["SPY"])
    agent = tmp_path / "sleeper.py"
    agent.write_bytes(SLEEPER)
    server = start_server(
        tmp_path / "home",
        FARM_DATA_DIR=str(data),
        FARM_BACKTEST_WORKERS="1",
        FARM_STANDARD_SYMBOLS='["SPY"]',
        FARM_STANDARD_START="2024-10-01",
        FARM_STANDARD_END="2024-10-04",
    )
    env = server.env
    api = api_client(server)
    try:
        submitted = farm(env, "agents", "submit", str(agent), "--name", "sleeper", "--json")
        agent_id = json.loads(submitted.stdout)["agentId"]
        started = farm(env, "backtest", agent_id, "--symbols", "SPY", "--json")
        session_id = json.loads(started.stdout)["sessionId"]
        deadline = time.monotonic() + 60
        while api.get(f"/api/backtest/{session_id}/results").json()[
            "status"
        ] != "running" or not sandboxed_descendants(server.process.pid):
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)

        workers = [p for p, (_, cmd) in descendants(server.process.pid).items() if "worker" in cmd]
        assert workers, "the backtest runs in a worker process"

        cancelled = farm(env, "backtest", "cancel", session_id)
        assert cancelled.returncode == 0, cancelled.stderr
        assert f"Cancelled backtest {session_id}" in cancelled.stdout
        deadline = time.monotonic() + 5
        while sandboxed_descendants(server.process.pid):
            assert time.monotonic() < deadline, "the agent still runs after its cancel"
            time.sleep(0.05)
        shown = json.loads(farm(env, "results", session_id, "--json").stdout)
        assert shown["status"] == "cancelled"

        again = farm(env, "backtest", "cancel", session_id)
        assert again.returncode == 1
        assert "cancelled already" in again.stderr
    finally:
        api.close()
        server.stop()
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "workers outlived farm up"
