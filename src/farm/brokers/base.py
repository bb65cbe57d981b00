"""What the session engine needs from a broker (DESIGN §4): the simulated one and Alpaca's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from farm.core.account import Account
from farm.core.bars import Step
from farm.core.orders import OrderEvent, OrderRequest


class Broker(Protocol):
    """Takes a session's orders and books their executions on its :class:`Account`.

    ``submit`` is idempotent by ``client_order_id`` (a replayed step never places an order
    twice). ``process`` is called when a step's bars arrive, before the agent sees them: the
    broker applies what executed since the previous step (the simulated broker matches now; a
    real one books the fills it received) and returns the order events in order.
    """

    account: Account

    @property
    def open_orders(self) -> list[str]:
        """Client ids of the orders not yet done."""

    def submit(self, order: OrderRequest) -> None:
        """Send one order."""

    def cancel(self, client_order_id: str) -> None:
        """Ask to cancel an open order (a no-op for one that is done or unknown)."""

    def process(self, step: Step) -> list[OrderEvent]:
        """Apply what happened up to ``step``'s bars; the order events since the last call."""


@dataclass(frozen=True, slots=True)
class Correction:
    """A difference a reconciliation found and corrected: ``symbol`` (empty for cash), the
    sentence saying what the account held and what the broker has, and the step's time."""

    symbol: str
    text: str
    ts: datetime


class SessionBroker(Broker, Protocol):
    """What a paper session needs beyond :class:`Broker` (the simulated broker and Alpaca's)."""

    def cancel_all(self, ts: datetime) -> list[OrderEvent]:
        """Cancel every order not yet done (the session stops); their CANCELLED events."""

    def status(self) -> dict[str, Any] | None:
        """What the session status shows of the broker (None: nothing to show)."""

    def corrections(self) -> list[Correction]:
        """Reconciliation corrections booked since the last call (recorded in FMEL)."""

    def close(self) -> None:
        """The session is gone: release what the broker holds (threads, connections)."""
