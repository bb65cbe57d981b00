"""Metrics: hand-computed references, Backtrader analyzer cross-checks, PSR/DSR (paper example)."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from statistics import NormalDist
from typing import Any

import backtrader as bt
import numpy as np
import pandas as pd
import pytest

from farm.core.metrics import (
    compute_metrics,
    daily_returns,
    deflated_sharpe_ratio,
    drawdown,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    psr_from_moments,
    sharpe_ratio,
    simple_returns,
    sortino_ratio,
    trade_stats,
)
from farm.core.orders import ClosedTrade

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def series(values: list[float]) -> list[tuple[datetime, float]]:
    return [(T0 + timedelta(days=i), v) for i, v in enumerate(values)]


def trade(pnl_net: float, bars: int = 1) -> ClosedTrade:
    return ClosedTrade("X", 1, T0, T0, 1.0, 1.0, pnl_net, pnl_net, 0.0, bars, 0, 0)


def test_equity_metrics_by_hand() -> None:
    # returns: +10%, -10%, 0%, +20%
    m = compute_metrics(series([100, 110, 99, 99, 118.8]), periods=4)
    mean = (0.1 - 0.1 + 0.0 + 0.2) / 4  # 0.05
    sd = math.sqrt(((0.05) ** 2 + 0.15**2 + 0.05**2 + 0.15**2) / 3)  # sample stdev
    assert (m.initial_value, m.final_value) == (100, 118.8)
    assert m.total_return == pytest.approx(0.188)
    assert m.annual_return == pytest.approx(0.188)  # 4 returns at 4 periods a year = 1 year
    assert m.annual_volatility == pytest.approx(sd * 2)
    assert m.sharpe_ratio == pytest.approx(2 * mean / sd)
    # downside deviation: sqrt((0 + 0.1^2 + 0 + 0) / 4) = 0.05
    assert m.sortino_ratio == pytest.approx(2 * mean / 0.05)
    # peak 110, trough 99: 10%, 11 money, two bars under water
    assert (m.max_drawdown, m.max_drawdown_money) == (pytest.approx(0.1), pytest.approx(11))
    assert m.max_drawdown_duration == 2
    assert m.calmar_ratio == pytest.approx(0.188 / 0.1)


def test_risk_free_rate_is_converted_per_period() -> None:
    rets = [0.01, -0.005, 0.02, 0.0, 0.003]
    rf = (1 + 0.05) ** (1 / 252) - 1
    excess = [r - rf for r in rets]
    expected = math.sqrt(252) * np.mean(excess) / np.std(excess, ddof=1)
    assert sharpe_ratio(rets, 0.05) == pytest.approx(expected)
    downside = math.sqrt(sum(min(x, 0) ** 2 for x in excess) / 5)
    assert sortino_ratio(rets, 0.05) == pytest.approx(math.sqrt(252) * np.mean(excess) / downside)


def test_trade_statistics_by_hand() -> None:
    pnls = [10, -5, 20, 30, -10, 0]
    s = trade_stats([trade(p, bars=i + 1) for i, p in enumerate(pnls)])
    assert (s.total, s.won, s.lost) == (6, 3, 2)  # the 0 trade is neither
    assert s.win_rate == 0.5
    assert (s.avg_win, s.avg_loss) == (20, -7.5)
    assert s.profit_factor == 60 / 15
    assert (s.longest_win_streak, s.longest_loss_streak) == (2, 1)
    assert s.avg_holding_bars == 3.5  # (1 + ... + 6) / 6
    mean = 45 / 6
    pstdev = math.sqrt(sum((p - mean) ** 2 for p in pnls) / 6)
    assert s.sqn == pytest.approx(math.sqrt(6) * mean / pstdev)


def test_degenerate_inputs_give_none_not_nan() -> None:
    m = compute_metrics(series([100, 100, 100]), [], exposure=[False, False, False])
    assert (m.sharpe_ratio, m.sortino_ratio, m.calmar_ratio) == (None, None, None)
    assert (m.win_rate, m.avg_win, m.avg_loss, m.profit_factor, m.sqn) == (None,) * 5
    assert m.avg_holding_bars is None
    assert (m.total_trades, m.max_drawdown, m.exposure, m.benchmark) == (0, 0.0, 0.0, None)
    only_wins = compute_metrics(series([100]), [trade(5), trade(5)])
    assert only_wins.profit_factor is None  # no losses
    assert only_wins.sqn is None  # zero dispersion
    assert only_wins.annual_return is None  # no period elapsed
    blown = compute_metrics(series([100, 50, 0, 0]))
    assert blown.total_return == -1.0
    for result in (m, only_wins, blown):
        json.dumps(result.as_json(), allow_nan=False)  # never NaN or infinity
    empty = compute_metrics([])  # degenerate, not an error
    assert (empty.initial_value, empty.final_value, empty.total_return) == (None, None, None)


def test_exposure_benchmark_alpha_beta() -> None:
    bench_rets = [0.01, -0.02, 0.03, 0.0, 0.015]
    closes = [200.0]
    values = [1000.0]
    for b in bench_rets:
        closes.append(closes[-1] * (1 + b))
        values.append(values[-1] * (1 + 2 * b + 0.001))  # beta 2, alpha 0.1% a period
    bench = series(closes)
    bench.insert(3, (T0 + timedelta(days=2, hours=1), closes[2]))  # a benchmark-only timestamp
    del bench[-1]  # and a strategy-only one at the end
    m = compute_metrics(
        series(values), exposure=[False, True, True, False, True, True], benchmark=bench
    )
    assert m.exposure == pytest.approx(4 / 6)
    assert m.beta == pytest.approx(2.0)
    assert m.alpha == pytest.approx(1.001**252 - 1)
    assert m.benchmark is not None
    assert m.as_json()["benchmark"]["total_return"] == m.benchmark.total_return
    assert m.benchmark.total_return == pytest.approx(closes[-2] / closes[0] - 1)
    assert m.benchmark.max_drawdown == pytest.approx(0.02)  # the -2% day
    bench_sharpe = sharpe_ratio(daily_returns(bench))  # the extra point is the same day
    assert m.benchmark.sharpe_ratio == pytest.approx(bench_sharpe)


def test_drawdown_duration_counts_bars_below_the_peak() -> None:
    dd = drawdown([10, 9, 8, 10, 11, 10.5, 10.9, 10.95, 12])
    assert dd.max_duration == 3  # 9, 8 under the peak 10; then 10.5, 10.9, 10.95 under 11
    assert dd.max_drawdown == pytest.approx(0.2)
    assert dd.max_drawdown_money == pytest.approx(2)


# --- Backtrader analyzers on real bars ---------------------------------------------------


class Recorded(bt.Strategy):  # type: ignore[misc]
    params = (("out", None),)

    def __init__(self) -> None:
        self.cross = [
            bt.ind.CrossOver(bt.ind.SMA(d, period=10), bt.ind.SMA(d, period=30)) for d in self.datas
        ]

    def prenext(self) -> None:
        self.p.out["values"].append(self.broker.getvalue())

    def next(self) -> None:
        self.p.out["values"].append(self.broker.getvalue())
        for d, x in zip(self.datas, self.cross, strict=True):
            if x[0] > 0:
                self.order_target_percent(d, target=0.3)
            elif x[0] < 0:
                self.order_target_percent(d, target=0.0)

    def notify_trade(self, t: Any) -> None:
        if t.isclosed:
            self.p.out["trades"].append(
                ClosedTrade(
                    t.data._name,
                    0,
                    T0,
                    T0,
                    t.price,
                    0,
                    t.pnl,
                    t.pnlcomm,
                    t.commission,
                    t.barlen,
                    0,
                    0,
                )
            )


def test_cross_check_with_backtrader_analyzers(shared_data: Path) -> None:
    cerebro = bt.Cerebro(preload=False, runonce=False, stdstats=False)
    for sym in ("AAPL", "AMZN", "CSX", "AEP"):
        df = pd.read_csv(shared_data / "daily" / f"{sym}.csv")
        df.index = pd.to_datetime(df.pop("Date"), utc=True).dt.tz_convert(None)
        df = df.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]]
        cerebro.adddata(bt.feeds.PandasData(dataname=df, openinterest=None), name=sym)
    out: dict[str, list[Any]] = {"values": [], "trades": []}
    cerebro.addstrategy(Recorded, out=out)
    cerebro.broker.setcash(100_000.0)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addanalyzer(bt.analyzers.DrawDown, _name="dd")
    cerebro.addanalyzer(bt.analyzers.SQN, _name="sqn")
    cerebro.addanalyzer(bt.analyzers.TradeAnalyzer, _name="ta")
    cerebro.addanalyzer(
        bt.analyzers.SharpeRatio,
        _name="sharpe",
        timeframe=bt.TimeFrame.Days,
        riskfreerate=0.02,
        annualize=True,
        stddev_sample=True,
    )
    (strat,) = cerebro.run()
    res = {
        name: strat.analyzers.getbyname(name).get_analysis()
        for name in ("dd", "sqn", "ta", "sharpe")
    }

    # Backtrader's daily returns start from the initial cash: the equity's first point.
    m = compute_metrics(series([100_000.0, *out["values"]]), out["trades"], risk_free_rate=0.02)
    assert m.max_drawdown * 100 == pytest.approx(res["dd"].max.drawdown, rel=1e-12)
    assert m.max_drawdown_money == pytest.approx(res["dd"].max.moneydown, rel=1e-12)
    assert m.max_drawdown_duration == res["dd"].max.len
    assert m.sharpe_ratio == pytest.approx(res["sharpe"]["sharperatio"], rel=1e-9)
    assert m.sqn == pytest.approx(res["sqn"].sqn, rel=1e-12)
    ta = res["ta"]
    assert all(t.pnl_net != 0 for t in out["trades"])  # Backtrader counts 0 as a win
    assert (m.total_trades, m.winning_trades, m.losing_trades) == (
        ta.total.closed,
        ta.won.total,
        ta.lost.total,
    )
    assert (m.longest_win_streak, m.longest_loss_streak) == (
        ta.streak.won.longest,
        ta.streak.lost.longest,
    )
    assert m.avg_win == pytest.approx(ta.won.pnl.average)
    assert m.avg_loss == pytest.approx(ta.lost.pnl.average)
    assert m.avg_holding_bars == pytest.approx(ta.len.average)
    assert m.total_trades > 30


# --- probabilistic and deflated Sharpe ---------------------------------------------------


def test_deflated_sharpe_paper_example() -> None:
    # Bailey & Lopez de Prado (2014), section 5: SR 2.5 annualised over 1250 daily returns,
    # skewness -3, kurtosis 10, N = 100 trials with annualised SR variance 0.5 (250 days a year).
    sr0 = expected_max_sharpe(100, 0.5 / 250)
    assert sr0 == pytest.approx(0.1132, abs=1e-4)
    dsr = psr_from_moments(2.5 / math.sqrt(250), sr0, 1250, -3.0, 10.0)
    assert dsr == pytest.approx(0.9004, abs=5e-4)
    assert expected_max_sharpe(1, 0.5) == 0.0


def independent_psr(r: np.ndarray, sr_star: float) -> float:
    m, s = r.mean(), r.std()  # population moments for skew and kurtosis
    sr = m / r.std(ddof=1)
    g3 = ((r - m) ** 3).mean() / s**3
    g4 = ((r - m) ** 4).mean() / s**4
    z = (sr - sr_star) * math.sqrt(len(r) - 1) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return 0.5 * math.erfc(-z / math.sqrt(2))


def test_psr_and_dsr_against_an_independent_formula() -> None:
    rng = random.Random(3)
    r = np.array(
        [rng.gauss(0.0008, 0.012) + (0.03 if rng.random() < 0.01 else 0) for _ in range(750)]
    )
    rets = r.tolist()
    for sr_star in (0.0, 0.02, 0.05):
        assert probabilistic_sharpe_ratio(rets, sr_star) == pytest.approx(
            independent_psr(r, sr_star), abs=1e-12
        )
    # DSR with a given variance: PSR at the expected maximum of 50 trials
    gamma = 0.5772156649015329
    n01 = NormalDist()
    sr0 = math.sqrt(0.001) * (
        (1 - gamma) * n01.inv_cdf(1 - 1 / 50) + gamma * n01.inv_cdf(1 - 1 / (50 * math.e))
    )
    assert deflated_sharpe_ratio(rets, 50, 0.001) == pytest.approx(
        independent_psr(r, sr0), abs=1e-12
    )
    # one trial: no deflation
    assert deflated_sharpe_ratio(rets, 1) == pytest.approx(probabilistic_sharpe_ratio(rets))
    # unknown variance: the Sharpe estimator's own variance; more trials deflate more
    dsrs = [deflated_sharpe_ratio(rets, n) for n in (1, 10, 100, 1000)]
    assert all(a is not None and b is not None and a > b for a, b in pairwise(dsrs))
    assert probabilistic_sharpe_ratio([0.01, 0.01, 0.01]) is None
    assert probabilistic_sharpe_ratio([0.01, 0.02]) is None


def test_simple_and_daily_returns() -> None:
    assert simple_returns([100, 110, 99]) == pytest.approx([0.1, -0.1])
    assert simple_returns([5]) == []
    assert daily_returns(series([100, 110, 99])) == pytest.approx([0.1, -0.1])


# -- never raising, never non-finite (issue 8) ---------------------------------------------------

EXTREMES = [
    0.0, -0.0, 5e-324, 1e-308, 1e-10, 1.0, 100.0, 1e10, 1e154, 1e200, 1e308,
    1.7976931348623157e308, -1.0, -1e10, -1e200, -1e308, math.nan, math.inf, -math.inf,
]  # fmt: skip


def extreme(rng: random.Random) -> float:
    """A float from the edges of the double range, or a random magnitude of either sign."""
    if rng.random() < 0.6:
        return rng.choice(EXTREMES)
    return rng.choice((-1, 1)) * 10 ** rng.uniform(-320, 308)


def assert_finite_or_none(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert_finite_or_none(v, f"{where}.{k}")
    elif isinstance(value, float):
        assert math.isfinite(value), where


def test_the_reported_short_of_a_billion_shares_gets_metrics_not_an_overflow() -> None:
    # sell(size=1e9) of a ~$400 stock from $100k: the equity swings by hundreds of billions
    values = [100_000.0, -4.1e11, 3.9e11, -2.05e11, 1e5, -2.050911e11]
    bench = [400.0, 401.0, 399.0, 402.0, 398.0, 400.5]
    m = compute_metrics(series(values), benchmark=series(bench))
    assert_finite_or_none(m.as_json(), "metrics")
    json.dumps(m.as_json(), allow_nan=False)
    assert m.total_return == pytest.approx(-2.050911e6)


@pytest.mark.parametrize("seed", range(40))
def test_metrics_never_raise_and_are_finite_or_none_on_extreme_inputs(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([0, 1, 2, 3, rng.randint(4, 60)])
    values = [extreme(rng) for _ in range(n)]
    if n and rng.random() < 0.5:  # a sane start, then the blow-up
        values[0] = 100_000.0
    trades = [
        ClosedTrade("X", extreme(rng), T0, T0, 1.0, 1.0, extreme(rng), extreme(rng), 0.0, 3, 0, 0)
        for _ in range(rng.randint(0, 8))
    ]
    bench = [extreme(rng) for _ in range(rng.randint(0, n + 2))]
    m = compute_metrics(
        series(values),
        trades,
        exposure=[rng.random() < 0.5 for _ in range(n)],
        benchmark=series(bench) if bench else None,
        risk_free_rate=rng.choice([0.0, 0.05]),
    )
    assert_finite_or_none(m.as_json(), "metrics")
    json.dumps(m.as_json(), allow_nan=False)  # no NaN or Infinity reaches JSON
    rets = daily_returns(series(values))
    for value in (
        probabilistic_sharpe_ratio(rets),
        deflated_sharpe_ratio(rets, rng.randint(1, 100)),
        sharpe_ratio(rets),
        sortino_ratio(rets),
    ):
        assert value is None or math.isfinite(value)


@pytest.mark.parametrize(
    "values",
    [
        [],
        [100.0],
        [100.0, 100.0, 100.0],  # zero variance
        [0.0, 0.0],
        [100.0, math.nan, 100.0],
        [100.0, math.inf],
        [1e308, 1.7976931348623157e308, 1e308],
        [5e-324, 1e308],
    ],
)
def test_degenerate_equity_gives_none_for_what_cannot_be_computed(values: list[float]) -> None:
    m = compute_metrics(series(values), benchmark=series([1e308, -1e308, 5e-324]))
    assert_finite_or_none(m.as_json(), "metrics")
    json.dumps(m.as_json(), allow_nan=False)
    if not values or not all(math.isfinite(v) for v in values):
        assert m.max_drawdown is None or not values
    if len(values) < 3:
        assert m.sharpe_ratio is None


def test_metrics_annualise_from_daily_equity_whatever_the_bar_size() -> None:
    """Hourly bars give the annual figures of the day-end equity: per-bar returns at 252 a year
    would multiply volatility by about sqrt(7) and compound a day's return seven times."""
    rng = random.Random(7)
    hours = [T0 + timedelta(days=d, hours=14 + h) for d in range(30) for h in range(7)]
    hourly = [(ts, 100.0 * (1 + rng.gauss(0.001, 0.01)) ** k) for k, ts in enumerate(hours)]
    day_ends = [hourly[0], *(p for p in hourly if p[0].hour == 20)]
    on_hours = compute_metrics(hourly, benchmark=hourly)
    on_days = compute_metrics(day_ends, benchmark=day_ends)
    for name in ("annual_return", "annual_volatility", "sharpe_ratio", "sortino_ratio"):
        assert getattr(on_hours, name) == pytest.approx(getattr(on_days, name)), name
    assert on_hours.benchmark == on_days.benchmark
    assert daily_returns(hourly) == pytest.approx(simple_returns([v for _, v in day_ends]))
    # drawdowns still see every bar
    assert on_hours.max_drawdown == drawdown([v for _, v in hourly]).max_drawdown


def test_daily_bars_at_new_york_midnight_are_one_point_per_day() -> None:
    """The shipped bars sit at 04:00 or 05:00 UTC: each is its own session date."""
    days = [datetime(2020, 7, 27, 4, tzinfo=UTC), datetime(2020, 12, 1, 5, tzinfo=UTC)]
    equity = [(days[0], 100.0), (days[1], 110.0)]
    assert daily_returns(equity) == pytest.approx([0.1])
    assert (
        compute_metrics(equity).annual_return == compute_metrics(series([100, 110])).annual_return
    )
