"""From the sandbox host's per-step records to FMEL records (the backtest/paper loop calls this)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from farm.core.orders import ClosedTrade, OrderRequest, OrderStatus, OrderType
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import Bar, DataAccess, Holding, Indicator, Order
from farm.sandbox.protocol import MAX_REASONING

if TYPE_CHECKING:
    from farm.brokers.base import Correction
    from farm.sandbox.host import DecisionRecord as HostRecord

#: The status of an order decided on a warm-up bar: never sent.
WARMUP = "warmup"
ENDED_WITHOUT_FILL = frozenset(
    {OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.MARGIN, OrderStatus.REJECTED}
)


class StepCapture:
    """Feeds a :class:`FmelRecorder` from ``run_backtest``'s ``on_step`` and the closed trades.

    Every fill and every order that ends unfilled is recorded against the decision that placed
    the order; a decision is recorded for each step where ``next()`` ran or orders were placed
    or cancelled (warm-up steps without any action are not decisions).
    """

    def __init__(self, recorder: FmelRecorder) -> None:
        self.recorder = recorder
        self._open: dict[str, tuple[int, str, str]] = {}

    def on_step(self, record: HostRecord, *, warmup: bool = False) -> None:
        """Record one step's executions and, when it is a decision point, its decision.

        A ``warmup`` step's orders were never sent: they are recorded with status ``warmup``.
        """
        recorder = self.recorder
        if warmup:
            if record.next_called or record.orders or record.cancels:
                self._decision(record, WARMUP)
            return
        for fill in record.fills:
            recorder.record_execution(fill)
        for event in record.events:
            if event.status in ENDED_WITHOUT_FILL or event.status is OrderStatus.COMPLETED:
                placed = self._open.pop(event.client_order_id, None)
                if placed is not None and event.status is not OrderStatus.COMPLETED:
                    seq, symbol, side = placed
                    recorder.record_order_end(event, seq=seq, symbol=symbol, side=side)
        self.track(record)
        if record.next_called or record.orders or record.cancels:
            self._decision(record, OrderStatus.SUBMITTED.value)

    def track(self, record: HostRecord) -> None:
        """Remember the orders a step placed (for a step recorded before, e.g. by the run that
        a restart resumes), so their ends are recorded against it."""
        for order in record.orders:
            self.expect(order.client_order_id, record.seq, order.symbol, order.size)

    def expect(self, order_id: str, seq: int, symbol: str, size: float) -> None:
        """Remember one order placed at step ``seq``, so its end is recorded against it."""
        self._open[order_id] = (seq, symbol, _side(size))

    def _decision(self, record: HostRecord, status: str) -> None:
        reasoning = record.reasoning
        self.recorder.record_decision(
            seq=record.seq,
            bar_ts=record.ts,
            bars=[
                Bar(symbol=s, open=b.open, high=b.high, low=b.low, close=b.close, volume=b.volume)
                for s, b in record.bars.items()
            ],
            cash=record.cash,
            value=record.value,
            orders=[_order(o, status) for o in record.orders],
            cancels=list(record.cancels),
            positions=[
                Holding(symbol=s, size=p.size, price=p.price) for s, p in record.positions.items()
            ],
            reasoning=reasoning,
            reasoning_truncated=reasoning is not None and len(reasoning) >= MAX_REASONING,
            confidence=record.confidence,
            indicators=_indicators(record.indicators),
            data_accesses=[
                DataAccess(symbol=s, field=f, index=i) for s, f, i in record.data_accesses
            ],
            accesses_dropped=record.accesses_dropped,
            hook_errors=list(record.hook_errors),
        )

    def on_corrections(self, seq: int, corrections: Iterable[Correction]) -> None:
        """Record the corrections a real broker's reconciliation made, against step ``seq``
        (the step they were booked at)."""
        for c in corrections:
            self.recorder.record_correction(seq=seq, symbol=c.symbol, text=c.text, ts=c.ts)

    def on_trades(self, trades: Iterable[ClosedTrade]) -> None:
        """Record the ledger's closed trades (each links to its opening and closing decision)."""
        for trade in trades:
            self.recorder.record_trade(trade)


def _side(size: float) -> str:
    return "buy" if size > 0 else "sell"


def _order(order: OrderRequest, status: str) -> Order:
    kind = order.type
    return Order(
        order_id=order.client_order_id,
        symbol=order.symbol,
        side=_side(order.size),
        size=abs(order.size),
        type=kind.value,
        status=status,
        limit_price=(
            order.price
            if kind is OrderType.LIMIT
            else order.limit_price
            if kind is OrderType.STOP_LIMIT
            else None
        ),
        stop_price=order.price if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None,
    )


def _indicators(values: Mapping[str, float | list[float | None] | None]) -> list[Indicator]:
    out: list[Indicator] = []
    for name, value in values.items():
        if isinstance(value, list):
            out.extend(Indicator(name=name, line=i, value=v) for i, v in enumerate(value))
        else:
            out.append(Indicator(name=name, line=0, value=value))
    return out
