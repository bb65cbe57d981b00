"""What a paper session's steps write to the database, in the loop turn's one transaction.

The session row (status, bars, last bar time, missing symbols, ``books``), the account's cash,
its positions marked at the step's closes, the new orders and the status and fills of the
others, the equity point and the closed trades; a restart restores the books from them
(:mod:`farm.papertrading.restore`).

Nothing is read back: the runtime holds the truth, so a turn of hundreds of sessions is one
``executemany`` per statement (Core, no ORM unit of work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, or_, update
from sqlalchemy.orm import Session

from farm.brokers.simulated import SimulatedBroker
from farm.core.bars import Step
from farm.core.orders import Fill, OrderEvent, OrderRequest
from farm.papertrading.live import LiveSession
from farm.papertrading.restore import MICRO, books_json
from farm.sandbox.host import DecisionRecord
from farm.storage.models import (
    PaperAccount,
    PaperEquity,
    PaperOrder,
    PaperPosition,
    PaperSession,
    PaperTrade,
    UTCDateTime,
    utcnow,
)


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
    """What one loop turn writes for the sessions that decided in it: :meth:`add` queues a
    session's step, :meth:`write` sends the turn in one statement per table and change."""

    sessions: list[dict[str, Any]] = field(default_factory=list)
    cash: list[dict[str, Any]] = field(default_factory=list)
    events: list[OrderEvent] = field(default_factory=list)
    fills: list[Fill] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)  # their positions are replaced
    positions: list[dict[str, Any]] = field(default_factory=list)
    equity: list[dict[str, Any]] = field(default_factory=list)
    trades: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    _account_of: dict[str, str] = field(default_factory=dict)  # client order id -> account

    def add(self, live: LiveSession, step: Step, record: DecisionRecord | None) -> None:
        """Queue the session's rows for ``step``."""
        account = live.account
        fills = account.fills[live.fills_saved :]
        live.fills_saved = len(account.fills)
        for cid in [e.client_order_id for e in live.ids.last_events] + [
            f.client_order_id for f in fills
        ]:
            self._account_of[cid] = live.account_id
        self.events += live.ids.last_events
        self.fills += fills
        for order in [] if record is None else record.orders:
            self.orders.append(order_row(live, live.ids.to_client[order.client_order_id], order))
        live.live_bars += 1
        broker = live.ids.broker  # a real broker's books are the broker's: nothing to keep
        self.sessions.append(
            {
                "sid": live.id,
                "ts": step.ts,
                "now": utcnow(),
                "bars": live.live_bars,
                "missing": [s for s in live.symbols if s not in step.bars],
                "new_broker_status": broker.status(),
                "new_books": books_json(account, broker)
                if isinstance(broker, SimulatedBroker)
                else None,
            }
        )
        self.cash.append(
            {"aid": live.account_id, "new_cash": Decimal(account.cash).quantize(MICRO)}
        )
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
        """Update the session and account rows, replace the accounts' positions, insert the new
        rows, then bring the orders up to date with the turn's events and fills."""
        if self.sessions:
            session.execute(_STEP, self.sessions)
            session.execute(_CASH, self.cash)
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
        _update_orders(session, self._account_of, self.events, self.fills)


_SESSIONS = cast(Table, PaperSession.__table__)
_STEP = (
    update(_SESSIONS)
    .where(
        _SESSIONS.c.id == bindparam("sid"),
        or_(_SESSIONS.c.status == "starting", _SESSIONS.c.status == "running"),  # executemany
    )
    .values(
        status="running",  # reported once the agent decided on its first live bar
        first_bar_time=func.coalesce(
            _SESSIONS.c.first_bar_time, bindparam("ts", type_=UTCDateTime())
        ),
        started_at=func.coalesce(_SESSIONS.c.started_at, bindparam("now", type_=UTCDateTime())),
        last_bar_time=bindparam("ts"),
        bars_processed=bindparam("bars"),
        missing_at_last_step=bindparam("missing"),
        broker_status=bindparam("new_broker_status"),
        books=bindparam("new_books"),
    )
)
_ACCOUNTS = cast(Table, PaperAccount.__table__)
_CASH = (
    update(_ACCOUNTS).where(_ACCOUNTS.c.id == bindparam("aid")).values(cash=bindparam("new_cash"))
)
_ORDERS = cast(Table, PaperOrder.__table__)
_ORDER = (_ORDERS.c.account_id == bindparam("aid")) & (
    _ORDERS.c.client_order_id == bindparam("cid")
)
_STATUS = (
    update(_ORDERS)
    .where(_ORDER)
    .values(
        status=bindparam("new_status"),
        reason=func.coalesce(bindparam("new_reason"), _ORDERS.c.reason),
    )
)
_FILLED = update(_ORDERS).where(_ORDER).values(filled=_ORDERS.c.filled + bindparam("amount"))


def apply_events(
    session: Session, account_id: str, events: Sequence[OrderEvent], fills: Sequence[Fill]
) -> None:
    """Bring the order rows of one account up to date with the broker's events and fills."""
    ids = [e.client_order_id for e in events] + [f.client_order_id for f in fills]
    _update_orders(session, dict.fromkeys(ids, account_id), events, fills)


def _update_orders(
    session: Session,
    account_of: dict[str, str],
    events: Sequence[OrderEvent],
    fills: Sequence[Fill],
) -> None:
    if events:
        session.execute(
            _STATUS,
            [
                {
                    "aid": account_of[e.client_order_id],
                    "cid": e.client_order_id,
                    "new_status": e.status.value,
                    "new_reason": e.reason or None,
                }
                for e in events
            ],
        )
    if fills:
        session.execute(
            _FILLED,
            [
                {"aid": account_of[f.client_order_id], "cid": f.client_order_id, "amount": f.size}
                for f in fills
            ],
        )
