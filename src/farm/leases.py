"""Leases on running work (backtests, paper sessions): who holds a row, the token that fences
every write of its job, and the heartbeat that keeps it (docs/architecture.md, "Scale-out").

A claim gives the row a new token, the claiming process's name and an expiry, which the
holder's heartbeat keeps moving. Every write of the job names the token (:meth:`Lease.holds`,
:func:`held`), so a process that lost its lease writes nothing more. A lease has lapsed once it
expired, or at once when its owner was a process of this host (and pid namespace) that ended;
only lapsed leases are recovered, so a new worker disturbs nobody.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session

from farm.storage.db import Database, sqlite_write_lock
from farm.storage.models import LeasedRow, utcnow


def _this_host() -> str:
    """The host name and the pid namespace: processes that can see each other's pids."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname()}:{namespace}"


HOST = _this_host()


def worker_name() -> str:
    """A name for this process's leases: host (and pid namespace), pid, a random suffix."""
    return f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def gone(owner: str | None) -> bool:
    """Whether ``owner`` (a :func:`worker_name`) was a process of this host (and pid
    namespace) that has ended."""
    if owner is None:
        return True
    host, _, rest = owner.rpartition("-")[0].rpartition("-")
    if host != HOST or not rest.isdigit():
        return False
    try:
        os.kill(int(rest), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists (another user's)
    return False


def may_have_lapsed(model: type[LeasedRow]) -> ColumnElement[bool]:
    """The rows of ``model`` whose lease may have lapsed: leased (by status) and expired, or
    held by a process of this host (:func:`has_lapsed` tells)."""
    expired = or_(model.lease_expires_at.is_(None), model.lease_expires_at < utcnow())
    local = model.lease_owner.startswith(f"{HOST}-", autoescape=True)
    return and_(model.status.in_(model.LEASED), or_(expired, local))


def has_lapsed(expires: datetime | None, owner: str | None, now: datetime) -> bool:
    """Whether a lease that expires at ``expires``, held by ``owner``, has lapsed at ``now``."""
    return expires is None or expires < now or gone(owner)


@dataclass(frozen=True)
class Lease:
    """A process's claim on one row of ``model``; ``token`` is new at every claim."""

    model: type[LeasedRow]
    session_id: str
    owner: str
    token: str

    def holds(self) -> ColumnElement[bool]:
        """The condition every write of the job carries: the row is still leased (not
        cancelled, stopped or finished) under this lease (not recovered and claimed by
        another process)."""
        m = self.model
        return and_(m.id == self.session_id, m.status.in_(m.LEASED), m.lease_token == self.token)

    def renew(self, session: Session, seconds: float) -> bool:
        """The heartbeat: move the expiry ``seconds`` from now; False once the lease is lost."""
        expires = utcnow() + timedelta(seconds=seconds)
        moved = session.execute(
            update(self.model).where(self.holds()).values(lease_expires_at=expires)
        )
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


def renew_lease(db: Database, seconds: float, lease: Lease) -> bool:
    """:meth:`Lease.renew` in a transaction of its own."""
    with db.transaction() as session:
        return lease.renew(session, seconds)


def held(session: Session, leases: Iterable[Lease]) -> set[str]:
    """Lock the leased rows until the transaction ends (the write lock on SQLite) and return
    the ids of those still held under ``leases``: the fence of a transaction that writes for
    several jobs at once (a claim of another process waits for it, or skips the rows)."""
    by_token = {lease.token: lease for lease in leases}
    if not by_token:
        return set()
    model = next(iter(by_token.values())).model
    sqlite_write_lock(session, model.id)
    rows = session.execute(
        select(model.id, model.lease_token)
        .where(
            model.id.in_([lease.session_id for lease in by_token.values()]),
            model.status.in_(model.LEASED),
        )
        .with_for_update()
    ).all()
    return {
        row.id
        for row in rows
        if row.lease_token in by_token and by_token[row.lease_token].session_id == row.id
    }


def claim(
    db: Database, model: type[LeasedRow], owner: str, seconds: float, limit: int
) -> list[Lease]:
    """Take up to ``limit`` rows of ``model`` whose lease lapsed (oldest first) under new
    leases of ``owner`` for ``seconds``; rows another process is claiming are skipped
    (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the write lock on SQLite)."""
    mine = model.lease_owner == owner  # its own leases are live: never read them here
    with db.transaction() as session:  # a read first: most passes find nothing
        rows = session.execute(
            select(model.id, model.lease_expires_at, model.lease_owner)
            .where(may_have_lapsed(model), or_(model.lease_owner.is_(None), ~mine))
            .order_by(model.created_at)
        ).all()
    now = utcnow()
    ids = [r.id for r in rows if has_lapsed(r.lease_expires_at, r.lease_owner, now)][:limit]
    if not ids:
        return []
    with db.transaction() as session:
        sqlite_write_lock(session, model.id)
        locked = session.scalars(
            select(model)
            .where(model.id.in_(ids), may_have_lapsed(model))
            .order_by(model.created_at)
            .with_for_update(skip_locked=True)
        ).all()
        now = utcnow()
        leases = []
        for row in locked:
            if has_lapsed(row.lease_expires_at, row.lease_owner, now):
                lease = Lease(model, row.id, owner, str(uuid.uuid4()))
                row.lease_owner, row.lease_token = owner, lease.token
                row.lease_expires_at = now + timedelta(seconds=seconds)
                leases.append(lease)
        return leases
