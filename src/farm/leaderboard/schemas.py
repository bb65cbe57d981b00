"""API bodies and the vocabulary of the leaderboard: board types, metrics, timeframes."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field

from farm.schemas import ApiModel


class BoardType(StrEnum):
    """What is ranked: standard backtest evaluations or live paper-trading sessions."""

    BACKTEST = "backtest"
    PAPER_TRADING = "paper_trading"


class Metric(StrEnum):
    """A ranking metric; every one is higher-is-better except ``max_drawdown``."""

    RETURNS = "returns"
    SHARPE = "sharpe"
    WIN_RATE = "win_rate"
    TOTAL_PNL = "total_pnl"
    SORTINO = "sortino"
    CALMAR = "calmar"
    MAX_DRAWDOWN = "max_drawdown"

    @property
    def higher_is_better(self) -> bool:
        """The ranking direction."""
        return self is not Metric.MAX_DRAWDOWN


class Timeframe(StrEnum):
    """The window a board covers, ending now."""

    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    ALL_TIME = "all_time"

    @property
    def window(self) -> timedelta | None:
        """The window's length; ``None`` for all time."""
        return _WINDOWS.get(self)


_WINDOWS = {
    Timeframe.DAILY: timedelta(days=1),
    Timeframe.WEEKLY: timedelta(days=7),
    Timeframe.MONTHLY: timedelta(days=30),
}

MAX_LIMIT = 1000


class LeaderboardRow(ApiModel):
    """One ranked agent; ``metric`` is the value of ``metricType``, the rest are context."""

    rank: int = Field(description="1-based and consecutive")
    agent_id: str
    agent_name: str
    user_id: str = Field(description="The owner's display name")
    metric: float
    metric_type: Metric
    session_id: str = Field(description="The evaluation or paper-trading session ranked")
    evaluated_at: datetime = Field(description="When the ranked result was computed")
    submitted_at: datetime = Field(description="When the agent was submitted (breaks ties)")
    returns: float | None = Field(description="Total return, a fraction")
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float | None = Field(description="A positive fraction; lower is better")
    win_rate: float | None
    total_pnl: float | None = Field(description="Final minus initial portfolio value")
    total_trades: int | None
    probabilistic_sharpe: float | None = Field(
        description="P(true Sharpe > 0) given the return series (Bailey and Lopez de Prado)"
    )
    deflated_sharpe: float | None = Field(
        description="Probabilistic Sharpe deflated for the number of agents the user submitted"
    )


class LeaderboardOut(ApiModel):
    """A page of a board, best first."""

    leaderboard: list[LeaderboardRow]
    updated_at: datetime = Field(alias="updated_at", description="When this data was last changed")
    source: Literal["cache", "database"]


class RankOut(ApiModel):
    """Where one agent stands on one board."""

    agent_id: str
    rank: int
    score: float = Field(description="The agent's value of metricType")
    total: int = Field(description="How many agents the board ranks")
    type: BoardType
    metric_type: Metric
    timeframe: Timeframe
    source: Literal["cache", "database"]
