"""`farm up` killed mid-session with a non-deterministic agent: after the restart the books are
the persisted ones (the agent's re-run decisions never change them), no client order id is used
twice, FMEL has one record per bar, and the agent's own view matches the books."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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

from farm.brokers.simulated import SimulatedBroker
from farm.config import Settings
from farm.core.account import Account
from farm.core.orders import OrderRequest, OrderType
from farm.fmel.layout import session_dir
from farm.marketdata.store import BarStore
from farm.storage.db import Database
from farm.storage.models import (
    PaperAccount,
    PaperEquity,
    PaperOrder,
    PaperPosition,
    PaperSession,
    PaperTrade,
)

SYMBOLS = ["SPY", "AAPL", "MSFT"]

# Rolls dice seeded by the OS on every run: re-run on the same bars it decides differently.
# Its reasoning is its own Backtrader view (positions and cash), to compare with the host's.
DICE = b"""
import json
import random

import backtrader as bt


class Dice(bt.Strategy):
    def __init__(self):
        self.rng = random.Random()

    def next(self):
        for data in self.datas:
            roll = self.rng.random()
            held = self.getposition(data).size
            if roll < 0.25:
                self.buy(data=data, size=self.rng.randint(1, 20))
            elif roll < 0.35:
                price = data.close[0] * self.rng.uniform(0.95, 1.0)
                self.buy(data=data, size=self.rng.randint(1, 5), exectype=bt.Order.Limit,
                         price=price)
            elif roll < 0.5 and held > 0:
                self.sell(data=data, size=self.rng.randint(1, int(held)))

    def get_decision_reasoning(self):
        view = {d._name: self.getposition(d).size for d in self.datas}
        return json.dumps({"cash": self.broker.getcash(), "positions": view})
"""


def books(db: Database, session_id: str) -> dict[str, Any]:
    """The session's persisted books, as rows."""
    with db.transaction() as session:
        row = session.get(PaperSession, session_id)
        assert row is not None
        account = session.get(PaperAccount, row.account_id)
        assert account is not None
        return {
            "bars": row.bars_processed,
            "cash": account.cash,
            "positions": sorted(
                (p.symbol, p.size, p.average_price, p.last_price)
                for p in session.scalars(
                    select(PaperPosition).where(PaperPosition.account_id == row.account_id)
                )
            ),
            "orders": {
                o.client_order_id: (o.symbol, o.size, o.type, o.price, o.status, o.filled)
                for o in session.scalars(
                    select(PaperOrder).where(PaperOrder.session_id == session_id)
                )
            },
            "trades": [
                (t.symbol, t.size, t.entry_price, t.exit_price, t.pnl, t.bars_held)
                for t in session.scalars(
                    select(PaperTrade)
                    .where(PaperTrade.session_id == session_id)
                    .order_by(PaperTrade.n)
                )
            ],
            "equity": [
                (e.bar_time, e.cash, e.equity)
                for e in session.scalars(
                    select(PaperEquity)
                    .where(PaperEquity.session_id == session_id)
                    .order_by(PaperEquity.seq)
                )
            ],
        }


@pytest.mark.sandbox
def test_a_killed_server_restores_the_persisted_books_of_a_random_agent(
    tmp_path: Path, shared_data: Path
) -> None:
    env = replay_env(tmp_path / "data", shared_data, SYMBOLS)
    home = tmp_path / "home"
    server = start_server(home, **env)
    api = api_client(server)
    db = Database(f"sqlite:///{home / 'farm.db'}")
    try:
        agent_id, session_id = start_paper(api, "dice", DICE, SYMBOLS)
        wait_until(api, agent_id, lambda s: s["barsProcessed"] >= 60)
        crash(server)

        before = books(db, session_id)
        folder = session_dir(home / "fmel", agent_id, session_id)
        recorded = {r["seq"] for r in fmel_decisions(folder)}
        assert any(o[4] in ("submitted", "accepted") for o in before["orders"].values()), (
            "the kill must leave open orders to restore"
        )

        server, final = restart_to_feed_end(home, server, env, api, agent_id)
        assert final["status"] == "running"
        assert f"paper session {session_id} resumed" in server.output()
        after = books(db, session_id)
        killed_at = before["bars"]
        assert after["bars"] > killed_at

        # The books before the kill stand: history is unchanged, no order was added for a
        # step decided before it, and no client order id was used twice (it is the key).
        assert after["equity"][:killed_at] == before["equity"]
        assert after["trades"][: len(before["trades"])] == before["trades"]
        for cid, order in after["orders"].items():
            seq = int(cid.rsplit("-", 2)[1])
            if seq < killed_at:
                assert cid in before["orders"], cid
                assert order[:4] == before["orders"][cid][:4]
        assert set(before["orders"]) <= set(after["orders"])

        # And the whole session is exactly what the orders really sent made of the account:
        # the restored books went on from the persisted ones, not from the re-run's decisions.
        first = after["equity"][0][0]
        last = after["equity"][-1][0]
        store = BarStore(home / "bars")
        steps = [
            s for s in store.steps(SYMBOLS, first.date(), last.date()) if first <= s.ts <= last
        ]
        assert len(steps) == after["bars"]
        with db.transaction() as session:
            sent = session.scalars(
                select(PaperOrder).where(PaperOrder.session_id == session_id)
            ).all()
            by_seq: dict[int, list[OrderRequest]] = {}
            for o in sorted(
                sent, key=lambda o: [int(p) for p in o.client_order_id.rsplit("-", 2)[1:]]
            ):
                seq = int(o.client_order_id.rsplit("-", 2)[1])
                assert o.created_price is not None
                by_seq.setdefault(seq, []).append(
                    OrderRequest(
                        o.client_order_id,
                        o.symbol,
                        o.size,
                        OrderType(o.type),
                        o.bar_time,
                        o.created_price,
                        seq,
                        o.price,
                        o.limit_price,
                        o.valid_until,
                    )
                )
        settings = Settings()
        account = Account(100_000.0)
        broker = SimulatedBroker(
            account,
            0.0,
            max_leverage=settings.max_leverage,
            max_open_orders=settings.max_open_orders,
        )
        for seq, step in enumerate(steps):
            broker.process(step)
            for order in by_seq.get(seq, []):
                broker.submit(order)
            account.mark(step)
        assert [(ts, v) for ts, _, v in after["equity"]] == account.equity
        assert [c for _, c, _ in after["equity"]][-1] == account.cash
        assert after["trades"] == [
            (t.symbol, t.size, t.entry_price, t.exit_price, t.pnl, t.bars_held)
            for t in account.trades
        ]
        assert [p[:3] for p in after["positions"]] == sorted(
            (s, p.size, p.price) for s, p in account.positions.items()
        )

        # FMEL: one decision per bar, none twice; every decision made live (not lost with
        # the killed process) shows the agent's own Backtrader view equal to the host's books.
        api.post("/api/paper-trading/stop", json={"agentId": agent_id})
        wait_until(api, agent_id, lambda s: s["status"] == "stopped")
        records = fmel_decisions(folder)
        seqs = sorted(r["seq"] for r in records)
        assert seqs == list(range(len(steps)))
        lost = set(range(max(recorded, default=-1) + 1, killed_at))
        checked = 0
        for record in records:
            if record["seq"] in lost:
                continue
            view = json.loads(record["reasoning"])
            held = {h["symbol"]: h["size"] for h in record["positions"]}
            assert view["cash"] == record["cash"], record["seq"]
            assert {s: v for s, v in view["positions"].items() if v} == held, record["seq"]
            checked += record["seq"] >= killed_at
        assert checked == len(steps) - killed_at
    finally:
        db.dispose()
        api.close()
        server.stop()
