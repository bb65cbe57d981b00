"""The Redis Streams bus, on a real Redis server and a real Redis Cluster: once per group, dead
letters, reclaim, dedupe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from streams_support import Target

from farm.events import EVENT_ID, Event, Handler
from farm.streams import RedisStreamsBus
from support import wait_until

TOPIC = "test.topic"


@contextmanager
def consuming(
    target: Target, prefix: str, handler: Handler, group: str = "g", **options: Any
) -> Iterator[RedisStreamsBus]:
    bus = RedisStreamsBus(target.url, prefix=prefix, cluster=target.cluster, **options)
    bus.subscribe(TOPIC, handler, group=group)
    bus.start()
    try:
        yield bus
    finally:
        bus.close()


class Recorder:
    """A thread-safe handler that counts what it saw."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._fail_on = fail_on

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.seen[event["n"]] += 1
        if event["n"] == self._fail_on:
            raise ValueError("poison")


def test_each_event_is_handled_once_per_group_by_one_of_its_consumers(
    target: Target, prefix: str
) -> None:
    first, second, other = Recorder(), Recorder(), Recorder()
    with (
        consuming(target, prefix, first),
        consuming(target, prefix, second),
        consuming(target, prefix, other, group="other") as publisher,
    ):
        for n in range(40):
            publisher.publish(TOPIC, {"n": str(n)})
        wait_until(lambda: sum((first.seen + second.seen).values()) >= 40)
        wait_until(lambda: sum(other.seen.values()) >= 40)
        time.sleep(0.3)  # nothing more arrives
    shared = first.seen + second.seen
    assert shared == Counter({str(n): 1 for n in range(40)})
    assert other.seen == shared
    assert first.seen, "both consumers of the group took a share"
    assert second.seen, "both consumers of the group took a share"


def test_a_poison_event_is_dead_lettered_after_n_deliveries_and_the_rest_flow(
    target: Target, prefix: str
) -> None:
    handler = Recorder(fail_on="poison")
    with consuming(target, prefix, handler, max_deliveries=3, claim_idle_s=0.2) as bus:
        for n in ["a", "poison", "b", "c"]:
            bus.publish(TOPIC, {"n": n})
        client = target.client()
        wait_until(lambda: client.xlen(bus.dead_letters(TOPIC)) == 1)
        time.sleep(0.6)  # no fourth attempt
        [(_, fields)] = client.xrange(bus.dead_letters(TOPIC))
        pending = client.xpending(bus.stream(TOPIC), "g")["pending"]
    assert handler.seen == Counter({"a": 1, "b": 1, "c": 1, "poison": 3})
    assert fields[b"deliveries"] == b"3"
    assert fields[b"group"] == b"g"
    assert b"poison" in fields[b"error"]
    assert b'"poison"' in fields[b"event"]
    assert pending == 0


CHILD = """
import sys, time
from farm.streams import RedisStreamsBus, connect

url, prefix, cluster = sys.argv[1], sys.argv[2], sys.argv[3] == "cluster"

def hang(event):
    connect(url, cluster=cluster).set(prefix + "taken", event["n"])
    time.sleep(3600)

bus = RedisStreamsBus(url, prefix=prefix, consumer="doomed", cluster=cluster)
bus.subscribe("test.topic", hang, group="g")
bus.start()
time.sleep(3600)
"""


def test_a_dead_consumers_pending_messages_are_reclaimed_by_a_live_one(
    target: Target, prefix: str
) -> None:
    client = target.client()
    kind = "cluster" if target.cluster else "server"
    child = subprocess.Popen([sys.executable, "-c", CHILD, target.url, prefix, kind])
    try:
        publisher = RedisStreamsBus(target.url, prefix=prefix, cluster=target.cluster)
        publisher.publish(TOPIC, {"n": "1"})
        wait_until(lambda: client.get(f"{prefix}taken") == b"1")
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        publisher.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    [pending] = client.xpending_range(f"{prefix}{TOPIC}", "g", "-", "+", 10)
    assert pending["consumer"] == b"doomed"
    survivor = Recorder()
    with consuming(target, prefix, survivor, claim_idle_s=0.3) as bus:
        wait_until(lambda: survivor.seen["1"] == 1)
        wait_until(lambda: client.xpending(bus.stream(TOPIC), "g")["pending"] == 0)
    assert survivor.seen == Counter({"1": 1})


def test_an_event_delivered_twice_runs_its_handler_once(target: Target, prefix: str) -> None:
    handler = Recorder()
    with consuming(target, prefix, handler) as bus:
        for _ in range(3):  # e.g. an outbox row relayed again after a relay died
            bus.publish(TOPIC, {"n": "x", EVENT_ID: "event-1"})
        bus.publish(TOPIC, {"n": "y", EVENT_ID: "event-2"})
        wait_until(lambda: handler.seen["y"] == 1)
        client = target.client()
        wait_until(lambda: client.xpending(bus.stream(TOPIC), "g")["pending"] == 0)
    assert handler.seen == Counter({"x": 1, "y": 1})
