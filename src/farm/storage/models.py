"""SQLAlchemy models: the platform's source of truth."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


MONEY_PLACES = 6


class Money(TypeDecorator[Decimal]):
    """An exact amount of money: a ``Decimal`` in Python, an integer count of millionths in the
    database (SQLite has no exact decimal type). More than six decimal places is refused."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be a Decimal, not {type(value).__name__}")
        units = value.scaleb(MONEY_PLACES)
        if not units.is_finite() or units != units.to_integral_value():
            raise ValueError(f"money must be finite with at most {MONEY_PLACES} decimals: {value}")
        return int(units)

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value).scaleb(-MONEY_PLACES)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class LeasedRow:
    """The lease of the process that runs a row while its status is one of ``LEASED``
    (:mod:`farm.leases`): who, which claim (a new token per claim fences every write), and
    until when; the holder's heartbeat moves the expiry."""

    LEASED: ClassVar[tuple[str, ...]]
    if TYPE_CHECKING:
        id: Mapped[str]
        status: Mapped[str]
        created_at: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_token: Mapped[str | None] = mapped_column(String(36), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class User(Base):
    """A person or team that owns agents."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class OidcIdentity(Base):
    """An OIDC sign-in: the user created on first sign-in with ``(issuer, subject)``."""

    __tablename__ = "oidc_identities"

    issuer: Mapped[str] = mapped_column(String(255), primary_key=True)
    subject: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Agent(Base):
    """A submitted agent: metadata here, source code in the artifact store."""

    __tablename__ = "agents"
    __table_args__ = (
        Index("ix_agents_user_created", "user_id", "created_at"),
        Index("ix_agents_user_sha", "user_id", "code_sha256"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[str] = mapped_column(Text, default="")
    strategy_class: Mapped[str] = mapped_column(String(200))
    # The strategy's params as parsed at submission: name -> type of its default (None: any);
    # None when they are not literals (then checked when the agent runs).
    declared_params: Mapped[dict[str, str | None] | None] = mapped_column(JSON, nullable=True)
    code_sha256: Mapped[str] = mapped_column(String(64))
    code_bytes: Mapped[int] = mapped_column(Integer)
    artifact_key: Mapped[str] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BacktestSession(LeasedRow, Base):
    """One backtest: its request, its place in the queue, its progress and its outcome.

    The queue is this table: ``queued`` rows are claimed round-robin across lanes (see
    :class:`BacktestLane`), in (priority, created_at) order within a lane.
    Large series (equity, fills, trades) live in the artifact store under ``results_key``.
    """

    __tablename__ = "backtest_sessions"
    LEASED = ("running",)
    __table_args__ = (
        Index("ix_backtests_queue", "status", "priority", "created_at"),
        Index("ix_backtests_agent", "agent_id", "created_at"),
        Index("ix_backtests_user_status", "user_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    bars_done: Mapped[int] = mapped_column(Integer, default=0)
    bars_total: Mapped[int] = mapped_column(Integer, default=0)
    data_source: Mapped[str | None] = mapped_column(String(20), nullable=True)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    results_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class OutboxEvent(Base):
    """An event written in the same transaction as the change it announces (the transactional
    outbox): the relay publishes it on the bus after the commit, then deletes it.

    ``claimed_until`` is the relay's lease on the row: a relay that dies mid-publish leaves it
    to expire, and the row is published again (delivery is at least once).
    """

    __tablename__ = "outbox"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    topic: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BacktestLane(Base):
    """When the scheduler last started a session of a lane (each user's custom backtests, the
    standard evaluations, and each user's share of those): the lane started longest ago goes
    next (round-robin)."""

    __tablename__ = "backtest_lanes"

    lane: Mapped[str] = mapped_column(String(60), primary_key=True)
    last_started_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LeaderboardEntry(Base):
    """One agent's ranked metrics on one board: the leaderboard's source of truth.

    Backtest rows hold the agent's latest standard evaluation under ``timeframe`` ``all_time``
    (windows filter on ``evaluated_at``); paper-trading rows hold metrics over each window.
    Headline rows (``all_time``) combine the backtest row with the agent's forward bars: the
    lower Sharpe of the two, every other metric forward only (docs/leaderboard.md).
    """

    __tablename__ = "leaderboard_entries"
    __table_args__ = (Index("ix_leaderboard_board", "board_type", "timeframe", "evaluated_at"),)

    board_type: Mapped[str] = mapped_column(String(20), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(10), primary_key=True)
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(36))
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    returns: Mapped[float | None] = mapped_column(nullable=True)
    sharpe: Mapped[float | None] = mapped_column(nullable=True)
    sortino: Mapped[float | None] = mapped_column(nullable=True)
    calmar: Mapped[float | None] = mapped_column(nullable=True)
    max_drawdown: Mapped[float | None] = mapped_column(nullable=True)
    win_rate: Mapped[float | None] = mapped_column(nullable=True)
    total_pnl: Mapped[float | None] = mapped_column(nullable=True)
    total_trades: Mapped[int | None] = mapped_column(Integer, nullable=True)
    probabilistic_sharpe: Mapped[float | None] = mapped_column(nullable=True)
    deflated_sharpe: Mapped[float | None] = mapped_column(nullable=True)
    n_trials: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Headline rows only: the two Sharpe ratios combined and the forward record's extent.
    in_sample_sharpe: Mapped[float | None] = mapped_column(nullable=True)
    forward_sharpe: Mapped[float | None] = mapped_column(nullable=True)
    forward_bars: Mapped[int | None] = mapped_column(Integer, nullable=True)
    first_forward_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_forward_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ForwardBar(Base):
    """One bar of an agent's forward record: dated after its submission, from a paper session.

    One row per agent and bar time (the first session to record a bar time keeps it);
    ``ret = end / start - 1`` and ``pnl = end - start`` of the account's equity over the bar.
    """

    __tablename__ = "leaderboard_forward_bars"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    bar_time: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(36))
    ret: Mapped[float]
    pnl: Mapped[float]
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PaperAccount(Base):
    """A paper-trading account held by the host: its cash is the truth, the agent sees a mirror.

    ``running_session_id`` is the paper session trading the account right now (set and cleared by
    the session engine); while it is set the account cannot be reset or funded.
    """

    __tablename__ = "paper_accounts"
    __table_args__ = (
        Index("ix_paper_accounts_user_created", "user_id", "created_at"),
        Index("ix_paper_accounts_broker_key", "broker_key_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    broker: Mapped[str] = mapped_column(String(20), default="simulated")
    initial_cash: Mapped[Decimal] = mapped_column(Money)
    cash: Mapped[Decimal] = mapped_column(Money)
    funded: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    running_session_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    #: An Alpaca account's key id and its secret key, encrypted with FARM_SECRET_KEY.
    broker_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    broker_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PaperPosition(Base):
    """A paper account's open position in one symbol, marked at its last bar."""

    __tablename__ = "paper_positions"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("paper_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    size: Mapped[float]
    average_price: Mapped[float]
    last_price: Mapped[float]
    marked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PaperOrder(Base):
    """An order of a paper session on its account.

    ``client_order_id`` is deterministic (``<session>-<step>-<n>``, at most 48 characters as
    Alpaca requires) and unique per account, so a replayed step can never place an order twice.
    """

    __tablename__ = "paper_orders"
    __table_args__ = (Index("ix_paper_orders_account_status", "account_id", "status"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("paper_accounts.id", ondelete="CASCADE"), primary_key=True
    )
    client_order_id: Mapped[str] = mapped_column(String(48), primary_key=True)
    session_id: Mapped[str] = mapped_column(String(36))
    symbol: Mapped[str] = mapped_column(String(32))
    size: Mapped[float]
    type: Mapped[str] = mapped_column(String(20))
    price: Mapped[float | None] = mapped_column(nullable=True)
    limit_price: Mapped[float | None] = mapped_column(nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    filled: Mapped[float] = mapped_column(default=0.0)
    #: Why the broker rejected or ended the order, when it said.
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    bar_time: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Backtrader's ``created.price`` (the close at the decision for a market order).
    created_price: Mapped[float | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class MarketFeed(Base):
    """The live feed's position and last step, one row per source, so a restart resumes it."""

    __tablename__ = "market_feeds"

    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    replay_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    symbols: Mapped[list[str]] = mapped_column(JSON)
    last_bar_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    steps_published: Mapped[int] = mapped_column(BigInteger, default=0)
    bars_published: Mapped[int] = mapped_column(BigInteger, default=0)
    missing_at_last_step: Mapped[list[str]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PaperSession(LeasedRow, Base):
    """One paper session: an agent trading an account on the live feed (issue 9).

    The API writes the row (``starting``) and the stop request; a paper runtime that claimed it
    (its lease) runs it, updating it in each step's transaction with the account and the orders.
    """

    __tablename__ = "paper_sessions"
    LEASED = ("starting", "running")
    __table_args__ = (
        Index("ix_paper_sessions_user_created", "user_id", "created_at"),
        Index("ix_paper_sessions_agent_created", "agent_id", "created_at"),
        Index("ix_paper_sessions_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("paper_accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    symbols: Mapped[list[str]] = mapped_column(JSON)
    warmup_bars: Mapped[int] = mapped_column(Integer, default=0)
    commission: Mapped[float] = mapped_column(default=0.0)
    initial_cash: Mapped[Decimal] = mapped_column(Money)
    stop_requested: Mapped[bool] = mapped_column(default=False)
    liquidate: Mapped[bool] = mapped_column(default=False)
    first_bar_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_bar_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    bars_processed: Mapped[int] = mapped_column(Integer, default=0)
    missing_at_last_step: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: A real broker's reconciliation state (differences found, last run); None when simulated.
    broker_status: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(String(30), nullable=True)
    failure_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    failure_traceback: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: What the account's rows do not hold, for a restart to restore it exactly: the open
    #: trades, the positions' valuation order, the fill count, the triggered stop-limits.
    books: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PaperEquity(Base):
    """A paper session's account value at the close of one live bar."""

    __tablename__ = "paper_equity"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("paper_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    bar_time: Mapped[datetime] = mapped_column(UTCDateTime)
    cash: Mapped[float]
    equity: Mapped[float]


class PaperTrade(Base):
    """A round trip a paper session closed (Backtrader's Trade semantics)."""

    __tablename__ = "paper_trades"

    session_id: Mapped[str] = mapped_column(
        ForeignKey("paper_sessions.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    size: Mapped[float]
    entry_time: Mapped[datetime] = mapped_column(UTCDateTime)
    exit_time: Mapped[datetime] = mapped_column(UTCDateTime)
    entry_price: Mapped[float]
    exit_price: Mapped[float]
    pnl: Mapped[float]
    pnl_net: Mapped[float]
    commission: Mapped[float]
    bars_held: Mapped[int] = mapped_column(Integer)
    opened_by_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    closed_by_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
