"""The synthetic demo universe: deterministic, plausible, labelled."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from farm.marketdata.store import BarStore
from farm.marketdata.synthetic import (
    DEMO_END,
    DEMO_START,
    DEMO_SYMBOLS,
    generate_bars,
    write_demo_universe,
)


def test_same_seed_same_bars_other_seed_other_bars() -> None:
    a = generate_bars("AAPL")
    pd.testing.assert_frame_equal(a, generate_bars("AAPL"))
    assert not a.equals(generate_bars("AAPL", seed=1))
    assert not a["close"].equals(generate_bars("MSFT")["close"])


def test_bars_are_weekdays_at_new_york_midnight_with_sane_ohlc() -> None:
    frame = generate_bars("TSLA")
    assert frame.index[0] == pd.Timestamp("2020-07-27 04:00", tz="UTC")
    assert frame.index[-1] == pd.Timestamp("2025-04-04 04:00", tz="UTC")
    local = pd.DatetimeIndex(frame.index).tz_convert("America/New_York")
    assert (local.day_of_week < 5).all()
    assert ((local.hour == 0) & (local.minute == 0)).all()
    assert (frame["low"] > 0).all()
    assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
    assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
    assert (frame["volume"] > 0).all()
    daily = np.log(frame["close"]).diff().dropna()
    assert 0.3 < daily.std() * np.sqrt(252) < 1.0  # TSLA is the volatile one


def test_the_demo_universe_is_stored_as_synthetic(store: BarStore) -> None:
    infos = write_demo_universe(store)
    assert sorted(i.symbol for i in infos) == sorted(DEMO_SYMBOLS)
    assert {i.source for i in store.symbols()} == {"synthetic"}
    assert store.source_of(["SPY", "AAPL"]) == "synthetic"
    assert store.coverage(DEMO_SYMBOLS, DEMO_START, DEMO_END).ok
    steps = list(store.steps(DEMO_SYMBOLS, date(2024, 1, 1), date(2024, 1, 31)))
    assert len(steps) == 23  # weekdays only; no holiday calendar
    assert all(len(s.bars) == len(DEMO_SYMBOLS) for s in steps)
