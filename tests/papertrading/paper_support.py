"""Paper runtime test helpers: a buying agent stored as the agents service would."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from farm.storage.models import Agent

# Buys one share on every bar: each step writes an order, a position and an equity point.
BUYER = b"""
import backtrader as bt


class Buyer(bt.Strategy):
    def next(self):
        self.buy(data=self.datas[0], size=1)
"""
BUYER_KEY = "agents/buyer.py"  # put BUYER there in the artifact store


def paper_agent(session: Session, user_id: str, n: int) -> str:
    """A new agent of ``user_id`` running BUYER (``n`` makes its name and hash unique)."""
    agent = Agent(
        id=str(uuid.uuid4()),
        user_id=user_id,
        name=f"buyer {n}",
        strategy_class="Buyer",
        code_sha256=f"{n:064d}",
        code_bytes=len(BUYER),
        artifact_key=BUYER_KEY,
        status="active",
    )
    session.add(agent)
    return agent.id
