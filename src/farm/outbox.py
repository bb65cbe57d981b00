"""The transactional outbox: an event is a row written in the transaction of the change it
announces, and a relay publishes it on the bus after the commit.

A process that dies between its commit and the publication loses nothing: the row stays, and
the next relay (any process's poller, or this one's on its next start) publishes it. The relay
leases the rows it publishes (``claimed_until``), so several processes relay side by side and a
relay that dies mid-publish only delays its rows; delivery is at least once, in row order.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from farm.events import EVENT_ID, EventBus
from farm.storage.db import WROTE_EVENTS, Database, sqlite_write_lock
from farm.storage.models import OutboxEvent, utcnow

log = logging.getLogger("farm.outbox")

BATCH = 100


def emit(session: Session, topic: str, event: Mapping[str, Any]) -> None:
    """Write ``event`` on ``topic`` in ``session``'s transaction: it is published if, and only
    once, the transaction commits (under its ``eventId``)."""
    session.add(OutboxEvent(event_id=str(uuid.uuid4()), topic=topic, payload=dict(event)))
    session.info[WROTE_EVENTS] = True


class OutboxRelay:
    """Publishes committed outbox rows on ``bus`` and deletes them.

    :meth:`relay` runs right after every commit that wrote events (hooked on the database), and
    a poller thread runs it every ``poll_s`` seconds for rows other processes left behind.
    """

    def __init__(
        self, db: Database, bus: EventBus, *, poll_s: float = 1.0, lease_s: float = 30.0
    ) -> None:
        self._db = db
        self._bus = bus
        self._poll_s = poll_s
        self._lease = timedelta(seconds=lease_s)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def hook(self) -> None:
        """Relay right after each commit that wrote events (in the committing thread)."""
        self._db.on_events(self.flush)

    def start(self) -> None:
        """Start the poller (its first pass relays what a dead process left)."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the poller; unrelayed rows wait for the next relay."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def relay(self) -> int:
        """Publish every claimable row in order; returns how many were published. A failed
        publication ends the pass and frees the rows left (the next pass retries them)."""
        relayed = 0
        while batch := self._claim():
            for n, row in enumerate(batch):
                try:
                    self._bus.publish(row.topic, {**row.payload, EVENT_ID: row.event_id})
                except Exception:
                    log.exception("publishing outbox event %s failed; will retry", row.event_id)
                    self._release(batch[n:])
                    return relayed
                with self._db.transaction() as session:
                    session.execute(
                        delete(OutboxEvent).where(
                            OutboxEvent.id == row.id, OutboxEvent.claimed_by == row.claimed_by
                        )
                    )
                relayed += 1
        return relayed

    def _claim(self) -> list[OutboxEvent]:
        """Lease the next rows nobody holds (in id order) to this pass."""
        token, now = str(uuid.uuid4()), utcnow()
        free = or_(OutboxEvent.claimed_until.is_(None), OutboxEvent.claimed_until < now)
        with self._db.transaction() as session:  # a read first: most polls find nothing
            if session.scalar(select(OutboxEvent.id).where(free).limit(1)) is None:
                return []
        with self._db.transaction() as session:
            sqlite_write_lock(session, OutboxEvent.id)
            ids = list(
                session.scalars(
                    select(OutboxEvent.id)
                    .where(free)
                    .order_by(OutboxEvent.id)
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return []
            session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_(ids), free)
                .values(claimed_by=token, claimed_until=now + self._lease)
            )
            return list(
                session.scalars(
                    select(OutboxEvent)
                    .where(OutboxEvent.claimed_by == token)
                    .order_by(OutboxEvent.id)
                )
            )

    def _release(self, rows: list[OutboxEvent]) -> None:
        with self._db.transaction() as session:
            session.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.id.in_([r.id for r in rows]),
                    OutboxEvent.claimed_by == rows[0].claimed_by,
                )
                .values(claimed_by=None, claimed_until=None)
            )

    def flush(self) -> None:
        """Relay, never raising: the change is committed; the poller retries what fails."""
        try:
            self.relay()
        except Exception:
            log.exception("relaying outbox events failed; the poller will retry")

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self.flush()
            self._stopping.wait(self._poll_s)
