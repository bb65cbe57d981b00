"""FMEL API bodies (camelCase). What only the agent says is nested under ``agentReported``."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum

from pydantic import Field

from farm.fmel.records import Action
from farm.schemas import ApiModel

MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000


class DateRange(StrEnum):
    """How far back analytics look, by the time decisions were recorded."""

    D7 = "7d"
    D30 = "30d"
    D90 = "90d"
    ALL = "all"


class ExportFormat(StrEnum):
    """Export file formats."""

    PARQUET = "parquet"
    CSV = "csv"
    JSONL = "jsonl"


class RecordKind(StrEnum):
    """Which records to export."""

    DECISIONS = "decisions"
    EXECUTIONS = "executions"
    TRADES = "trades"


class BarOut(ApiModel):
    """One symbol's bar at the decision point (host data)."""

    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class OrderOut(ApiModel):
    """An order the decision placed, from the host ledger (status as of the decision)."""

    order_id: str
    symbol: str
    side: str
    size: float
    type: str
    status: str
    limit_price: float | None
    stop_price: float | None


class PositionOut(ApiModel):
    """A position held at the decision point (signed size, average price)."""

    symbol: str
    size: float
    price: float


class Portfolio(ApiModel):
    """The host ledger's account at the decision point."""

    cash: float
    value: float


class IndicatorOut(ApiModel):
    """One indicator line's value (null for NaN); ``line`` is 0 for single-line indicators."""

    name: str
    line: int
    value: float | None


class DataAccessOut(ApiModel):
    """One read of a data field: ``index`` 0 is the current bar, -1 the previous one."""

    symbol: str
    field: str
    index: int


class AgentReported(ApiModel):
    """What the agent itself reported; the platform cannot verify it."""

    reasoning: str | None
    reasoning_truncated: bool
    confidence: float | None
    indicators: list[IndicatorOut]
    indicators_truncated: bool
    data_accessed: list[DataAccessOut]
    data_accessed_truncated: bool
    hook_errors: list[str]


class DecisionOut(ApiModel):
    """One decision point (one ``next()`` call)."""

    decision_id: str
    session_id: str
    agent_id: str
    user_id: str
    mode: str
    seq: int
    bar_time: datetime
    wall_time: datetime
    action: Action
    symbols: list[str]
    bars: list[BarOut]
    positions: list[PositionOut]
    portfolio: Portfolio
    orders: list[OrderOut]
    cancels: list[str]
    agent_reported: AgentReported
    schema_version: int


class DecisionList(ApiModel):
    """A page of decisions, newest bar first, with the total that match."""

    decisions: list[DecisionOut]
    total: int
    limit: int
    offset: int


class ExecutionOut(ApiModel):
    """A fill (``status`` filled) or how an order ended without one, from the host ledger."""

    execution_id: str
    decision_id: str
    order_id: str
    symbol: str
    side: str
    status: str
    size: float
    price: float | None
    commission: float
    reason: str
    time: datetime


class TradeOut(ApiModel):
    """A closed trade from the host ledger; ``role`` says whether this decision opened it."""

    trade_id: str
    role: str
    symbol: str
    size: float
    entry_time: datetime
    exit_time: datetime
    entry_price: float
    exit_price: float
    pnl: float
    pnl_net: float
    commission: float
    bars_held: int
    opened_by_decision_id: str
    closed_by_decision_id: str


class DecisionDetail(DecisionOut):
    """One decision with the executions of its orders and the trades it opened or closed."""

    executions: list[ExecutionOut]
    trades: list[TradeOut]


class ActionCounts(ApiModel):
    """How many decisions did what."""

    buy: int
    sell: int
    hold: int
    mixed: int


class Bucket(ApiModel):
    """Decisions whose confidence is in ``[lower, upper)`` (the last bucket includes 1.0)."""

    lower: float
    upper: float
    count: int


class TradeStats(ApiModel):
    """Closed trades (net of commission)."""

    total: int
    won: int
    win_rate: float | None
    average_pnl: float | None
    total_pnl: float


class CalibrationBucket(ApiModel):
    """Closed trades by the confidence of the decision that opened them."""

    lower: float
    upper: float
    trades: int
    win_rate: float | None
    average_pnl: float | None


class FieldReads(ApiModel):
    """How often the agent read one field of one symbol."""

    symbol: str
    field: str
    reads: int


class DailyActions(ApiModel):
    """Decisions of one (bar) day by action."""

    date: date
    total: int
    buy: int
    sell: int
    hold: int
    mixed: int


class Analytics(ApiModel):
    """What an agent decided, how sure it was and how that turned out."""

    agent_id: str
    session_id: str | None
    date_range: DateRange
    total_decisions: int
    actions: ActionCounts
    average_confidence: float | None
    confidence_deciles: list[float] | None
    confidence_distribution: list[Bucket]
    trades: TradeStats
    pnl_by_confidence: list[CalibrationBucket]
    most_read_fields: list[FieldReads]
    daily_actions: list[DailyActions]
    capped_sessions: int = Field(
        description="Sessions whose recording stopped at FARM_FMEL_MAX_SESSION_MB (records "
        "after it are missing)"
    )


class Comparison(ApiModel):
    """Analytics of several agents, in the order asked for."""

    agents: list[Analytics]


class SearchHit(DecisionOut):
    """A decision matching a search, with its relevance score."""

    score: float


class SearchResults(ApiModel):
    """A page of matching decisions, best first."""

    results: list[SearchHit]
    total: int
    limit: int
    offset: int
    terms: list[str]
