"""What a paper session's steps write to the database, in the loop turn's one transaction.

The session row (status, bars, last bar time, missing symbols, ``books``), the account's cash,
its positions marked at the step's closes, the new orders and the status and fills of the
others, the equity point and the closed trades; a restart restores the books from them
(:mod:`farm.papertrading.restore`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from farm.core.bars import Step
from farm.core.orders import Fill, OrderEvent, OrderRequest
from farm.papertrading.live import LiveSession
from farm.papertrading.repository import OPEN_STATUSES
from farm.papertrading.restore import MICRO, books_json
from farm.sandbox.host import DecisionRecord
from farm.storage.models import (
    PaperAccount,
    PaperEquity,
    PaperOrder,
    PaperPosition,
    PaperSession,
    PaperTrade,
    utcnow,
)


def preload(session: Session, sessions: Sequence[LiveSession]) -> list[object]:
    """Load the rows a step of these sessions updates in three queries (not three each).
    Keep what it returns while using them: the session's identity map holds unchanged rows
    only while they are referenced, and ``session.get`` finds them there without a query."""
    accounts = [live.account_id for live in sessions]
    ids = [s.id for s in sessions]
    return [
        *session.scalars(select(PaperSession).where(PaperSession.id.in_(ids))),
        *session.scalars(select(PaperAccount).where(PaperAccount.id.in_(accounts))),
        *session.scalars(
            select(PaperOrder).where(
                PaperOrder.account_id.in_(accounts), PaperOrder.status.in_(OPEN_STATUSES)
            )
        ),
    ]


def order_row(live: LiveSession, cid: str, order: OrderRequest) -> dict[str, Any]:
    """The ``paper_orders`` row of an order just sent."""
    return {
        "account_id": live.account_id,
        "client_order_id": cid,
        "session_id": live.id,
        "symbol": order.symbol,
        "size": order.size,
        "type": order.type.value,
        "price": order.price,
        "limit_price": order.limit_price,
        "valid_until": order.valid_until,
        "status": "submitted",
        "filled": 0.0,
        "bar_time": order.created_ts,
        "created_price": order.created_price,
    }


@dataclass
class StepRows:
    """What one loop turn writes for the sessions that decided in it: the session and account
    rows are updated in the caller's transaction (:meth:`add`), the new rows inserted in one
    statement per table (:meth:`write`)."""

    accounts: list[str] = field(default_factory=list)  # their positions are replaced
    positions: list[dict[str, Any]] = field(default_factory=list)
    equity: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, session: Session, live: LiveSession, step: Step, record: DecisionRecord | None
    ) -> None:
        """Update the session's and its account's rows for ``step``; queue its new rows."""
        row = session.get(PaperSession, live.id)
        if row is None:
            return
        account = live.account
        fills = account.fills[live.fills_saved :]
        live.fills_saved = len(account.fills)
        apply_events(session, live.account_id, live.ids.last_events, fills)
        for order in [] if record is None else record.orders:
            self.orders.append(order_row(live, live.ids.to_client[order.client_order_id], order))
        live.live_bars += 1
        if row.first_bar_time is None:
            row.first_bar_time = step.ts
            row.started_at = row.started_at or utcnow()
        row.last_bar_time = step.ts
        row.bars_processed = live.live_bars
        row.missing_at_last_step = [s for s in live.symbols if s not in step.bars]
        if row.status == "starting":
            row.status = "running"
        row.books = books_json(account, live.ids.broker)
        acct = session.get(PaperAccount, live.account_id)
        if acct is not None:
            acct.cash = Decimal(account.cash).quantize(MICRO)
        self.accounts.append(live.account_id)
        closes = account.closes
        self.positions += [
            {
                "account_id": live.account_id,
                "symbol": symbol,
                "size": position.size,
                "average_price": position.price,
                "last_price": closes[symbol],
                "marked_at": step.ts,
            }
            for symbol, position in account.positions.items()
        ]
        self.equity.append(
            {
                "session_id": live.id,
                "seq": live.live_bars - 1,
                "bar_time": step.ts,
                "cash": account.cash,
                "equity": account.equity[-1][1],
            }
        )
        self.trades += [
            {
                "session_id": live.id,
                "n": n,
                "symbol": trade.symbol,
                "size": trade.size,
                "entry_time": trade.entry_ts,
                "exit_time": trade.exit_ts,
                "entry_price": trade.entry_price,
                "exit_price": trade.exit_price,
                "pnl": trade.pnl,
                "pnl_net": trade.pnl_net,
                "commission": trade.commission,
                "bars_held": trade.bars_held,
                "opened_by_seq": trade.opened_by_seq,
                "closed_by_seq": trade.closed_by_seq,
            }
            for n, trade in enumerate(account.trades[live.trades_saved :], live.trades_saved)
        ]
        live.trades_saved = len(account.trades)

    def write(self, session: Session) -> None:
        """Replace the accounts' positions and insert the rows queued."""
        if self.accounts:
            session.execute(
                delete(PaperPosition).where(PaperPosition.account_id.in_(self.accounts))
            )
        for model, rows in (
            (PaperPosition, self.positions),
            (PaperEquity, self.equity),
            (PaperTrade, self.trades),
            (PaperOrder, self.orders),
        ):
            if rows:
                session.execute(insert(model), rows)


def apply_events(
    session: Session, account_id: str, events: Sequence[OrderEvent], fills: Sequence[Fill]
) -> None:
    """Bring the order rows up to date with the broker's events and fills (client ids)."""
    for event in events:
        row = session.get(PaperOrder, (account_id, event.client_order_id))
        if row is not None:
            row.status = event.status.value
    for fill in fills:
        row = session.get(PaperOrder, (account_id, fill.client_order_id))
        if row is not None:
            row.filled += fill.size
