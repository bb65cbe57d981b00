"""The event bus on Redis Streams, for platform processes on several machines.

Each topic is a stream (``farm:events:<topic>``); ``publish`` appends to it (``XADD``). Each
subscription is a consumer group: every process that subscribes the same handler joins the
group, so an event is handled once per group, by one of them. A handled event is acknowledged
(``XACK``); one whose handler failed stays pending and is delivered again once it has been
pending ``claim_idle_s`` (``XAUTOCLAIM``, which is also how the messages of a consumer that
died are taken over). After ``max_deliveries`` deliveries it goes to the topic's dead-letter
stream (``farm:events:dead:<topic>``) with the last error, and the rest flow on.

On a Redis Cluster (``FARM_REDIS_CLUSTER``) every command names one key, so each stream and its
group live on the node of the stream's slot; a pipeline's commands go to their keys' nodes.

Handlers run at least once per event: a processed-event key (``farm:events:done:<group>:<id>``,
set when a handler succeeds) makes a second delivery of the same event (a re-relayed outbox
row, a handler that succeeded just before its consumer died) a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, TypeAlias

import redis

from farm.events import EVENT_ID, Event, Handler
from farm.metrics import EVENT_HANDLING

log = logging.getLogger("farm.streams")

PREFIX = "farm:events:"
BLOCK_MS = 1000
COUNT = 16
MAX_LEN = 100_000  # approximate length a stream is trimmed to
DONE_TTL_S = 7 * 86_400
RETRY_S = 1.0

Client: TypeAlias = redis.Redis | redis.RedisCluster


def connect(url: str, *, cluster: bool = False) -> Client:
    """A client of the Redis server ``url`` names or (``cluster``) of the Redis Cluster that
    node belongs to."""
    return redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)


@dataclass(frozen=True)
class _Subscription:
    topic: str
    group: str
    handler: Handler


class RedisStreamsBus:
    """An :class:`~farm.events.EventBus` on Redis Streams (see the module docstring);
    ``cluster``: ``url`` names a node of a Redis Cluster."""

    def __init__(
        self,
        url: str,
        *,
        claim_idle_s: float = 30.0,
        max_deliveries: int = 5,
        prefix: str = PREFIX,
        consumer: str | None = None,
        cluster: bool = False,
    ) -> None:
        self._redis = connect(url, cluster=cluster)
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._max_deliveries = max_deliveries
        self._prefix = prefix
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._subscriptions: list[_Subscription] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def stream(self, topic: str) -> str:
        """The stream of ``topic``."""
        return f"{self._prefix}{topic}"

    def dead_letters(self, topic: str) -> str:
        """The dead-letter stream of ``topic``."""
        return f"{self._prefix}dead:{topic}"

    def publish(self, topic: str, event: Event) -> None:
        body = {**event, EVENT_ID: event.get(EVENT_ID) or str(uuid.uuid4())}
        self._redis.xadd(
            self.stream(topic), {"event": json.dumps(body)}, maxlen=MAX_LEN, approximate=True
        )

    def subscribe(self, topic: str, handler: Handler, *, group: str | None = None) -> None:
        name = group or f"{handler.__module__}.{handler.__qualname__}"
        subscription = _Subscription(topic, name, handler)
        self._subscriptions.append(subscription)
        if self._threads:  # started already
            self._consume(subscription)

    def start(self) -> None:
        """Join every subscription's group (created at the stream's start if new, so events
        published before any consumer existed are handled) and consume on one thread each."""
        self._stopping.clear()
        for subscription in self._subscriptions:
            self._consume(subscription)

    def close(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        self._redis.close()

    def healthy(self) -> bool:
        """Whether Redis answers."""
        return answers(self._redis)

    def _consume(self, subscription: _Subscription) -> None:
        try:
            self._redis.xgroup_create(
                self.stream(subscription.topic), subscription.group, id="0", mkstream=True
            )
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        thread = threading.Thread(
            target=self._loop,
            args=(subscription,),
            name=f"bus-{subscription.topic}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def _loop(self, subscription: _Subscription) -> None:
        stream = self.stream(subscription.topic)
        while not self._stopping.is_set():
            try:
                self._reclaim(subscription)
                answer: Any = self._redis.xreadgroup(
                    subscription.group, self.consumer, {stream: ">"}, count=COUNT, block=BLOCK_MS
                )
                for _, messages in answer or []:
                    for message_id, fields in messages:
                        self._deliver(subscription, message_id, fields, deliveries=1)
            except redis.RedisError:
                log.exception("reading %s failed; retrying", stream)
                self._stopping.wait(RETRY_S)

    def _reclaim(self, subscription: _Subscription) -> None:
        """Take over messages pending longer than ``claim_idle_s`` (their consumer died, or
        their handler failed) and deliver them again."""
        stream = self.stream(subscription.topic)
        claimed: Any = self._redis.xautoclaim(
            stream, subscription.group, self.consumer, self._claim_idle_ms, "0-0", count=COUNT
        )
        for message_id, fields in claimed[1]:
            if fields is None:  # trimmed away meanwhile
                continue
            pending: Any = self._redis.xpending_range(
                stream, subscription.group, message_id, message_id, 1
            )
            deliveries = pending[0]["times_delivered"] if pending else 1
            self._deliver(subscription, message_id, fields, deliveries=deliveries)

    def _deliver(
        self, subscription: _Subscription, message_id: Any, fields: Any, *, deliveries: int
    ) -> None:
        stream = self.stream(subscription.topic)
        group = subscription.group
        raw = fields[b"event"]
        if deliveries > self._max_deliveries:  # its consumer died on the last attempt
            self._dead_letter(subscription, message_id, raw, deliveries, "its consumer died")
            return
        try:
            event = json.loads(raw)
            done = f"{self._prefix}done:{group}:{event.get(EVENT_ID)}"
            if not self._redis.exists(done):
                started = time.perf_counter()
                subscription.handler(event)
                EVENT_HANDLING.labels(subscription.topic).observe(time.perf_counter() - started)
        except Exception as exc:
            log.exception("%s failed on %s %s", group, subscription.topic, message_id)
            if deliveries >= self._max_deliveries:
                self._dead_letter(subscription, message_id, raw, deliveries, repr(exc))
            return  # pending: delivered again after claim_idle_s
        with self._redis.pipeline() as pipe:
            pipe.set(done, 1, ex=DONE_TTL_S)
            pipe.xack(stream, group, message_id)
            pipe.execute()

    def _dead_letter(
        self, subscription: _Subscription, message_id: Any, raw: bytes, deliveries: int, error: str
    ) -> None:
        log.error(
            "%s gave up on %s %s after %d deliveries: dead-lettered",
            subscription.group,
            subscription.topic,
            message_id,
            deliveries,
        )
        with self._redis.pipeline() as pipe:
            pipe.xadd(
                self.dead_letters(subscription.topic),
                {
                    "event": raw,
                    "group": subscription.group,
                    "id": message_id,
                    "deliveries": deliveries,
                    "error": error[:2000],
                },
                maxlen=MAX_LEN,
                approximate=True,
            )
            pipe.xack(self.stream(subscription.topic), subscription.group, message_id)
            pipe.execute()


def answers(client: Client) -> bool:
    """Whether the Redis behind ``client`` answers a ping."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
