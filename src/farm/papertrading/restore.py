"""A resumed paper session's books, read back from the rows its steps persisted.

Every step writes, in its transaction, the account's cash (exactly, as the float of the equity
row; the account row keeps it to the micro), its positions with their last closes, the orders
and their status, the closed trades, the equity curve and ``paper_sessions.books`` (what those
rows do not hold: the open trades, the positions' valuation order, the fill count and the
stop-limits already triggered). After a restart the runtime restores the account and the open
orders from them: they are the truth, whatever the agent decides when it is re-warmed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from farm.brokers.simulated import SimulatedBroker
from farm.core.account import Account
from farm.core.orders import ClosedTrade, OrderRequest, OrderType, Position
from farm.papertrading.repository import OPEN_STATUSES
from farm.storage.models import (
    PaperAccount,
    PaperEquity,
    PaperOrder,
    PaperPosition,
    PaperSession,
    PaperTrade,
)

MICRO = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class PersistedOrder:
    """An order row as the broker needs it back."""

    request: OrderRequest
    status: str
    filled: float

    @property
    def open(self) -> bool:
        """Still waiting at the broker."""
        return self.status in OPEN_STATUSES


@dataclass(slots=True)
class Books:
    """Everything a session's steps persisted about its account."""

    cash: float
    positions: dict[str, tuple[Position, float]]
    trades: list[ClosedTrade]
    equity: list[tuple[datetime, float]]
    internals: dict[str, Any]
    triggered: frozenset[str]
    orders: list[PersistedOrder] = field(default_factory=list)

    def account(self) -> Account:
        """The account as persisted (see :meth:`Account.restore`)."""
        return Account.restore(self.cash, self.positions, self.trades, self.equity, self.internals)

    def broker(self, broker: SimulatedBroker) -> SimulatedBroker:
        """Put the persisted open orders back on ``broker`` (which trades :meth:`account`)."""
        broker.restore(
            (
                o.request,
                o.request.size - o.filled,
                o.status != "submitted",
                o.request.client_order_id in self.triggered,
            )
            for o in self.orders
            if o.open
        )
        return broker

    @property
    def open_orders(self) -> dict[str, OrderRequest]:
        """The open orders by client order id."""
        return {o.request.client_order_id: o.request for o in self.orders if o.open}

    def orders_by_seq(self) -> dict[int, list[OrderRequest]]:
        """Every order the session sent, by the step that decided it, in the agent's order."""
        out: dict[int, list[OrderRequest]] = defaultdict(list)
        for o in self.orders:
            out[o.request.decision_seq].append(o.request)
        return out


def load_books(session: Session, row: PaperSession) -> Books:
    """Read the books of a session that has taken at least one live step."""
    account = session.get(PaperAccount, row.account_id)
    assert account is not None
    last = session.scalars(
        select(PaperEquity)
        .where(PaperEquity.session_id == row.id)
        .order_by(PaperEquity.seq.desc())
        .limit(1)
    ).first()
    # The equity row holds the float cash; the account row is the truth to the micro.
    cash = float(account.cash)
    if last is not None and Decimal(last.cash).quantize(MICRO) == account.cash:
        cash = last.cash
    equity = session.execute(
        select(PaperEquity.bar_time, PaperEquity.equity)
        .where(PaperEquity.session_id == row.id)
        .order_by(PaperEquity.seq)
    ).all()
    positions = {
        p.symbol: (Position(p.size, p.average_price), p.last_price)
        for p in session.scalars(
            select(PaperPosition).where(PaperPosition.account_id == row.account_id)
        )
    }
    trades = [
        ClosedTrade(
            symbol=t.symbol,
            size=t.size,
            entry_ts=t.entry_time,
            exit_ts=t.exit_time,
            entry_price=t.entry_price,
            exit_price=t.exit_price,
            pnl=t.pnl,
            pnl_net=t.pnl_net,
            commission=t.commission,
            bars_held=t.bars_held,
            opened_by_seq=-1 if t.opened_by_seq is None else t.opened_by_seq,
            closed_by_seq=-1 if t.closed_by_seq is None else t.closed_by_seq,
        )
        for t in session.scalars(
            select(PaperTrade).where(PaperTrade.session_id == row.id).order_by(PaperTrade.n)
        )
    ]
    books = row.books or {}
    orders = session.scalars(select(PaperOrder).where(PaperOrder.session_id == row.id)).all()
    return Books(
        cash=cash,
        positions=positions,
        trades=trades,
        equity=[(ts, value) for ts, value in equity],
        internals=books.get("account", {"rank": [], "fills": 0, "open": []}),
        triggered=frozenset(books.get("triggered", ())),
        orders=sorted(
            (_persisted(o) for o in orders), key=lambda o: _seq_n(o.request.client_order_id)
        ),
    )


def books_json(account: Account, broker: SimulatedBroker) -> dict[str, Any]:
    """``paper_sessions.books`` for this account and broker."""
    return {"account": account.internals(), "triggered": broker.triggered}


def _persisted(row: PaperOrder) -> PersistedOrder:
    seq, _ = _seq_n(row.client_order_id)
    kind = OrderType(row.type)
    created = row.created_price
    if created is None:  # a row from before created prices were kept
        created = row.price if row.price is not None else 0.0
    request = OrderRequest(
        client_order_id=row.client_order_id,
        symbol=row.symbol,
        size=row.size,
        type=kind,
        created_ts=row.bar_time,
        created_price=created,
        decision_seq=seq,
        price=row.price,
        limit_price=row.limit_price,
        valid_until=row.valid_until,
    )
    return PersistedOrder(request, row.status, row.filled)


def _seq_n(client_order_id: str) -> tuple[int, int]:
    """The (step, n) of a deterministic client order id ``<session>-<step>-<n>``: sorting by
    it gives the submission order."""
    _, seq, n = client_order_id.rsplit("-", 2)
    return int(seq), int(n)
