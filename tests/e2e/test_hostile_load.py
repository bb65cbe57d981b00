"""A public reader stays fast while hostile users upload slow files and run an order flood."""

from __future__ import annotations

import shutil
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from server_support import start_server

FLOOD = Path(__file__).parents[1] / "backtest" / "agents" / "order_flood.py"
SLOW_UPLOAD = b"a=1\n" * (1024 * 1024 // 4 - 1)  # just under 1 MiB: seconds to parse


@pytest.mark.sandbox
def test_leaderboard_stays_fast_under_slow_uploads_and_an_order_flood(
    tmp_path: Path, shared_data: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("SPY", "AAPL"):
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", data)
    env = {
        "FARM_DATA_DIR": str(data),
        "FARM_BACKTEST_WORKERS": "1",
        "FARM_STANDARD_SYMBOLS": '["SPY"]',
        "FARM_STANDARD_START": "2024-10-01",
        "FARM_STANDARD_END": "2024-10-31",
        "FARM_RATE_LIMITS": "false",
    }
    server = start_server(tmp_path / "home", **env)
    headers = {"Authorization": f"Bearer {server.env['FARM_TOKEN']}"}
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as api:
            agent_id = api.post(
                "/api/agents/submit",
                data={"agentName": "flood"},
                files={"file": ("flood.py", FLOOD.read_bytes())},
            ).json()["agentId"]
            session_id = api.post(
                f"/api/backtest/{agent_id}/start",
                json={
                    "symbols": ["SPY", "AAPL"],
                    "startDate": "2010-01-01",
                    "endDate": "2024-12-31",
                },
            ).json()["sessionId"]
            deadline = time.monotonic() + 60
            while api.get(f"/api/backtest/{session_id}/results").json()["progress"]["barsDone"] < 5:
                assert time.monotonic() < deadline, "the order flood never started"
                time.sleep(0.1)

        refused: list[int] = []

        def upload(n: int) -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                refused.append(
                    client.post(
                        "/api/agents/submit",
                        data={"agentName": f"slow {n}"},
                        files={"file": (f"slow{n}.py", SLOW_UPLOAD)},
                    ).status_code
                )

        uploads = [threading.Thread(target=upload, args=(n,)) for n in range(3)]
        for thread in uploads:
            thread.start()
        latencies = []
        with httpx.Client(base_url=server.url, timeout=30) as reader:
            while any(t.is_alive() for t in uploads) or len(latencies) < 50:
                started = time.perf_counter()
                assert reader.get("/api/leaderboard").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)
            flood = reader.get(f"/api/backtest/{session_id}/results", headers=headers).json()
        for thread in uploads:
            thread.join()
        assert refused == [400, 400, 400]  # no Strategy class, or too complex to check in time
        assert flood["status"] == "running", flood  # the flood ran the whole time
        p95 = statistics.quantiles(latencies, n=20)[-1]
        assert p95 < 0.05, f"leaderboard p95 {p95 * 1000:.0f} ms under hostile load"
    finally:
        server.stop()
