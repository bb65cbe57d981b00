"""Test support: real bars as host Steps and as pandas frames for plain Backtrader runs."""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from farm.core.bars import Bar, Step

AGENTS = Path(__file__).parent / "agents"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
STANDARD = ("SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM")


class Market:
    """Reads daily CSVs once and serves them as Steps or DataFrames."""

    def __init__(self, daily: Path) -> None:
        self.daily = daily
        self._rows: dict[str, list[tuple[datetime, Bar]]] = {}

    def symbols(self, n: int) -> tuple[str, ...]:
        """The first ``n`` symbols by name."""
        return tuple(sorted(p.stem for p in self.daily.glob("*.csv"))[:n])

    def rows(self, symbol: str) -> list[tuple[datetime, Bar]]:
        if symbol not in self._rows:
            out = []
            with (self.daily / f"{symbol}.csv").open(newline="") as fh:
                for r in csv.DictReader(fh):
                    ts = datetime.fromisoformat(r["Date"]).astimezone(UTC)
                    bar = Bar(
                        float(r["Open"]),
                        float(r["High"]),
                        float(r["Low"]),
                        float(r["Close"]),
                        float(r["Volume"]),
                    )
                    out.append((ts, bar))
            self._rows[symbol] = out
        return self._rows[symbol]

    def steps(self, symbols: tuple[str, ...]) -> list[Step]:
        """One Step per timestamp, holding the bars of the symbols that traded then."""
        by_ts: dict[datetime, dict[str, Bar]] = defaultdict(dict)
        for sym in symbols:
            for ts, bar in self.rows(sym):
                by_ts[ts][sym] = bar
        return [Step(ts, by_ts[ts]) for ts in sorted(by_ts)]

    def frame(self, symbol: str) -> pd.DataFrame:
        """The symbol's bars indexed by naive UTC datetimes (as Backtrader feeds expect)."""
        rows = self.rows(symbol)
        df = pd.DataFrame(
            [(b.open, b.high, b.low, b.close, b.volume) for _, b in rows],
            columns=["open", "high", "low", "close", "volume"],
            index=pd.DatetimeIndex([ts.replace(tzinfo=None) for ts, _ in rows], name="datetime"),
        )
        return df
