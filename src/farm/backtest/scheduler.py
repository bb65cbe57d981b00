"""The backtest queue: persisted in the database, run by a bounded pool of worker threads.

Sessions are claimed in (priority, created_at) order with a conditional update, so several
schedulers (processes) can share one database without running a session twice. After a crash
or restart, sessions left ``running`` are re-queued once, then failed as ``interrupted``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import select, update

from farm.storage.db import Database
from farm.storage.models import BacktestSession, utcnow

log = logging.getLogger("farm.backtest.scheduler")

MAX_ATTEMPTS = 2
POLL_SECONDS = 1.0

Job = Callable[[str, threading.Event], None]
"""Runs one claimed session; it should return early once the event (stopping) is set."""


class Scheduler:
    """Runs queued backtest sessions with ``job`` on at most ``workers`` threads."""

    def __init__(self, db: Database, job: Job, workers: int) -> None:
        self._db = db
        self._job = job
        self._workers = workers
        self._wake = threading.Condition()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Recover sessions a previous process left running, then start the workers.

        With zero workers (an API-only process) it does neither: queued work waits for a
        process that runs workers.
        """
        if self._workers == 0:
            return
        self.recover()
        self._stopping.clear()
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

    def recover(self) -> None:
        """Re-queue sessions interrupted mid-run once; fail those interrupted twice."""
        with self._db.transaction() as session:
            stuck = session.scalars(
                select(BacktestSession).where(BacktestSession.status == "running")
            ).all()
            for row in stuck:
                if row.attempts < MAX_ATTEMPTS:
                    log.warning("re-queueing backtest %s interrupted by a restart", row.id)
                    row.status = "queued"
                    row.bars_done = 0
                else:
                    log.warning("backtest %s was interrupted twice; failing it", row.id)
                    row.status = "failed"
                    row.failure_reason = "interrupted"
                    row.failure_message = (
                        "the server stopped while this backtest ran, twice; start it again"
                    )
                    row.finished_at = utcnow()

    def claim(self) -> str | None:
        """Atomically take the next queued session (or None): it becomes ``running``."""
        with self._db.transaction() as session:
            candidates = session.scalars(
                select(BacktestSession.id)
                .where(BacktestSession.status == "queued")
                .order_by(BacktestSession.priority, BacktestSession.created_at)
                .limit(self._workers + 1)
            ).all()
            for candidate in candidates:
                taken = session.execute(
                    update(BacktestSession)
                    .where(BacktestSession.id == candidate, BacktestSession.status == "queued")
                    .values(
                        status="running",
                        started_at=utcnow(),
                        attempts=BacktestSession.attempts + 1,
                    )
                )
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return candidate
        return None

    def _work(self) -> None:
        while not self._stopping.is_set():
            session_id = self.claim()
            if session_id is None:
                with self._wake:
                    self._wake.wait(POLL_SECONDS)
                continue
            try:
                self._job(session_id, self._stopping)
            except Exception:
                log.exception("backtest job %s crashed", session_id)
