"""The event bus: services meet through events published after their transaction commits.

Events of a database change are written in its transaction (:func:`farm.outbox.emit`) and
relayed to the bus after the commit. Two buses: the in-process one (the embedded default) and
Redis Streams (``FARM_BUS=redis``, :mod:`farm.streams`) for processes on several machines.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from farm.config import Settings
from farm.metrics import EVENT_HANDLING

log = logging.getLogger("farm.events")

Event = Mapping[str, Any]
Handler = Callable[[Event], None]

AGENT_SUBMITTED = "agent.submitted"
AGENT_DELETED = "agent.deleted"
BACKTEST_COMPLETED = "backtest.completed"
FORWARD_RECORDED = "leaderboard.forward_recorded"  # {agentId}: forward bars were recorded
#: One timestep of the live feed, published once: ``{source, seq, step, missing}``.
MARKET_BARS = "market.bars"
#: Added to every event relayed from the outbox: its unique id (handlers may dedupe on it).
EVENT_ID = "eventId"


class EventBus(Protocol):
    """Publish/subscribe by topic; handlers must be idempotent (delivery is at least once)."""

    def publish(self, topic: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber of ``topic``."""

    def subscribe(self, topic: str, handler: Handler, *, group: str | None = None) -> None:
        """Call ``handler`` for every event published on ``topic``. On a bus shared by several
        processes each event goes to one subscriber per ``group`` (default: the handler's
        qualified name, so the same service in several processes shares the work)."""

    def start(self) -> None:
        """Begin delivering events to the subscribers."""

    def close(self) -> None:
        """Stop delivering and release connections."""

    def healthy(self) -> bool:
        """Whether the bus can deliver events now."""


class InProcessBus:
    """The embedded bus: handlers run synchronously in the publisher's thread.

    A failing handler is logged and does not affect the publisher or other handlers.
    """

    def __init__(self) -> None:
        self._handlers: defaultdict[str, list[Handler]] = defaultdict(list)

    def publish(self, topic: str, event: Event) -> None:
        with EVENT_HANDLING.labels(topic).time():
            for handler in list(self._handlers[topic]):
                try:
                    handler(event)
                except Exception:
                    log.exception("event handler failed for %s", topic)

    def subscribe(self, topic: str, handler: Handler, *, group: str | None = None) -> None:
        self._handlers[topic].append(handler)

    def start(self) -> None:
        """Nothing to start: delivery happens in :meth:`publish`."""

    def close(self) -> None:
        """Nothing to release."""

    def healthy(self) -> bool:
        """Always: it lives in this process."""
        return True


def open_bus(settings: Settings) -> EventBus:
    """The bus ``FARM_BUS`` chooses: ``memory`` (in this process) or ``redis`` (Streams)."""
    if settings.bus == "memory":
        return InProcessBus()
    from farm.streams import RedisStreamsBus

    assert settings.redis_url is not None  # the settings refuse FARM_BUS=redis without it
    return RedisStreamsBus(
        settings.redis_url,
        claim_idle_s=settings.bus_claim_idle_s,
        max_deliveries=settings.bus_max_deliveries,
        cluster=settings.redis_cluster,
    )
