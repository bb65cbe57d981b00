"""Hand-made FMEL stores written with the real recorder, and their expected analytics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from farm.core.orders import ClosedTrade, Fill, OrderEvent, OrderStatus
from farm.fmel.layout import part_files
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import KINDS, Bar, DataAccess, Indicator, Order

T0 = datetime(2024, 1, 1, 14, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    """One hand-made decision: orders as (symbol, side), reads as (symbol, field, index)."""

    orders: tuple[tuple[str, str], ...]
    confidence: float | None
    reasoning: str | None
    reads: tuple[tuple[str, str, int], ...]


# Two decisions per bar day, 2024-01-01 .. 2024-01-04.
SMALL = [
    Step(
        (("AAPL", "buy"),),
        0.9,
        "strong uptrend, buy AAPL",
        (("AAPL", "close", 0), ("AAPL", "close", -1)),
    ),
    Step((), 0.5, "waiting for confirmation", (("AAPL", "close", 0),)),
    Step(
        (("AAPL", "sell"),), 0.8, "take profit, sell", (("AAPL", "close", 0), ("AAPL", "volume", 0))
    ),
    Step((("MSFT", "buy"),), 0.2, "weak signal but buy MSFT", (("MSFT", "close", 0),)),
    Step((), None, None, (("AAPL", "close", 0),)),
    Step(
        (("MSFT", "sell"),), 0.6, "stop loss hit, sell", (("MSFT", "close", 0), ("MSFT", "low", 0))
    ),
    Step((("AAPL", "buy"), ("MSFT", "sell")), 1.0, "rotate from MSFT into AAPL", ()),
    Step((), 0.05, "nothing to do", (("AAPL", "close", 0),)),
]
# (symbol, opened_by_seq, closed_by_seq, pnl_net)
SMALL_TRADES = [("AAPL", 0, 2, 50.0), ("MSFT", 3, 5, -20.0), ("AAPL", 6, 7, -10.0)]


def bar_ts(seq: int) -> datetime:
    """Bar time of hand-made decision ``seq``: two decisions per day."""
    return T0 + timedelta(days=seq // 2, hours=seq % 2)


def new_id() -> str:
    return str(uuid.uuid4())


def write_small(root: Path, agent_id: str, session_id: str, user_id: str) -> None:
    """The SMALL session: decisions, one fill per order, a margin call, three closed trades."""
    with FmelRecorder(root, agent_id, session_id, user_id, "BACKTEST", batch_size=3) as rec:
        for seq, step in enumerate(SMALL):
            ts = bar_ts(seq)
            orders = [
                Order(
                    order_id=f"{session_id[:8]}-{seq}-{i}",
                    symbol=symbol,
                    side=side,
                    size=10,
                    type="limit" if symbol == "MSFT" else "market",
                    status="submitted",
                    limit_price=99.5 if symbol == "MSFT" else None,
                )
                for i, (symbol, side) in enumerate(step.orders)
            ]
            errors = ["get_decision_confidence raised ValueError: no idea"] if seq == 4 else []
            rec.record_decision(
                seq=seq,
                bar_ts=ts,
                bars=[
                    Bar(
                        symbol=s,
                        open=100 + seq,
                        high=102 + seq,
                        low=99 + seq,
                        close=101 + seq,
                        volume=1e6,
                    )
                    for s in ("AAPL", "MSFT")
                ],
                cash=100_000.0 - seq,
                value=100_000.0 + seq,
                orders=orders,
                reasoning=step.reasoning,
                confidence=step.confidence,
                indicators=[
                    Indicator(name="sma", line=0, value=100.5 + seq),
                    Indicator(name="bands", line=0, value=float("nan")),
                    Indicator(name="bands", line=1, value=1.0),
                ],
                data_accesses=[DataAccess(symbol=s, field=f, index=i) for s, f, i in step.reads],
                hook_errors=errors,
                wall_ts=datetime.now(UTC) - timedelta(hours=1),
            )
            for order in orders:
                if seq == 6 and order.symbol == "MSFT":
                    event = OrderEvent(
                        order.order_id, OrderStatus.MARGIN, ts, reason="insufficient cash"
                    )
                    rec.record_order_end(event, seq=seq, symbol="MSFT", side="sell")
                    continue
                size = order.size if order.side == "buy" else -order.size
                rec.record_execution(
                    Fill(
                        order.order_id,
                        order.symbol,
                        ts + timedelta(days=1),
                        size,
                        101.0 + seq,
                        1.01,
                        seq,
                    )
                )
        for symbol, opened, closed, pnl_net in SMALL_TRADES:
            rec.record_trade(
                ClosedTrade(
                    symbol=symbol,
                    size=10,
                    entry_ts=bar_ts(opened) + timedelta(days=1),
                    exit_ts=bar_ts(closed) + timedelta(days=1),
                    entry_price=100.0,
                    exit_price=100.0 + pnl_net / 10,
                    pnl=pnl_net + 2,
                    pnl_net=pnl_net,
                    commission=2.0,
                    bars_held=closed - opened,
                    opened_by_seq=opened,
                    closed_by_seq=closed,
                )
            )


def write_old(root: Path, agent_id: str, session_id: str, user_id: str) -> None:
    """Three older decisions (bar times in 2023), recorded 40, 40 and 100 days ago."""
    now = datetime.now(UTC)
    with FmelRecorder(root, agent_id, session_id, user_id, "PAPER") as rec:
        for seq, age in enumerate((100, 40, 40)):
            rec.record_decision(
                seq=seq,
                bar_ts=datetime(2023, 6, 1, tzinfo=UTC) + timedelta(days=seq),
                bars=[Bar(symbol="SPY", open=1, high=1, low=1, close=1, volume=1)],
                cash=1.0,
                value=1.0,
                reasoning="buy the dip" if seq == 2 else "hold steady",
                confidence=0.3,
                data_accesses=[DataAccess(symbol="SPY", field="close", index=0)],
                wall_ts=now - timedelta(days=age),
            )


def stored(root: Path, agent_id: str, kind: str, session_id: str | None = None) -> pa.Table:
    """Everything stored of ``kind`` for an agent, read straight from the part files."""
    files = part_files(root, [agent_id], kind, session_id)
    if not files:
        return KINDS[kind].empty_table()
    return pa.concat_tables(pq.read_table(f, schema=KINDS[kind]) for f in files)
