"""Bars and timesteps: what the market shows at one moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

EXCHANGE_TZ = "America/New_York"
"""The exchange's time zone: a bar's session date is its date there (daily bars sit at midnight)."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar of one symbol."""

    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Step:
    """One timestep: the bars of every symbol that traded at ``ts`` (timezone-aware UTC)."""

    ts: datetime
    bars: Mapping[str, Bar]
