"""Retention: delete FMEL sessions and backtest series older than the configured number of days.

Unset (the default) keeps everything. FMEL sessions go when nothing was written to their folder
for ``FARM_FMEL_RETENTION_DAYS`` (a running session writes at least every few seconds); backtest
series (equity, fills, trades) go ``FARM_RESULTS_RETENTION_DAYS`` after the backtest finished,
while its row and metrics stay. A sweep runs at start and every ``FARM_RETENTION_SWEEP_MINUTES``.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from farm.config import Settings
from farm.fmel.store import open_fmel_root
from farm.storage.artifacts import ArtifactStore
from farm.storage.db import Database
from farm.storage.models import BacktestSession
from farm.storage.objects import LocalRoot, Root

log = logging.getLogger("farm.retention")


@dataclass(frozen=True, slots=True)
class Swept:
    """What one sweep deleted."""

    fmel_sessions: int
    results: int


def sweep(
    settings: Settings, db: Database, artifacts: ArtifactStore, now: datetime | None = None
) -> Swept:
    """Delete what is past its retention as of ``now`` (default: the current time)."""
    now = now or datetime.now(UTC)
    fmel = results = 0
    if settings.fmel_retention_days is not None:
        cutoff = now - timedelta(days=settings.fmel_retention_days)
        fmel = _sweep_fmel(open_fmel_root(settings), cutoff)
    if settings.results_retention_days is not None:
        cutoff = now - timedelta(days=settings.results_retention_days)
        results = _sweep_results(db, artifacts, cutoff)
    return Swept(fmel, results)


def _sweep_fmel(root: Root, cutoff: datetime) -> int:
    """Delete the session folders last written before ``cutoff`` (and agent folders left empty)."""
    deleted = 0
    for agent in root.names(root.url):
        if not agent.startswith("agent="):
            continue
        agent_folder = root.join(agent)
        for name in root.names(agent_folder):
            folder = f"{agent_folder}/{name}"
            if name.startswith("session=") and root.last_write(folder) < cutoff.timestamp():
                root.delete(folder)
                deleted += 1
        if isinstance(root, LocalRoot):
            with suppress(OSError):  # not empty
                os.rmdir(agent_folder)
    return deleted


def _sweep_results(db: Database, artifacts: ArtifactStore, cutoff: datetime) -> int:
    """Delete the series of backtests finished before ``cutoff``; their rows keep the metrics."""
    with db.transaction() as session:
        rows = session.execute(
            select(BacktestSession.id, BacktestSession.results_key).where(
                BacktestSession.results_key.is_not(None), BacktestSession.finished_at < cutoff
            )
        ).all()
    for session_id, key in rows:
        with db.transaction() as session:
            session.execute(
                update(BacktestSession)
                .where(BacktestSession.id == session_id)
                .values(results_key=None)
            )
        artifacts.delete(str(key))  # not null: filtered above
    return len(rows)


class RetentionSweeper:
    """Runs :func:`sweep` at start and then periodically in a background thread."""

    def __init__(self, settings: Settings, db: Database, artifacts: ArtifactStore) -> None:
        self._settings = settings
        self._db = db
        self._artifacts = artifacts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start sweeping, if any retention is configured."""
        settings = self._settings
        if settings.fmel_retention_days is None and settings.results_retention_days is None:
            return
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping (waits for a sweep in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        interval = self._settings.retention_sweep_minutes * 60
        while not self._stop.is_set():
            try:
                swept = sweep(self._settings, self._db, self._artifacts)
                if swept.fmel_sessions or swept.results:
                    log.info(
                        "retention deleted %d FMEL sessions and the series of %d backtests",
                        swept.fmel_sessions,
                        swept.results,
                    )
            except Exception:
                log.exception("retention sweep failed; retrying at the next one")
            self._stop.wait(interval)
