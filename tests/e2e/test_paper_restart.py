"""`farm up` and its paper runtime killed mid-session: after a restart the session resumes by
itself, no order is placed twice, FMEL has one record per bar, and the account ends as an
uninterrupted run's."""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from server_support import Server, start_server
from sqlalchemy import select

from farm.backtest.runner import BacktestConfig, run_backtest
from farm.fmel.layout import part_names, session_dir
from farm.marketdata.store import BarStore
from farm.storage.db import Database
from farm.storage.models import PaperOrder
from support import descendants

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
SYMBOLS = ["SPY", "AAPL", "MSFT"]


def crash(server: Server) -> None:
    """SIGKILL the paper runtime and `farm up` together: nothing is cleaned up."""
    runtime = [
        pid
        for pid, (_, command) in descendants(server.process.pid).items()
        if "farm.papertrading.runtime" in command
    ]
    assert runtime, "no paper runtime process under farm up"
    for pid in runtime:
        os.kill(pid, signal.SIGKILL)
    server.stop(signal.SIGKILL)


def wait_until(api: httpx.Client, agent_id: str, done: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not done(status := api.get(f"/api/paper-trading/status/{agent_id}").json()):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


@pytest.mark.sandbox
def test_a_killed_server_resumes_its_paper_session_invisibly(
    tmp_path: Path, shared_data: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in SYMBOLS:
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", data)
    env = {
        "FARM_DATA_DIR": str(data),
        "FARM_BACKTEST_WORKERS": "0",
        "FARM_FEED": "replay",
        "FARM_FEED_REPLAY_START": "2024-10-01",
        "FARM_FEED_INTERVAL_S": "0.12",
        "FARM_PAPER_POLL_S": "0.05",
        "FARM_PAPER_STEP_TIMEOUT_S": "20",
    }
    home = tmp_path / "home"
    server = start_server(home, **env)
    headers = {"Authorization": f"Bearer {server.env['FARM_TOKEN']}"}
    api = httpx.Client(base_url=server.url, headers=headers, timeout=30)
    try:
        code = (EXAMPLES / "sma_cross.py").read_bytes()
        agent_id = api.post(
            "/api/agents/submit", data={"agentName": "sma"}, files={"file": ("a.py", code)}
        ).json()["agentId"]
        started = api.post(
            "/api/paper-trading/start", json={"agentId": agent_id, "symbols": SYMBOLS}
        )
        assert started.status_code == 202, started.text
        session_id = started.json()["sessionId"]
        before = wait_until(api, agent_id, lambda s: s["barsProcessed"] >= 45)
        crash(server)

        server = start_server(home, FARM_PORT=server.env["FARM_PORT"], **env)
        deadline = time.monotonic() + 120
        while api.get("/api/feed").json()["state"] != "ended":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        feed = api.get("/api/feed").json()
        final = wait_until(
            api, agent_id, lambda s: s["lastBarTime"] == feed["lastBarTime"], timeout=60
        )
        assert final["status"] == "running"
        assert final["sessionId"] == session_id
        assert final["barsProcessed"] > before["barsProcessed"]
        assert f"paper session {session_id} resumed" in server.output()

        # The account and its history equal an uninterrupted run over the same bars.
        first = datetime.fromisoformat(final["firstBarTime"])
        last = datetime.fromisoformat(final["lastBarTime"])
        store = BarStore(home / "bars")
        steps = [
            s for s in store.steps(SYMBOLS, first.date(), last.date()) if first <= s.ts <= last
        ]
        assert len(steps) == final["barsProcessed"]
        outcome = run_backtest(
            steps,
            EXAMPLES / "sma_cross.py",
            BacktestConfig(symbols=tuple(SYMBOLS), commission=0.0),
        )
        assert outcome.fills, "the comparison needs some trading"
        equity = api.get(f"/api/paper-trading/{session_id}/equity").json()["equity"]
        assert [p["equity"] for p in equity] == [v for _, v in outcome.equity]
        assert final["equity"] == round(outcome.value, 2)
        trades = api.get(f"/api/paper-trading/{session_id}/trades").json()["trades"]
        assert [(t["symbol"], t["pnl"]) for t in trades] == [
            (t.symbol, t.pnl) for t in outcome.trades
        ]

        # Every order the uninterrupted run filled was placed once, under its (session, step, n) id.
        db = Database(f"sqlite:///{home / 'farm.db'}")
        try:
            with db.transaction() as session:
                placed = session.scalars(
                    select(PaperOrder.client_order_id).where(PaperOrder.session_id == session_id)
                ).all()
                filled = session.scalars(
                    select(PaperOrder.filled).where(PaperOrder.session_id == session_id)
                ).all()
        finally:
            db.dispose()
        assert len(placed) == len(set(placed))
        assert sum(1 for f in filled if f) == len({f.client_order_id for f in outcome.fills})
        seqs_placed = sorted(int(c.removeprefix(f"{session_id}-").split("-")[0]) for c in placed)
        assert seqs_placed == sorted(f.decision_seq for f in outcome.fills)

        # FMEL: one decision per bar the strategy's next() ran on, none twice.
        api.post("/api/paper-trading/stop", json={"agentId": agent_id})
        wait_until(api, agent_id, lambda s: s["status"] == "stopped")
        folder = session_dir(home / "fmel", agent_id, session_id)
        seqs = sorted(
            seq
            for name in part_names(os.listdir(folder), "decisions")
            for seq in pq.read_table(folder / name, columns=["seq"]).column("seq").to_pylist()
        )
        assert len(seqs) == len(set(seqs))
        assert seqs == list(range(seqs[0], len(steps)))
    finally:
        api.close()
        server.stop()
