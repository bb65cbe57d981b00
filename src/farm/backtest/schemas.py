"""Backtest API bodies (camelCase; the original contract's metric names are kept)."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, StringConstraints

from farm.schemas import ApiModel, bounded_date

DEFAULT_SYMBOLS = ("SPY", "QQQ", "AAPL")
MAX_SYMBOLS = 500
MAX_PARAMS = 100
MAX_PARAM_INT = 2**53
ParamIn = (
    bool
    | Annotated[int, Field(ge=-MAX_PARAM_INT, le=MAX_PARAM_INT)]
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(max_length=1000)]
    | None
)
"""A strategy param's value as a request may give it (the sandbox protocol's ``ParamValue``)."""


class SessionStatus(StrEnum):
    """Where a backtest is in the queue."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureReason(StrEnum):
    """Why a backtest failed."""

    AGENT_ERROR = "agent_error"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    KILLED = "killed"
    INVALID_AGENT = "invalid_agent"
    DATA_ERROR = "data_error"
    INTERRUPTED = "interrupted"
    BANKRUPT = "bankrupt"
    INTERNAL_ERROR = "internal_error"


class BacktestRequest(ApiModel):
    """What to backtest: dates are inclusive calendar dates of the bars."""

    model_config = ConfigDict(extra="forbid")

    start_date: date = bounded_date(date(2023, 1, 1), "First bar date")
    end_date: date = bounded_date(date(2023, 12, 31), "Last bar date")
    initial_cash: float = Field(
        default=100_000.0,
        le=1e12,
        allow_inf_nan=False,
        description="Positive, finite, at most 1e12",
    )
    symbols: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SYMBOLS),
        min_length=1,
        max_length=MAX_SYMBOLS,
        description=f"1 to {MAX_SYMBOLS} symbols",
    )
    commission: float = Field(default=0.001, ge=0, le=0.1, description="0.001 = 0.1%")
    slippage_bps: float = Field(default=0.0, ge=0, le=1000)
    benchmark: str = "SPY"
    fmel: bool = Field(default=True, description="Record every decision (FMEL)")
    # The agent contract (issue 12): passed to the strategy's params, checked against its own.
    params: dict[Annotated[str, StringConstraints(max_length=100)], ParamIn] = Field(
        default_factory=dict,
        max_length=MAX_PARAMS,
        description=f"Strategy params (at most {MAX_PARAMS}), checked against those the "
        "strategy declares: names it declares, values of its defaults' types",
    )


class StartResponse(ApiModel):
    """A backtest was queued."""

    session_id: str
    status: SessionStatus


class Progress(ApiModel):
    """How far the run is, in timesteps."""

    bars_done: int
    bars_total: int


class Failure(ApiModel):
    """Why a backtest failed, for a human."""

    reason: FailureReason
    message: str
    traceback: str | None = None


class SeriesSize(ApiModel):
    """How many rows a run made and how many were stored (the first ones)."""

    total: int
    stored: int


class Output(ApiModel):
    """What a completed run stored and what it left out at the caps."""

    fmel_capped: bool = Field(description="FMEL stopped recording at FARM_FMEL_MAX_SESSION_MB")
    fmel_bytes: int
    fmel_dropped_records: int
    fills: SeriesSize = Field(description="Beyond FARM_RESULTS_MAX_ROWS fills are not stored")
    trades: SeriesSize


class DataRange(ApiModel):
    """The session dates of the first and last bar a completed backtest used."""

    start_date: date
    end_date: date


class BacktestResults(ApiModel):
    """A session's state, and on completion every metric (DESIGN §6)."""

    session_id: str
    agent_id: str
    kind: str
    status: SessionStatus
    progress: Progress
    parameters: BacktestRequest
    data_source: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    metrics: dict[str, float | int | None] | None = None
    benchmark: dict[str, float | int | None] | None = None
    output: Output | None = None
    failure: Failure | None = None
    data_range: DataRange | None = Field(
        default=None, description="The dates actually used (completed runs)"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="E.g. the requested dates extend past the stored data by more than a week",
    )


class SessionList(ApiModel):
    """A page of an agent's backtests, newest first, and how many there are."""

    sessions: list[BacktestResults]
    total: int
    limit: int
    offset: int


class EquityPoint(ApiModel):
    """Portfolio value and drawdown at one bar."""

    timestamp: datetime
    equity: float
    drawdown: float


class EquitySeries(ApiModel):
    """A page of the equity and drawdown series of a completed backtest, oldest first."""

    session_id: str
    points: list[EquityPoint]
    total: int
    limit: int
    offset: int


class FillOut(ApiModel):
    """One execution from the host ledger."""

    client_order_id: str
    symbol: str
    timestamp: datetime
    size: float
    price: float
    commission: float
    decision_seq: int


class FillList(ApiModel):
    """A page of the stored fills of a completed backtest, in order."""

    session_id: str
    fills: list[FillOut]
    total: int
    limit: int
    offset: int


class TradeOut(ApiModel):
    """One closed round trip."""

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


class TradeList(ApiModel):
    """A page of the stored closed trades of a completed backtest, in order of closing."""

    session_id: str
    trades: list[TradeOut]
    total: int
    limit: int
    offset: int


class SessionLogs(ApiModel):
    """What a backtest's agent printed (stdout and stderr): the first and the last 32 KiB."""

    session_id: str
    status: SessionStatus
    head: str = Field(description="The first 32 KiB printed")
    tail: str = Field(description="The last 32 KiB printed, after omittedBytes not kept")
    total_bytes: int
    omitted_bytes: int
