"""A deterministic synthetic demo universe: geometric Brownian motion, weekdays only.

Bars are stamped at midnight New York time (in UTC) like the real daily data, so synthetic and
real symbols line up. They are stored with ``source="synthetic"``: everything computed on them is
labelled ``dataSource: "synthetic"`` and never ranked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import date

import numpy as np
import pandas as pd

from farm.marketdata.store import BarStore, SymbolData, SymbolInfo

DEMO_SYMBOLS = ("SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM")
DEMO_START = date(2020, 7, 27)
DEMO_END = date(2025, 4, 4)
DEFAULT_SEED = 20200727

# Start price, annual drift, annual volatility: roughly each symbol's character in 2020.
_PROFILES = {
    "SPY": (320.0, 0.10, 0.18),
    "QQQ": (260.0, 0.12, 0.24),
    "AAPL": (95.0, 0.15, 0.30),
    "MSFT": (200.0, 0.14, 0.28),
    "GOOGL": (75.0, 0.12, 0.32),
    "AMZN": (150.0, 0.08, 0.35),
    "TSLA": (90.0, 0.20, 0.65),
    "NVDA": (11.0, 0.45, 0.55),
    "META": (230.0, 0.10, 0.45),
    "JPM": (100.0, 0.10, 0.28),
}
_DT = 1.0 / 252.0


def _symbol_key(symbol: str) -> int:
    """A stable 64-bit number per symbol (``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(symbol.encode()).digest()[:8], "big")


def trading_days(start: date, end: date) -> pd.DatetimeIndex:
    """Weekdays from ``start`` to ``end`` inclusive, at midnight New York time, in UTC."""
    days = pd.bdate_range(start, end)
    return days.tz_localize("America/New_York").tz_convert("UTC").as_unit("us")


def generate_bars(
    symbol: str, start: date = DEMO_START, end: date = DEMO_END, seed: int = DEFAULT_SEED
) -> pd.DataFrame:
    """Daily bars of one symbol: the same ``(symbol, start, end, seed)`` gives the same bars.

    Close-to-close log returns are GBM; each day's return is split into an overnight gap
    (open vs the previous close) and an intraday move; high and low extend beyond open and
    close; prices are rounded to cents, volumes to whole shares.
    """
    rng = np.random.default_rng([seed, _symbol_key(symbol)])
    price, mu, sigma = _PROFILES.get(symbol, (20.0 + _symbol_key(symbol) % 280, 0.06, 0.30))
    index = trading_days(start, end)
    n = len(index)
    step = sigma * np.sqrt(_DT)
    gap = rng.normal(0.0, 0.3 * step, n)
    move = rng.normal((mu - sigma**2 / 2) * _DT, np.sqrt(1 - 0.3**2) * step, n)
    close = price * np.exp(np.cumsum(gap + move))
    open_ = close * np.exp(-move)
    wick_up = np.exp(np.abs(rng.normal(0.0, 0.5 * step, n)))
    wick_down = np.exp(-np.abs(rng.normal(0.0, 0.5 * step, n)))
    high = np.maximum(open_, close) * wick_up
    low = np.minimum(open_, close) * wick_down
    volume = np.round(rng.lognormal(np.log(2e7 / np.sqrt(price)), 0.35, n))
    close = np.round(close, 2)
    return pd.DataFrame(
        {
            "open": np.round(open_, 2),
            "high": np.round(high, 2),
            "low": np.round(low, 2),
            "close": close,
            "volume": volume,
            "adj_close": close,
        },
        index=pd.DatetimeIndex(index, name="timestamp"),
    )


def write_demo_universe(
    store: BarStore,
    symbols: Sequence[str] = DEMO_SYMBOLS,
    start: date = DEMO_START,
    end: date = DEMO_END,
    seed: int = DEFAULT_SEED,
) -> list[SymbolInfo]:
    """Generate ``symbols`` and store them with ``source="synthetic"``."""
    items = [
        SymbolData(s.upper(), generate_bars(s.upper(), start, end, seed), "synthetic")
        for s in symbols
    ]
    return store.write_many(items)
