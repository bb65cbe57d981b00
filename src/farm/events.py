"""The event bus: services meet through events published after their transaction commits."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, Protocol

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


class EventBus(Protocol):
    """Publish/subscribe by topic; handlers must be idempotent (delivery is at least once)."""

    def publish(self, topic: str, event: Event) -> None:
        """Deliver ``event`` to every subscriber of ``topic``."""

    def subscribe(self, topic: str, handler: Handler) -> None:
        """Call ``handler`` for every event published on ``topic``."""


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

    def subscribe(self, topic: str, handler: Handler) -> None:
        self._handlers[topic].append(handler)
