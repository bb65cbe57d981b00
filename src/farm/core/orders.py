"""Orders, their lifecycle events, fills, positions and closed trades (host ledger vocabulary)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class OrderType(StrEnum):
    """How an order is matched (Backtrader's exectypes that the platform supports)."""

    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"
    STOP_LIMIT = "stop_limit"


class OrderStatus(StrEnum):
    """Order lifecycle, named as in Backtrader."""

    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIAL = "partial"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    MARGIN = "margin"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the agent asked for it. ``size`` is signed: positive buys, negative sells.

    ``client_order_id`` makes submission idempotent. ``created_price`` is Backtrader's
    ``order.created.price`` (the close at creation for market orders), used for the cash check
    at submission. ``decision_seq`` links the order to the decision that created it.
    """

    client_order_id: str
    symbol: str
    size: float
    type: OrderType
    created_ts: datetime
    created_price: float
    decision_seq: int
    price: float | None = None
    limit_price: float | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A change of an order's status, with the fill when it executed."""

    client_order_id: str
    status: OrderStatus
    ts: datetime
    fill_size: float = 0.0
    fill_price: float = 0.0
    commission: float = 0.0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution in the host ledger."""

    client_order_id: str
    symbol: str
    ts: datetime
    size: float
    price: float
    commission: float
    decision_seq: int


@dataclass(frozen=True, slots=True)
class Position:
    """A holding: signed size and average entry price."""

    size: float
    price: float


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A round trip from flat to flat in one symbol (Backtrader's Trade semantics)."""

    symbol: str
    size: float
    entry_ts: datetime
    exit_ts: datetime
    entry_price: float
    exit_price: float
    pnl: float
    pnl_net: float
    commission: float
    bars_held: int
    opened_by_seq: int
    closed_by_seq: int
