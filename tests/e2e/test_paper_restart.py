"""`farm up` and its paper runtime killed mid-session: after a restart the session resumes by
itself, no order is placed twice, FMEL has one record per bar, and the account ends as an
uninterrupted run's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from server_support import (
    api_client,
    crash,
    fmel_decisions,
    replay_env,
    restart_to_feed_end,
    start_paper,
    start_server,
    wait_until,
)
from sqlalchemy import select

from farm.backtest.runner import BacktestConfig, run_backtest
from farm.fmel.layout import session_dir
from farm.marketdata.store import BarStore
from farm.storage.db import Database
from farm.storage.models import PaperOrder
from support import cents

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
SYMBOLS = ["SPY", "AAPL", "MSFT"]


@pytest.mark.sandbox
def test_a_killed_server_resumes_its_paper_session_invisibly(
    tmp_path: Path, shared_data: Path
) -> None:
    env = replay_env(tmp_path / "data", shared_data, SYMBOLS)
    home = tmp_path / "home"
    server = start_server(home, **env)
    api = api_client(server)
    try:
        code = (EXAMPLES / "sma_cross.py").read_bytes()
        agent_id, session_id = start_paper(api, "sma", code, SYMBOLS)
        before = wait_until(api, agent_id, lambda s: s["barsProcessed"] >= 45)
        crash(server)

        server, final = restart_to_feed_end(home, server, env, api, agent_id)
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
        assert final["equity"] == cents(outcome.value)
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
        seqs = sorted(record["seq"] for record in fmel_decisions(folder))
        assert len(seqs) == len(set(seqs))
        assert seqs == list(range(seqs[0], len(steps)))
    finally:
        api.close()
        server.stop()
