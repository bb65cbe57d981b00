"""Forward results: an agent's bars dated after its submission, and their metrics (no IO).

The paper-trading loop reports each bar of a session as a :class:`ForwardBar` (the account's
equity before and after it); :func:`farm.leaderboard.service.record_forward_result` keeps those
dated after the agent's submission, and :func:`forward_metrics` turns the agent's stored bars
into the headline board's forward-only metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from itertools import groupby

from farm.core.metrics import (
    annual_return,
    deflated_sharpe_ratio,
    drawdown,
    probabilistic_sharpe_ratio,
    sharpe_ratio,
    sortino_ratio,
)

TOTAL_LOSS = -1.0


@dataclass(frozen=True, slots=True)
class ForwardBar:
    """One bar of a paper session: its time and the account's equity before and after it.

    ``start_equity`` is the equity at the session's previous bar (its initial equity for the
    first bar), ``end_equity`` the equity marked at this bar's close.
    """

    time: datetime
    start_equity: float
    end_equity: float

    @property
    def ret(self) -> float:
        """The bar's return; a non-finite or non-positive equity is a total loss (bankrupt)."""
        if not self._solvent():
            return TOTAL_LOSS
        return self.end_equity / self.start_equity - 1

    @property
    def pnl(self) -> float:
        """The bar's profit in money (0 when the equity is not a finite number)."""
        if not self._solvent():
            start = self.start_equity
            return -start if math.isfinite(start) and start > 0 else 0.0
        return self.end_equity - self.start_equity

    def _solvent(self) -> bool:
        start, end = self.start_equity, self.end_equity
        return math.isfinite(start) and math.isfinite(end) and start > 0 and end > 0


@dataclass(frozen=True, slots=True)
class ForwardRecorded:
    """What :func:`~farm.leaderboard.service.record_forward_result` kept of a call's bars."""

    accepted: int
    refused: int = 0
    """Bars dated at or before the agent's submission, or for a deleted or unknown agent."""
    duplicate: int = 0
    """Bar times the agent's forward record holds already (retries, a second session)."""


@dataclass(frozen=True, slots=True)
class StoredBar:
    """A forward bar as stored: its time, return and profit."""

    time: datetime
    ret: float
    pnl: float


@dataclass(frozen=True, slots=True)
class ForwardMetrics:
    """Forward-only metrics of an agent (see docs/leaderboard.md for every formula)."""

    bars: int
    first_at: datetime | None
    last_at: datetime | None
    returns: float | None
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown: float | None
    total_pnl: float | None
    probabilistic_sharpe: float | None
    deflated_sharpe: float | None


def daily_forward_returns(bars: Sequence[StoredBar]) -> list[float]:
    """Bar returns compounded per UTC day (bars in time order): one return per day."""

    def day(bar: StoredBar) -> date:
        return bar.time.date()

    return [math.prod(1 + b.ret for b in group) - 1 for _, group in groupby(bars, key=day)]


def forward_metrics(
    bars: Sequence[StoredBar], n_trials: int, risk_free_rate: float = 0.0
) -> ForwardMetrics:
    """Metrics of an agent's forward bars (in time order), on their daily returns."""
    if not bars:
        return ForwardMetrics(0, None, None, None, None, None, None, None, None, None, None)
    daily = daily_forward_returns(bars)
    curve = [1.0]
    for r in daily:
        curve.append(curve[-1] * (1 + r))
    worst = drawdown(curve).max_drawdown
    cagr = annual_return(1.0, curve[-1], len(daily))
    calmar = cagr / worst if cagr is not None and worst else None
    return ForwardMetrics(
        bars=len(bars),
        first_at=bars[0].time,
        last_at=bars[-1].time,
        returns=_finite(curve[-1] - 1),
        sharpe=sharpe_ratio(daily, risk_free_rate),
        sortino=sortino_ratio(daily, risk_free_rate),
        calmar=_finite(calmar),
        max_drawdown=_finite(worst),
        total_pnl=_finite(math.fsum(b.pnl for b in bars)),
        probabilistic_sharpe=probabilistic_sharpe_ratio(daily),
        deflated_sharpe=deflated_sharpe_ratio(daily, n_trials),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
