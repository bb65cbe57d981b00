"""The live feed's steps over Redis Streams, for paper workers in other processes (fan-out).

``farm feed`` publishes each step once on the stream ``farm:feed:<source>`` (``XADD``). Every
paper worker reads the whole stream with ``XREAD`` from where it started, without a consumer
group: each worker gets every step, in order (fan-out, not competing consumers). A step a
worker missed while it was down is not read back from the stream: the session that resumes on
it catches up from the bar store, from its last persisted bar to the feed's saved position
(:meth:`farm.papertrading.runtime.PaperRuntime._adopt`), and skips bar times it has seen.
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Any

import redis

from farm.config import Settings
from farm.core.bars import Bar, Step
from farm.events import MARKET_BARS, Event, Handler
from farm.streams import answers, connect

log = logging.getLogger("farm.fanout")

PREFIX = "farm:feed:"
BLOCK_MS = 1000
COUNT = 100
MAX_LEN = 10_000  # approximate length the stream is trimmed to (a late reader catches up)
RETRY_S = 1.0


def open_bar_bus(settings: Settings) -> RedisBarBus:
    """The fan-out stream of the configured feed on ``FARM_REDIS_URL`` (``FARM_BUS=redis``)."""
    assert settings.redis_url is not None  # the settings refuse FARM_BUS=redis without it
    return RedisBarBus(settings.redis_url, settings.feed, cluster=settings.redis_cluster)


class RedisBarBus:
    """An :class:`~farm.events.EventBus` of the feed's ``market.bars`` events on one Redis
    stream, every subscriber getting every event (see the module docstring); ``cluster``:
    ``url`` names a node of a Redis Cluster."""

    def __init__(self, url: str, source: str, *, cluster: bool = False) -> None:
        self._redis = connect(url, cluster=cluster)
        self.stream = f"{PREFIX}{source}"
        self._handlers: list[Handler] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self, topic: str, event: Event) -> None:
        """Append a ``market.bars`` event (``{source, seq, step, missing}``) to the stream."""
        assert topic == MARKET_BARS, topic
        self._redis.xadd(self.stream, {"event": encode(event)}, maxlen=MAX_LEN, approximate=True)

    def subscribe(self, topic: str, handler: Handler, *, group: str | None = None) -> None:
        """Call ``handler`` with every step published after :meth:`start` (``group`` is
        ignored: every subscriber gets every event)."""
        assert topic == MARKET_BARS, topic
        self._handlers.append(handler)

    def start(self) -> None:
        """Read the stream from its current end, on a thread of its own."""
        if self._thread is not None or not self._handlers:
            return
        last: Any = self._redis.xrevrange(self.stream, count=1)
        after = last[0][0] if last else b"0-0"
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._read, args=(after,), name="feed-reader", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._redis.close()

    def healthy(self) -> bool:
        """Whether Redis answers."""
        return answers(self._redis)

    def _read(self, after: bytes) -> None:
        while not self._stopping.is_set():
            try:
                answer: Any = self._redis.xread({self.stream: after}, count=COUNT, block=BLOCK_MS)
            except redis.RedisError:
                log.exception("reading %s failed; retrying", self.stream)
                self._stopping.wait(RETRY_S)
                continue
            for _, messages in answer or []:
                for message_id, fields in messages:
                    after = message_id
                    event = decode(fields[b"event"])
                    for handler in self._handlers:
                        try:
                            handler(event)
                        except Exception:
                            log.exception("a market.bars handler failed")


def encode(event: Event) -> str:
    """A ``market.bars`` event as JSON (floats round-trip exactly)."""
    step: Step = event["step"]
    bars = {s: [b.open, b.high, b.low, b.close, b.volume] for s, b in step.bars.items()}
    return json.dumps(
        {
            "source": event["source"],
            "seq": event["seq"],
            "missing": list(event["missing"]),
            "ts": step.ts.isoformat(),
            "bars": bars,
        }
    )


def decode(raw: bytes | str) -> dict[str, Any]:
    """The event :func:`encode` wrote."""
    body: dict[str, Any] = json.loads(raw)
    bars = {s: Bar(*values) for s, values in body.pop("bars").items()}
    body["step"] = Step(datetime.fromisoformat(body.pop("ts")), bars)
    return body
