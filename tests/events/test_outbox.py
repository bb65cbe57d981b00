"""The transactional outbox: events leave only with their commit, survive a process killed
between commit and publish, and are relayed once by relays running side by side."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import func, select

from farm.events import EVENT_ID, Event, InProcessBus
from farm.outbox import OutboxRelay, emit
from farm.storage.db import Database
from farm.storage.models import OutboxEvent, User
from farm.streams import RedisStreamsBus
from support import wait_until


def outbox_rows(db: Database) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxEvent)) or 0


class Counting:
    """A bus that counts what it is given (and can fail the first ``failures`` publications)."""

    def __init__(self, failures: int = 0) -> None:
        self.published: list[tuple[str, Event]] = []
        self._failures = failures
        self._lock = threading.Lock()

    def publish(self, topic: str, event: Event) -> None:
        with self._lock:
            if self._failures:
                self._failures -= 1
                raise ConnectionError("the bus is down")
            self.published.append((topic, event))

    def subscribe(self, topic: str, handler: object, *, group: str | None = None) -> None:
        raise AssertionError("not used")

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def healthy(self) -> bool:
        return True


def test_an_event_is_published_after_its_commit_and_never_without_it(db: Database) -> None:
    bus = InProcessBus()
    seen: list[Event] = []
    bus.subscribe("user.created", seen.append)
    OutboxRelay(db, bus).hook()

    def failing_change() -> None:
        with db.transaction() as session:
            session.add(User(id="u1", name="rolled back"))
            emit(session, "user.created", {"userId": "u1"})
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        failing_change()
    assert seen == []
    assert outbox_rows(db) == 0
    with db.transaction() as session:
        session.add(User(id="u2", name="kept"))
        emit(session, "user.created", {"userId": "u2"})
    assert [e["userId"] for e in seen] == ["u2"]
    assert seen[0][EVENT_ID]
    assert outbox_rows(db) == 0, "a relayed event leaves the outbox"


def test_a_failed_publication_is_retried_by_the_next_pass_in_order(db: Database) -> None:
    bus = Counting(failures=1)
    with db.transaction() as session:
        for n in range(3):
            emit(session, "t", {"n": n})
    relay = OutboxRelay(db, bus)
    assert relay.relay() == 0
    assert outbox_rows(db) == 3, "nothing is lost when the bus is down"
    assert relay.relay() == 3
    assert [e["n"] for _, e in bus.published] == [0, 1, 2]


def test_relays_side_by_side_publish_every_event_once(db: Database) -> None:
    with db.transaction() as session:
        for n in range(60):
            emit(session, "t", {"n": n})
    bus = Counting()
    relays = [OutboxRelay(db, bus) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        relayed = sum(pool.map(lambda relay: relay.relay(), relays))
    assert relayed == 60
    assert Counter(e["n"] for _, e in bus.published) == Counter(range(60))
    assert outbox_rows(db) == 0


KILLED_AFTER_COMMIT = """
import os, signal, sys
from farm.outbox import emit
from farm.storage.db import Database
from farm.storage.models import User

db = Database(sys.argv[1])
db.on_events(lambda: os.kill(os.getpid(), signal.SIGKILL))  # dies before any relay runs
with db.transaction() as session:
    session.add(User(id="u1", name="alice"))
    emit(session, "agent.submitted", {"agentId": "a1", "userId": "u1"})
"""


def test_a_process_killed_between_commit_and_publish_loses_no_event(
    db: Database, redis_url: str, prefix: str
) -> None:
    child = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_COMMIT, db.url], check=False, timeout=60
    )
    assert child.returncode == -signal.SIGKILL
    with db.transaction() as session:
        assert session.get(User, "u1") is not None, "the change was committed"
    assert outbox_rows(db) == 1, "and its event waits in the outbox"

    handled: list[Event] = []
    bus = RedisStreamsBus(redis_url, prefix=prefix)
    bus.subscribe("agent.submitted", handled.append, group="backtests")
    bus.start()
    relay = OutboxRelay(db, bus, poll_s=0.05)
    relay.start()  # the next process to start relays what the dead one left
    try:
        client = redis.Redis.from_url(redis_url)
        stream = bus.stream("agent.submitted")
        wait_until(lambda: bool(handled))
        wait_until(lambda: client.xpending(stream, "backtests")["pending"] == 0)
    finally:
        relay.stop()
        bus.close()
    assert [(e["agentId"], e["userId"]) for e in handled] == [("a1", "u1")]
    assert outbox_rows(db) == 0
    [(_, fields)] = client.xrange(stream)
    assert json.loads(fields[b"event"])["agentId"] == "a1"
