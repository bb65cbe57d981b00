"""Performance metrics from the host ledger's equity and closed trades (DESIGN section 6).

Pure functions, no IO. Conventions used throughout:

- ``r_t = V_t / V_{t-1} - 1`` are the daily simple returns of the equity series, whatever the
  bar size: a series is first reduced to its last value of each session date (in
  ``EXCHANGE_TZ``), keeping its first (initial) value (:func:`daily_points`); on daily bars that
  is the series itself. ``n`` is their count (one less than the number of daily points).
  Drawdowns use every step.
- The annual risk-free rate ``rf`` is converted to a per-period rate ``rf_p = (1 + rf)^(1/P) - 1``
  with ``P = periods`` (252), as Backtrader's ``SharpeRatio`` does; excess returns are
  ``x_t = r_t - rf_p``.
- Standard deviations of returns are sample ones (divisor ``n - 1``).
- Anything that cannot be computed or is not finite (no trades, zero volatility, too few points,
  a non-finite or overflowing input) is ``None``, never NaN or infinity, so every result can go
  into JSON as is. No input of floats makes these functions raise: an exception here is a bug.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import pairwise
from statistics import NormalDist, fmean
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from farm.core.bars import EXCHANGE_TZ
from farm.core.orders import ClosedTrade

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()
_EXCHANGE = ZoneInfo(EXCHANGE_TZ)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BenchmarkMetrics:
    """The same headline numbers for a buy-and-hold benchmark (its close series)."""

    total_return: float | None
    annual_return: float | None
    sharpe_ratio: float | None
    max_drawdown: float | None


@dataclass(frozen=True, slots=True)
class Metrics:
    """Everything DESIGN section 6 lists; see :func:`compute_metrics` for each formula."""

    initial_value: float | None
    final_value: float | None
    total_return: float | None
    annual_return: float | None
    annual_volatility: float | None
    sharpe_ratio: float | None
    sortino_ratio: float | None
    calmar_ratio: float | None
    max_drawdown: float | None
    max_drawdown_money: float | None
    max_drawdown_duration: int
    total_trades: int
    winning_trades: int
    losing_trades: int
    win_rate: float | None
    avg_win: float | None
    avg_loss: float | None
    profit_factor: float | None
    longest_win_streak: int
    longest_loss_streak: int
    avg_holding_bars: float | None
    sqn: float | None
    exposure: float | None
    benchmark: BenchmarkMetrics | None
    alpha: float | None
    beta: float | None

    def as_json(self) -> dict[str, Any]:
        """A plain dict (the benchmark nested), ready for JSON: every float is finite."""
        return asdict(self)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _div(a: float, b: float) -> float | None:
    return _finite(a / b) if b else None


def _mean(xs: Sequence[float]) -> float:
    """``fmean``, but NaN where it would raise (an overflowing or an ``inf - inf`` sum)."""
    try:
        return fmean(xs)
    except (OverflowError, ValueError):
        return math.nan


def _pow(base: float, exp: float) -> float:
    """``base ** exp`` as a real number: infinity on overflow, NaN for a negative base under a
    fractional power (which Python would make complex)."""
    if base < 0 and not float(exp).is_integer():
        return math.nan
    try:
        return float(base**exp)
    except OverflowError:
        return math.inf
    except ZeroDivisionError:  # 0.0 to a negative power
        return math.inf


def simple_returns(values: Sequence[float]) -> list[float]:
    """``r_t = V_t / V_{t-1} - 1`` for consecutive values (a zero previous value gives NaN)."""
    return [b / a - 1 if a else math.nan for a, b in pairwise(values)]


def daily_points(series: Sequence[tuple[datetime, T]]) -> list[tuple[datetime, T]]:
    """The last point of each session date (in ``EXCHANGE_TZ``), after the first point when it
    is not the last of its date (so the initial value stays the start)."""
    last: dict[object, tuple[datetime, T]] = {}
    for point in series:
        last[point[0].astimezone(_EXCHANGE).date()] = point
    points = list(last.values())
    if series and points[0] is not series[0]:
        points.insert(0, series[0])
    return points


def daily_returns(equity: Sequence[tuple[datetime, float]]) -> list[float]:
    """Daily simple returns of an equity series (input for PSR, DSR and rankings)."""
    return simple_returns([v for _, v in daily_points(equity)])


def _per_period_rate(annual: float, periods: int) -> float:
    return _pow(1 + annual, 1 / periods) - 1


def sharpe_ratio(
    returns: Sequence[float], risk_free_rate: float = 0.0, periods: int = 252
) -> float | None:
    """Annualised Sharpe: ``sqrt(P) * mean(x) / stdev(x)`` (sample stdev of excess returns)."""
    if len(returns) < 2:
        return None
    rf = _per_period_rate(risk_free_rate, periods)
    excess = [r - rf for r in returns]
    sd = _stdev(excess)
    return _div(math.sqrt(periods) * _mean(excess), sd)


def sortino_ratio(
    returns: Sequence[float], risk_free_rate: float = 0.0, periods: int = 252
) -> float | None:
    """Annualised Sortino: ``sqrt(P) * mean(x) / sqrt(mean(min(x, 0)^2))`` over all periods.

    The denominator is the downside deviation below the risk-free target (Sortino and Price),
    averaged over every period, not only the losing ones.
    """
    if not returns:
        return None
    rf = _per_period_rate(risk_free_rate, periods)
    excess = [r - rf for r in returns]
    downside = math.sqrt(_mean([min(x, 0.0) * min(x, 0.0) for x in excess]))
    return _div(math.sqrt(periods) * _mean(excess), downside)


def annual_return(initial: float, final: float, n: int, periods: int = 252) -> float | None:
    """CAGR over ``n`` periods: ``(final / initial)^(P / n) - 1``."""
    if n <= 0 or not initial > 0 or not final >= 0:
        return None
    return _finite(_pow(final / initial, periods / n) - 1)


@dataclass(frozen=True, slots=True)
class Drawdown:
    """Worst drawdown of a value series (Backtrader's ``DrawDown`` analyzer ``max`` fields)."""

    max_drawdown: float | None
    max_drawdown_money: float | None
    max_duration: int


def drawdown(values: Sequence[float]) -> Drawdown:
    """Drawdowns against the running peak ``M_t = max(V_0..V_t)``.

    ``max_drawdown = max((M_t - V_t) / M_t)`` (a fraction), ``max_drawdown_money =
    max(M_t - V_t)`` (each maximised on its own), ``max_duration`` the longest run of consecutive
    periods with ``V_t < M_t`` (in bars). A non-finite value makes the first two None.
    """
    if not all(math.isfinite(v) for v in values):
        return Drawdown(None, None, 0)
    peak = -math.inf
    worst = worst_money = 0.0
    run = longest = 0
    for v in values:
        peak = max(peak, v)
        down = peak - v
        worst_money = max(worst_money, down)
        if peak > 0:
            worst = max(worst, down / peak)
        run = run + 1 if down else 0
        longest = max(longest, run)
    return Drawdown(_finite(worst), _finite(worst_money), longest)


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Statistics of closed trades, on ``pnl_net`` (Backtrader's ``pnlcomm``)."""

    total: int
    won: int
    lost: int
    win_rate: float | None
    avg_win: float | None
    avg_loss: float | None
    profit_factor: float | None
    longest_win_streak: int
    longest_loss_streak: int
    avg_holding_bars: float | None
    sqn: float | None


def trade_stats(trades: Sequence[ClosedTrade]) -> TradeStats:
    """Trade statistics. A trade is won if ``pnl_net > 0``, lost if ``< 0`` (zero is neither).

    ``win_rate = won / total``; ``avg_win``/``avg_loss`` the mean ``pnl_net`` of won/lost trades
    (``avg_loss`` is negative); ``profit_factor = sum(wins) / -sum(losses)``; streaks are runs of
    consecutive won/lost trades in closing order; ``avg_holding_bars`` the mean ``bars_held``;
    ``sqn = sqrt(N) * mean(pnl_net) / pstdev(pnl_net)`` (Van Tharp, population stdev as in
    Backtrader's ``SQN`` analyzer; None for fewer than two trades).
    """
    pnls = [t.pnl_net for t in trades]
    wins = [p for p in pnls if p > 0]
    losses = [p for p in pnls if p < 0]
    streak_w = streak_l = best_w = best_l = 0
    for p in pnls:
        streak_w = streak_w + 1 if p > 0 else 0
        streak_l = streak_l + 1 if p < 0 else 0
        best_w, best_l = max(best_w, streak_w), max(best_l, streak_l)
    sqn = None
    if len(pnls) > 1:
        mean = _mean(pnls)
        sd = math.sqrt(_mean([(p - mean) * (p - mean) for p in pnls]))
        sqn = _div(math.sqrt(len(pnls)) * mean, sd)
    return TradeStats(
        total=len(pnls),
        won=len(wins),
        lost=len(losses),
        win_rate=len(wins) / len(pnls) if pnls else None,
        avg_win=_finite(_mean(wins)) if wins else None,
        avg_loss=_finite(_mean(losses)) if losses else None,
        profit_factor=_div(sum(wins), -sum(losses)) if losses else None,
        longest_win_streak=best_w,
        longest_loss_streak=best_l,
        avg_holding_bars=fmean([t.bars_held for t in trades]) if trades else None,
        sqn=sqn,
    )


def _stdev(xs: Sequence[float]) -> float:
    """Sample standard deviation (divisor n - 1); 0.0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    mean = _mean(xs)
    return math.sqrt(sum((x - mean) * (x - mean) for x in xs) / (len(xs) - 1))


def alpha_beta(
    returns: Sequence[float],
    benchmark_returns: Sequence[float],
    risk_free_rate: float = 0.0,
    periods: int = 252,
) -> tuple[float | None, float | None]:
    """CAPM alpha (annualised) and beta of aligned per-period returns.

    ``beta = cov(x, b) / var(b)`` on excess returns ``x``, ``b`` (sample moments);
    ``alpha = (1 + mean(x - beta * b))^P - 1`` (Jensen's alpha, compounded as empyrical does).
    """
    n = len(returns)
    if n < 2 or n != len(benchmark_returns):
        return None, None
    rf = _per_period_rate(risk_free_rate, periods)
    xs = [r - rf for r in returns]
    bs = [b - rf for b in benchmark_returns]
    mx, mb = _mean(xs), _mean(bs)
    var_b = sum((b - mb) * (b - mb) for b in bs) / (n - 1)
    cov = sum((x - mx) * (b - mb) for x, b in zip(xs, bs, strict=True)) / (n - 1)
    beta = _div(cov, var_b)
    if beta is None:
        return None, None
    alpha = _finite(
        _pow(1 + _mean([x - beta * b for x, b in zip(xs, bs, strict=True)]), periods) - 1
    )
    return alpha, beta


def benchmark_metrics(
    closes: Sequence[float], risk_free_rate: float = 0.0, periods: int = 252
) -> BenchmarkMetrics:
    """Buy-and-hold of the benchmark over its close series (no costs)."""
    if len(closes) < 1 or not closes[0] > 0:
        return BenchmarkMetrics(None, None, None, None)
    rets = simple_returns(closes)
    return BenchmarkMetrics(
        total_return=_finite(closes[-1] / closes[0] - 1),
        annual_return=annual_return(closes[0], closes[-1], len(rets), periods),
        sharpe_ratio=sharpe_ratio(rets, risk_free_rate, periods),
        max_drawdown=drawdown(closes).max_drawdown,
    )


def _aligned_returns(
    equity: Sequence[tuple[datetime, float]], benchmark: Sequence[tuple[datetime, float]]
) -> tuple[list[float], list[float]]:
    """Daily returns of both series over the timestamps they share."""
    bench = dict(benchmark)
    common = daily_points([(ts, (v, bench[ts])) for ts, v in equity if ts in bench])
    return (
        simple_returns([v for _, (v, _) in common]),
        simple_returns([b for _, (_, b) in common]),
    )


def compute_metrics(
    equity: Sequence[tuple[datetime, float]],
    trades: Sequence[ClosedTrade] = (),
    *,
    exposure: Sequence[bool] | None = None,
    benchmark: Sequence[tuple[datetime, float]] | None = None,
    risk_free_rate: float = 0.0,
    periods: int = 252,
) -> Metrics:
    """All metrics of a run.

    ``equity`` is the ledger's per-step value (its first point is the initial value);
    ``exposure`` one flag per step, True when any position was held (``exposure`` = the fraction
    of such steps); ``benchmark`` the benchmark's closes, used for buy-and-hold metrics and, over
    the timestamps shared with ``equity``, for alpha and beta. ``total_return = V_n / V_0 - 1``,
    ``annual_return`` the CAGR over ``n`` periods, ``annual_volatility = stdev(r) * sqrt(P)``,
    ``calmar_ratio = annual_return / max_drawdown``; Sharpe, Sortino, drawdowns and trade
    statistics as in :func:`sharpe_ratio`, :func:`sortino_ratio`, :func:`drawdown` and
    :func:`trade_stats`. An empty ``equity`` gives None values (and zero counts).
    """
    values = [v for _, v in equity]
    initial, final = (values[0], values[-1]) if values else (math.nan, math.nan)
    daily = daily_points(equity)
    rets = simple_returns([v for _, v in daily])
    cagr = annual_return(initial, final, len(rets), periods)
    dd = drawdown(values)
    ts = trade_stats(trades)
    bench = alpha = beta = None
    if benchmark:
        bench_daily = daily_points(benchmark)
        bench = benchmark_metrics([c for _, c in bench_daily], risk_free_rate, periods)
        alpha, beta = alpha_beta(*_aligned_returns(equity, benchmark), risk_free_rate, periods)
    return Metrics(
        initial_value=_finite(initial),
        final_value=_finite(final),
        total_return=_finite(final / initial - 1) if initial > 0 else None,
        annual_return=cagr,
        annual_volatility=_finite(_stdev(rets) * math.sqrt(periods)) if len(rets) > 1 else None,
        sharpe_ratio=sharpe_ratio(rets, risk_free_rate, periods),
        sortino_ratio=sortino_ratio(rets, risk_free_rate, periods),
        calmar_ratio=_div(cagr, dd.max_drawdown)
        if cagr is not None and dd.max_drawdown is not None
        else None,
        max_drawdown=dd.max_drawdown,
        max_drawdown_money=dd.max_drawdown_money,
        max_drawdown_duration=dd.max_duration,
        total_trades=ts.total,
        winning_trades=ts.won,
        losing_trades=ts.lost,
        win_rate=ts.win_rate,
        avg_win=ts.avg_win,
        avg_loss=ts.avg_loss,
        profit_factor=ts.profit_factor,
        longest_win_streak=ts.longest_win_streak,
        longest_loss_streak=ts.longest_loss_streak,
        avg_holding_bars=ts.avg_holding_bars,
        sqn=ts.sqn,
        exposure=fmean([1.0 if e else 0.0 for e in exposure]) if exposure else None,
        benchmark=bench,
        alpha=alpha,
        beta=beta,
    )


def _moments(returns: Sequence[float]) -> tuple[float, float, float] | None:
    """Per-period Sharpe ``mean / sample stdev``, skewness ``m3 / m2^1.5`` and (non-excess)
    kurtosis ``m4 / m2^2`` with population central moments ``m_k``; None if undefined."""
    n = len(returns)
    if n < 3:
        return None
    mean = _mean(returns)
    dev = [r - mean for r in returns]
    m2 = _mean([d * d for d in dev])
    if not m2 or not math.isfinite(m2):
        return None
    m3 = _mean([d * d * d for d in dev])
    m4 = _mean([d * d * d * d for d in dev])
    sr = mean / math.sqrt(m2 * n / (n - 1))
    return sr, m3 / (m2 * math.sqrt(m2)), m4 / (m2 * m2)


def psr_from_moments(
    sr: float, benchmark_sr: float, n: int, skewness: float, kurtosis: float
) -> float | None:
    """Probabilistic Sharpe ratio (Bailey and Lopez de Prado 2012), from summary statistics.

    ``PSR = Phi((SR - SR*) * sqrt(n - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2))`` with
    per-period (not annualised) ``SR`` and ``SR*``, skewness ``g3`` and kurtosis ``g4`` (3 for
    normal returns), ``n`` the number of returns.
    """
    var = 1 - skewness * sr + (kurtosis - 1) / 4 * sr * sr
    if n < 2 or not var > 0:
        return None
    z = (sr - benchmark_sr) * math.sqrt(n - 1) / math.sqrt(var)
    return _finite(_NORMAL.cdf(z)) if math.isfinite(z) else None


def probabilistic_sharpe_ratio(returns: Sequence[float], benchmark_sr: float = 0.0) -> float | None:
    """Probability that the true per-period Sharpe exceeds ``benchmark_sr`` (per period).

    ``SR`` is ``mean / sample stdev`` of ``returns``; skewness and kurtosis use population
    moments (see :func:`psr_from_moments`). None for fewer than three returns or zero variance.
    """
    m = _moments(returns)
    if m is None:
        return None
    return psr_from_moments(m[0], benchmark_sr, len(returns), m[1], m[2])


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum of ``n_trials`` Sharpe ratios drawn around zero (Bailey, Lopez de Prado
    2014): ``sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))``, ``Z`` the standard normal
    quantile, ``g`` the Euler-Mascheroni constant. Zero for a single trial."""
    if n_trials < 1:
        raise ValueError("n_trials must be at least 1")
    if n_trials == 1:
        return 0.0
    z1 = _NORMAL.inv_cdf(1 - 1 / n_trials)
    z2 = _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1 - EULER_MASCHERONI) * z1 + EULER_MASCHERONI * z2)


def deflated_sharpe_ratio(
    returns: Sequence[float], n_trials: int, sr_variance: float | None = None
) -> float | None:
    """Deflated Sharpe ratio: the PSR against the Sharpe expected from the best of ``n_trials``.

    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(n_trials, V)``. ``sr_variance`` (``V``)
    is the variance of the per-period Sharpe ratios across the trials. When it is unknown
    (None), the estimator's own variance for these returns is used,
    ``V = (1 - g3 * SR + (g4 - 1) / 4 * SR^2) / (n - 1)``: every trial is taken to be noise
    with the same length and moments as this one.
    """
    m = _moments(returns)
    if m is None:
        return None
    sr, skew, kurt = m
    n = len(returns)
    if sr_variance is None:
        sr_variance = (1 - skew * sr + (kurt - 1) / 4 * sr * sr) / (n - 1)
    if not sr_variance >= 0:
        return None
    return psr_from_moments(sr, expected_max_sharpe(n_trials, sr_variance), n, skew, kurt)
