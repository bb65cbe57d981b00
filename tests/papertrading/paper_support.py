"""Paper runtime test helpers: a buying agent stored as the agents service would, and a
runtime on a thread of the test over real bars."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

from farm.config import Settings
from farm.marketdata.store import BarStore, open_bar_store
from farm.papertrading.runtime import PaperRuntime
from farm.papertrading.sessions import PaperService
from farm.storage.artifacts import open_artifact_store
from farm.storage.db import Database
from farm.storage.models import Agent, PaperSession, User
from farm.users.service import create_user

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


@dataclass
class Rig:
    """A migrated database over real bars, the paper service, a paper runtime (not running
    yet) and alice with BUYER agents."""

    db: Database
    bars: BarStore
    service: PaperService
    runtime: PaperRuntime
    user: User
    agents: list[str]

    def row(self, session_id: str) -> PaperSession:
        """The session's row as the runtime last wrote it."""
        with self.db.transaction() as session:
            found = session.get(PaperSession, session_id)
            assert found is not None
            return found

    @contextmanager
    def running(self) -> Iterator[PaperRuntime]:
        """The runtime running on a thread, stopped (its sessions handed back) on exit."""
        thread = threading.Thread(target=self.runtime.run, daemon=True)
        thread.start()
        try:
            yield self.runtime
        finally:
            self.runtime.stop()
            thread.join(60)


@contextmanager
def paper_rig(settings: Settings, real_bars: Path, agents: int = 2) -> Iterator[Rig]:
    """A :class:`Rig` on ``settings`` (its database disposed of on exit)."""
    shutil.copytree(real_bars, settings.bars_dir)
    db = Database(settings.resolved_database_url)
    db.migrate()
    artifacts = open_artifact_store(settings)
    artifacts.put(BUYER_KEY, BUYER)
    bars = open_bar_store(settings)
    with db.transaction() as session:
        user, _ = create_user(session, "alice")
        ids = [paper_agent(session, user.id, n) for n in range(agents)]
    try:
        runtime = PaperRuntime(db, bars, artifacts, settings)
        yield Rig(db, bars, PaperService(db, bars, settings), runtime, user, ids)
    finally:
        db.dispose()
