"""The backtest queue: persisted in the database, claimed fairly, run by a bounded pool of workers.

Claims go round-robin across lanes: each user's custom backtests are a lane, and the standard
evaluations are one more lane (inside it, round-robin by user). The lane whose last start is
oldest goes next, so a user's long queue delays nobody else's backtest by more than the runs
already in progress, and standard evaluations always get their turn. A user never has more than
``max_running_per_user`` custom backtests running. Inside a lane sessions go in (priority,
created_at) order.

Claims are serialized across processes (a transaction-level advisory lock on PostgreSQL, the
write lock on SQLite; a lock in the process saves SQLite's busy waits) and use a conditional
update, so several schedulers can share one database without running a session twice or
overrunning a user's cap.

A claim is a lease: the claiming worker's name, a fresh token and an expiry, which the job's
heartbeat keeps moving while it runs. Every write of the job names the token (:meth:`Lease.holds`),
so a worker that lost its lease writes nothing more. Any live scheduler recovers sessions whose
lease expired (their worker died or hung), at start and every few seconds after
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL): re-queued once, then failed as ``interrupted``.
A lease of a process of the same host and pid namespace that has ended counts as expired at
once (a restarted ``farm up`` resumes its backtests without waiting). Sessions that live
workers hold are never touched, so a new worker disturbs nobody.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from farm.backtest.job import fail_while_running
from farm.backtest.schemas import FailureReason, SessionStatus
from farm.backtest.service import STANDARD
from farm.leases import Lease, has_lapsed, may_have_lapsed, worker_name
from farm.storage.db import Database, sqlite_write_lock
from farm.storage.models import BacktestLane, BacktestSession, utcnow

log = logging.getLogger("farm.backtest.scheduler")

MAX_ATTEMPTS = 2
POLL_SECONDS = 1.0
CLAIM_TRIES = 5
CLAIM_LOCK = 0x6661726D  # the PostgreSQL advisory lock that serializes claims ("farm")
STANDARD_LANE = "standard"
NEVER = datetime.min.replace(tzinfo=UTC)


Job = Callable[[Lease, threading.Event], None]
"""Runs one claimed session; it should return early once the event (stopping) is set."""


class _Head(NamedTuple):
    """The next queued session of one (user, kind)."""

    session_id: str
    user_id: str
    kind: str
    priority: int
    created_at: datetime


class Scheduler:
    """Runs queued backtest sessions with ``job`` on at most ``workers`` threads."""

    def __init__(
        self,
        db: Database,
        job: Job,
        workers: int,
        *,
        max_running_per_user: int,
        lease_s: float = 30.0,
    ) -> None:
        self._db = db
        self._job = job
        self._workers = workers
        self._max_running = max_running_per_user
        self._lease = timedelta(seconds=lease_s)
        self.owner = worker_name()
        self._wake = threading.Condition()
        self._claiming = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the workers and the reaper, which recovers expired leases now and every
        quarter of a lease after.

        With zero workers (an API-only process) it does neither: queued work waits for a
        process that runs workers.
        """
        if self._workers == 0:
            return
        self._stopping.clear()
        reaper = threading.Thread(target=self._reap, name="backtest-reaper", daemon=True)
        reaper.start()
        self._threads.append(reaper)
        for n in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"backtest-worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work and interrupt running sessions (their jobs put them back in the
        queue); a session whose job cannot stop in time is recovered on restart."""
        self._stopping.set()
        self.notify()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def notify(self) -> None:
        """Wake the workers: something was queued."""
        with self._wake:
            self._wake.notify_all()

    def recover(self) -> int:
        """Re-queue once the running sessions whose lease expired (their worker died or hung),
        fail those that expired twice; returns how many. Live leases are never touched.

        A lease of a process of this host that no longer exists (a restarted ``farm up``) counts
        as expired at once, without waiting for its expiry."""
        s = BacktestSession
        with self._db.transaction() as session:  # a read first: most passes find nothing
            if session.scalar(select(s.id).where(may_have_lapsed(s)).limit(1)) is None:
                return 0
        with self._db.transaction() as session:
            sqlite_write_lock(session, s.id)
            rows = session.scalars(
                select(s).where(may_have_lapsed(s)).with_for_update(skip_locked=True)
            ).all()
            now = utcnow()
            stuck = [r for r in rows if has_lapsed(r.lease_expires_at, r.lease_owner, now)]
            for row in stuck:
                owner = row.lease_owner
                row.lease_owner = row.lease_token = row.lease_expires_at = None
                if row.attempts < MAX_ATTEMPTS:
                    log.warning("re-queueing backtest %s: the lease of %s expired", row.id, owner)
                    row.status = SessionStatus.QUEUED
                    row.bars_done = 0
                else:
                    log.warning("backtest %s was interrupted twice; failing it", row.id)
                    row.status = SessionStatus.FAILED
                    row.failure_reason = FailureReason.INTERRUPTED
                    row.failure_message = (
                        "the server stopped while this backtest ran, twice; start it again"
                    )
                    row.finished_at = utcnow()
            return len(stuck)

    def claim(self) -> Lease | None:
        """Atomically take the next session in fair order (or None): it becomes ``running``
        under a new lease of this scheduler's."""
        with self._claiming, self._db.transaction() as session:
            _lock_claims(session)
            for _ in range(CLAIM_TRIES):  # a session cancelled meanwhile is skipped
                chosen = self._next(session)
                if chosen is None:
                    return None
                head, lanes = chosen
                now = utcnow()
                lease = Lease(BacktestSession, head.session_id, self.owner, str(uuid.uuid4()))
                taken = session.execute(
                    update(BacktestSession)
                    .where(
                        BacktestSession.id == head.session_id,
                        BacktestSession.status == SessionStatus.QUEUED,
                    )
                    .values(
                        status=SessionStatus.RUNNING,
                        started_at=now,
                        attempts=BacktestSession.attempts + 1,
                        lease_owner=lease.owner,
                        lease_token=lease.token,
                        lease_expires_at=now + self._lease,
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    _touch(session, lanes, now)
                    return lease
        return None

    def _next(self, session: Session) -> tuple[_Head, list[str]] | None:
        """The session to start next and the lanes it advances, or None."""
        heads = _heads(session)
        running: dict[str, int] = dict(
            session.execute(
                select(BacktestSession.user_id, func.count())
                .where(
                    BacktestSession.status == SessionStatus.RUNNING,
                    BacktestSession.kind != STANDARD,
                )
                .group_by(BacktestSession.user_id)
            ).all()
        )
        keys = {_lane(h) for h in heads} | {STANDARD_LANE}
        last: dict[str, datetime] = dict(
            session.execute(
                select(BacktestLane.lane, BacktestLane.last_started_at).where(
                    BacktestLane.lane.in_(keys)
                )
            ).all()
        )

        def order(lane: str, head: _Head) -> tuple[datetime, int, datetime]:
            return last.get(lane, NEVER), head.priority, head.created_at

        candidates = [
            (_lane(h), h)
            for h in heads
            if h.kind != STANDARD and running.get(h.user_id, 0) < self._max_running
        ]
        standard = [h for h in heads if h.kind == STANDARD]
        if standard:
            candidates.append((STANDARD_LANE, min(standard, key=lambda h: order(_lane(h), h))))
        if not candidates:
            return None
        lane, head = min(candidates, key=lambda c: order(*c))
        return head, [lane, _lane(head)] if lane == STANDARD_LANE else [lane]

    def _reap(self) -> None:
        interval = self._lease.total_seconds() / 4
        while not self._stopping.is_set():
            try:
                if self.recover():
                    self.notify()
            except Exception:
                log.exception("recovering expired backtest leases failed; trying again")
            self._stopping.wait(interval)

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                lease = self.claim()
            except Exception:
                log.exception("claiming a backtest failed; trying again")
                lease = None
            if lease is None:
                with self._wake:
                    self._wake.wait(POLL_SECONDS)
                continue
            try:
                self._job(lease, self._stopping)
            except Exception as exc:
                log.exception("backtest job %s crashed", lease.session_id)
                fail_while_running(self._db, lease, FailureReason.KILLED, f"internal error: {exc}")


def _lock_claims(session: Session) -> None:
    """Hold the claim lock until the transaction ends, across processes: an advisory lock on
    PostgreSQL; on SQLite the write lock, which a write statement takes even if it changes
    nothing (the reads that follow then see every committed claim)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
    else:
        sqlite_write_lock(session, BacktestLane.lane)


def _lane(head: _Head) -> str:
    """A user's lane of one kind (``custom:<user>``, ``standard:<user>``)."""
    return f"{head.kind}:{head.user_id}"


def _heads(session: Session) -> list[_Head]:
    """The first queued session of every (user, kind)."""
    s = BacktestSession
    position = (
        func.row_number()
        .over(partition_by=(s.user_id, s.kind), order_by=(s.priority, s.created_at, s.id))
        .label("position")
    )
    queued = (
        select(s.id, s.user_id, s.kind, s.priority, s.created_at, position)
        .where(s.status == SessionStatus.QUEUED)
        .subquery()
    )
    rows = session.execute(
        select(
            queued.c.id, queued.c.user_id, queued.c.kind, queued.c.priority, queued.c.created_at
        ).where(queued.c.position == 1)
    ).all()
    return [_Head(r.id, r.user_id, r.kind, r.priority, r.created_at) for r in rows]


def _touch(session: Session, lanes: Sequence[str], now: datetime) -> None:
    """Record that ``lanes`` started a session at ``now``."""
    insert: Any = (
        postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    )
    for lane in lanes:
        statement = insert(BacktestLane).values(lane=lane, last_started_at=now)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["lane"],
                set_={"last_started_at": statement.excluded.last_started_at},
            )
        )
