"""Helpers shared by the market data tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

HEADER = "Date,Open,High,Low,Close,Adj Close,Volume"
WriteCsv = Callable[..., Path]


def good_rows(n: int = 5, start_day: int = 1, price: float = 10.0) -> list[str]:
    """``n`` valid daily rows in the shared data's format, from 2024-07-``start_day``."""
    rows = []
    for k in range(n):
        p = price + k
        day = start_day + k
        rows.append(
            f"2024-07-{day:02d} 04:00:00+00:00,{p},{p + 1},{p - 1},{p + 0.5},{p + 0.5},{1000 + k}"
        )
    return rows
