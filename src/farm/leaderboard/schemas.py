"""API bodies and the vocabulary of the leaderboard: board types, metrics, timeframes."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import Field

from farm.schemas import ApiModel


class BoardType(StrEnum):
    """What is ranked.

    ``headline`` (the default view): forward results combined with the in-sample one (the
    lower Sharpe), ``backtest``: standard evaluations (in-sample), ``paper_trading``: paper
    sessions over each window.
    """

    HEADLINE = "headline"
    BACKTEST = "backtest"
    PAPER_TRADING = "paper_trading"

    @property
    def in_sample(self) -> bool:
        """True when the board ranks results on data the agent could have seen when submitted."""
        return self is BoardType.BACKTEST


class RowStatus(StrEnum):
    """Whether a row is ranked, or listed after every ranked row without a rank."""

    RANKED = "ranked"
    AWAITING_FORWARD = "awaiting_forward"


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
    """One agent; ``metric`` is the value of ``metricType``, the rest are context.

    On the headline board, rows awaiting forward results come after every ranked row, with
    ``rank`` and ``metric`` null.
    """

    rank: int | None = Field(description="1-based and consecutive; null while awaiting")
    status: RowStatus
    agent_id: str
    agent_name: str
    user_id: str = Field(description="The owner's display name")
    metric: float | None = Field(description="The ranked value; null while awaiting")
    metric_type: Metric
    session_id: str = Field(description="The standard evaluation or paper-trading session")
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
    in_sample_sharpe: float | None = Field(
        description="Headline: the standard evaluation's Sharpe (null on other boards)"
    )
    forward_sharpe: float | None = Field(
        description="Headline: the Sharpe over bars dated after submission (null elsewhere)"
    )
    forward_bars: int | None = Field(
        description="Headline: bars dated after the agent's submission recorded so far"
    )
    first_forward_at: datetime | None = Field(description="Headline: the first forward bar")
    last_forward_at: datetime | None = Field(description="Headline: the last forward bar")


class LeaderboardOut(ApiModel):
    """A page of a board, best first (awaiting rows last)."""

    type: BoardType
    in_sample: bool = Field(
        description="True when the board ranks results on data dated at or before each agent's "
        "submission (the backtest board): such results can be memorised"
    )
    leaderboard: list[LeaderboardRow]
    updated_at: datetime = Field(alias="updated_at", description="When this data was last changed")
    source: Literal["cache", "database"]


class RankOut(ApiModel):
    """Where one agent stands on one board."""

    agent_id: str
    status: RowStatus
    rank: int | None = Field(description="Null while the agent awaits forward results")
    score: float | None = Field(description="The agent's value of metricType; null while awaiting")
    total: int = Field(description="How many agents the board ranks")
    type: BoardType
    in_sample: bool = Field(description="True on the backtest board (see LeaderboardOut)")
    metric_type: Metric
    timeframe: Timeframe
    source: Literal["cache", "database"]
