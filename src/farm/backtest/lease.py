"""A worker's lease on a running backtest: who holds it, the token that fences every write of
its job, and the heartbeat that keeps it (docs/architecture.md, "Scale-out")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.orm import Session

from farm.backtest.schemas import SessionStatus
from farm.storage.db import Database
from farm.storage.models import BacktestSession, utcnow


@dataclass(frozen=True)
class Lease:
    """A worker's claim on one running session; ``token`` is new at every claim."""

    session_id: str
    owner: str
    token: str

    def holds(self) -> ColumnElement[bool]:
        """The condition every write of the job carries: the session still runs under this
        lease (not cancelled, not recovered and claimed by another worker)."""
        s = BacktestSession
        return and_(
            s.id == self.session_id, s.status == SessionStatus.RUNNING, s.lease_token == self.token
        )

    def renew(self, session: Session, seconds: float) -> bool:
        """The heartbeat: move the expiry ``seconds`` from now; False once the lease is lost."""
        expires = utcnow() + timedelta(seconds=seconds)
        moved = session.execute(
            update(BacktestSession).where(self.holds()).values(lease_expires_at=expires)
        )
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(db: Database, seconds: float, lease: Lease) -> bool:
    """:meth:`Lease.renew` in a transaction of its own."""
    with db.transaction() as session:
        return lease.renew(session, seconds)
