"""Hand-made FMEL stores written with the real recorder, their expected analytics, and
session rows in the database."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from farm.context import Context
from farm.core.orders import ClosedTrade, Fill, OrderEvent, OrderStatus
from farm.fmel.layout import part_files
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import KINDS, Bar, DataAccess, Indicator, Order
from farm.storage.models import Agent, BacktestSession, PaperAccount, PaperSession, User
from farm.users.service import create_user

T0 = datetime(2024, 1, 1, 14, 30, tzinfo=UTC)
ROWS_T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


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


class Rows:
    """Users, agents and sessions written straight to the database (no FMEL records)."""

    def __init__(self, context: Context) -> None:
        self.db = context.db

    def user(self, name: str) -> tuple[User, str]:
        """A new user and its API token."""
        with self.db.transaction() as session:
            return create_user(session, name)

    def agent(self, user_id: str, name: str | None = None, status: str = "active") -> str:
        """A new agent of the user (named after its id unless ``name`` is given); its id."""
        agent_id = new_id()
        with self.db.transaction() as session:
            session.add(
                Agent(
                    id=agent_id,
                    user_id=user_id,
                    name=name or f"agent {agent_id[:8]}",
                    status=status,
                    strategy_class="Strategy",
                    code_sha256=agent_id.replace("-", "").ljust(64, "0"),
                    code_bytes=1,
                    artifact_key=f"agents/{user_id}/{agent_id}.py",
                )
            )
        return agent_id

    def backtest(
        self, agent_id: str, hours: int, kind: str = "custom", bars: int = 5, fmel: bool = True
    ) -> str:
        """A backtest of the agent, created ``hours`` after ``ROWS_T0``, that took ``bars``
        steps; its id."""
        session_id = new_id()
        with self.db.transaction() as session:
            owner = session.get(Agent, agent_id)
            assert owner is not None
            session.add(
                BacktestSession(
                    id=session_id,
                    agent_id=agent_id,
                    user_id=owner.user_id,
                    kind=kind,
                    status="completed" if bars else "queued",
                    params={"symbols": ["SPY"], "fmel": fmel},
                    bars_done=bars,
                    created_at=ROWS_T0 + timedelta(hours=hours),
                )
            )
        return session_id

    def paper(self, agent_id: str, hours: int, bars: int = 3) -> str:
        """A stopped paper session of the agent (on a new account), created ``hours`` after
        ``ROWS_T0``, that took ``bars`` steps; its id."""
        session_id, account_id = new_id(), new_id()
        with self.db.transaction() as session:
            owner = session.get(Agent, agent_id)
            assert owner is not None
            cash = Decimal(1000)
            session.add(
                PaperAccount(
                    id=account_id, user_id=owner.user_id, name="a", initial_cash=cash, cash=cash
                )
            )
            session.flush()
            session.add(
                PaperSession(
                    id=session_id,
                    agent_id=agent_id,
                    user_id=owner.user_id,
                    account_id=account_id,
                    status="stopped",
                    symbols=["SPY"],
                    initial_cash=cash,
                    bars_processed=bars,
                    created_at=ROWS_T0 + timedelta(hours=hours),
                )
            )
        return session_id


@dataclass(frozen=True)
class Account:
    """A user and the Authorization header carrying its token."""

    user_id: str
    headers: dict[str, str]


MakeAccount = Callable[[str], Account]
MakeAgent = Callable[[Account], str]
AddSession = Callable[[Account, str, str], None]


@dataclass(frozen=True)
class World:
    """The FMEL fixture's users, agents and sessions (the `world` fixture)."""

    alice: Account
    bob: Account
    agent: str  # alice's: sessions `small` (8 decisions) and `old` (3)
    other: str  # alice's second agent: one `small` session
    bobs: str  # bob's agent: one `small` session
    small: str
    old: str
