"""Series shaped for the pages: equity sparklines (SVG points, cached) and chart points."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import suppress
from datetime import date, datetime
from typing import Any

from sqlalchemy import select

from farm.backtest.results import read_page
from farm.backtest.schemas import BacktestResults, EquityPoint, TradeOut
from farm.errors import InvalidInput
from farm.marketdata.store import BarStore
from farm.storage.artifacts import ArtifactStore
from farm.storage.db import Database
from farm.storage.models import BacktestSession, PaperEquity

SPARK_WIDTH = 120
SPARK_HEIGHT = 28
SPARK_POINTS = 60
CHART_POINTS = 1500
"""At most this many points per chart series (a longer series is thinned evenly)."""
WHOLE = 10**9
"""A page size that reads a stored series whole."""


def thin(values: Sequence[object], most: int) -> list[object]:
    """At most ``most`` items of ``values``, evenly spaced, the last one always kept."""
    if len(values) <= most:
        return list(values)
    step = len(values) / (most - 1)
    return [values[min(round(i * step), len(values) - 1)] for i in range(most - 1)] + [values[-1]]


def polyline(values: Sequence[float]) -> str:
    """SVG ``points`` drawing ``values`` left to right in a sparkline box."""
    shown = [float(v) for v in thin(values, SPARK_POINTS)]  # type: ignore[arg-type]
    if len(shown) < 2:
        return ""
    low, high = min(shown), max(shown)
    span = (high - low) or 1.0
    dx = SPARK_WIDTH / (len(shown) - 1)
    return " ".join(
        f"{i * dx:.1f},{SPARK_HEIGHT - 1 - (v - low) / span * (SPARK_HEIGHT - 2):.1f}"
        for i, v in enumerate(shown)
    )


def chart_time(ts: datetime) -> int:
    """A chart's time axis value: UTC seconds."""
    return int(ts.timestamp())


class Sparklines:
    """Equity sparklines of ranked sessions: a completed backtest's (read once from its
    stored series, then cached: it never changes) or a paper session's (read each time)."""

    def __init__(self, db: Database, artifacts: ArtifactStore, size: int = 1024) -> None:
        self._db = db
        self._artifacts = artifacts
        self._size = size
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def lines(self, session_ids: Iterable[str]) -> dict[str, str]:
        """Session id -> SVG points (sessions without a stored series are left out)."""
        wanted = list(dict.fromkeys(session_ids))
        with self._lock:
            found = {s: self._cache[s] for s in wanted if s in self._cache}
        missing = [s for s in wanted if s not in found]
        if missing:
            backtests, paper = self._load(missing)
            with self._lock:
                self._cache.update(backtests)
                while len(self._cache) > self._size:
                    self._cache.popitem(last=False)
            found.update(backtests)
            found.update(paper)
        return found

    def _load(self, session_ids: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        with self._db.transaction() as session:
            keys: dict[str, str] = dict(
                session.execute(  # type: ignore[arg-type]
                    select(BacktestSession.id, BacktestSession.results_key).where(
                        BacktestSession.id.in_(session_ids),
                        BacktestSession.results_key.is_not(None),
                    )
                ).all()
            )
            paper: dict[str, list[float]] = {}
            for sid, equity in session.execute(
                select(PaperEquity.session_id, PaperEquity.equity)
                .where(PaperEquity.session_id.in_([s for s in session_ids if s not in keys]))
                .order_by(PaperEquity.session_id, PaperEquity.seq)
            ):
                paper.setdefault(sid, []).append(equity)
        backtests = {}
        for sid, key in keys.items():
            rows, _ = read_page(self._artifacts, key, "equity", limit=WHOLE, offset=0)
            backtests[sid] = polyline([row["equity"] for row in rows])
        return backtests, {sid: polyline(values) for sid, values in paper.items()}


def price_points(
    bars: BarStore, symbol: str, start: date, end: date
) -> list[dict[str, float | int]]:
    """Daily closes of ``symbol`` over the dates, as chart points (thinned)."""
    frame = bars.frame(symbol, start, end)
    points = [
        {"time": chart_time(ts.to_pydatetime()), "value": float(close)}
        for ts, close in zip(frame.index, frame["close"], strict=True)
    ]
    return thin(points, CHART_POINTS)  # type: ignore[return-value]


MAX_MARKERS = 400
"""Trades drawn on the price chart (the first ones of the chosen symbol)."""


def backtest_charts(
    bars: BarStore,
    results: BacktestResults,
    equity: Sequence[EquityPoint],
    trades: Sequence[TradeOut],
    symbol: str,
) -> dict[str, Any]:
    """The series of a completed backtest's charts: equity, the benchmark bought and held with
    the same starting value, drawdown (negative percent) and the chosen symbol's closes with
    its trades as markers."""
    used = results.data_range
    start = used.start_date if used else results.parameters.start_date
    end = used.end_date if used else results.parameters.end_date
    curve = [{"time": chart_time(p.timestamp), "value": p.equity} for p in equity]
    drawdown = [{"time": chart_time(p.timestamp), "value": -100 * p.drawdown} for p in equity]
    benchmark: list[dict[str, float | int]] = []
    with suppress(InvalidInput):
        closes = price_points(bars, results.parameters.benchmark, start, end)
        if closes and curve:
            scale = float(curve[0]["value"]) / float(closes[0]["value"])
            benchmark = [{"time": c["time"], "value": c["value"] * scale} for c in closes]
    return {
        "equity": thin(curve, CHART_POINTS),
        "benchmark": benchmark,
        "benchmarkName": results.parameters.benchmark,
        "drawdown": thin(drawdown, CHART_POINTS),
        "price": price_points(bars, symbol, start, end),
        "markers": trade_markers(trades, symbol),
    }


def trade_markers(trades: Iterable[TradeOut], symbol: str) -> list[dict[str, Any]]:
    """Entry and exit markers of ``symbol``'s trades, in time order."""
    markers: list[dict[str, Any]] = []
    for trade in (t for t in trades if t.symbol == symbol):
        if len(markers) >= 2 * MAX_MARKERS:
            break
        long = trade.size > 0
        markers.append(
            {
                "time": chart_time(trade.entry_time),
                "position": "belowBar" if long else "aboveBar",
                "shape": "arrowUp" if long else "arrowDown",
                "color": "#067647" if long else "#b42318",
                "text": "buy" if long else "short",
            }
        )
        markers.append(
            {
                "time": chart_time(trade.exit_time),
                "position": "aboveBar" if long else "belowBar",
                "shape": "circle",
                "color": "#067647" if trade.pnl_net >= 0 else "#b42318",
                "text": f"{'+' if trade.pnl_net >= 0 else ''}{trade.pnl_net:,.0f}",
            }
        )
    return sorted(markers, key=lambda m: int(m["time"]))
