"""Server start: FARM_DATA_DIR is imported (fast when unchanged), else the synthetic demo."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from marketdata_helpers import WriteCsv, good_rows

from farm.config import Settings
from farm.marketdata.bootstrap import ensure_data
from farm.marketdata.store import BarStore

log = logging.getLogger("test.bootstrap")


def test_an_empty_store_without_data_dir_gets_the_synthetic_demo(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    store = BarStore(settings.bars_dir)
    with caplog.at_level(logging.WARNING):
        assert ensure_data(settings, store, log) is None
    assert {i.symbol for i in store.symbols()} >= set(settings.standard_symbols)
    assert store.source_of(settings.standard_symbols) == "synthetic"
    assert "SYNTHETIC demo universe" in caplog.text
    assert "labelled dataSource=synthetic" in caplog.text


def test_a_store_with_data_is_left_alone(settings: Settings) -> None:
    store = BarStore(settings.bars_dir)
    store.write_symbol("ONLY", _one_bar(), "real")
    ensure_data(settings, store, log)
    assert [i.symbol for i in store.symbols()] == ["ONLY"]


def test_data_dir_is_imported_and_unchanged_files_are_skipped_on_restart(
    settings: Settings, write_csv: WriteCsv, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv("ONE.csv", good_rows(3))
    folder = write_csv("TWO.csv", good_rows(4)).parent
    write_csv("BAD.csv", ["nonsense"])
    configured = settings.model_copy(update={"data_dir": folder})
    store = BarStore(settings.bars_dir)

    first = ensure_data(configured, store, log)
    write_csv("TWO.csv", good_rows(6))
    with caplog.at_level(logging.INFO):
        second = ensure_data(configured, BarStore(settings.bars_dir), log)

    assert first is not None
    assert second is not None
    assert [r.symbol for r in first.imported] == ["ONE", "TWO"]
    assert [r.symbol for r in second.unchanged] == ["ONE"]
    assert [(r.symbol, r.bars) for r in second.imported] == [("TWO", 6)]
    assert "not imported: BAD.csv BAD" in caplog.text
    assert store.source_of(["ONE", "TWO"]) == "real"


def _one_bar() -> pd.DataFrame:
    index = pd.DatetimeIndex([pd.Timestamp("2024-07-01", tz="UTC")], name="timestamp")
    return pd.DataFrame(
        {"open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [0.0]}, index=index
    )


def test_a_data_dir_file_is_skipped_when_unchanged(settings: Settings, shared_data: Path) -> None:
    configured = settings.model_copy(update={"data_dir": shared_data / "daily" / "SPY.csv"})
    store = BarStore(settings.bars_dir)
    ensure_data(configured, store, log)
    again = ensure_data(configured, store, log)
    assert again is not None
    assert [r.symbol for r in again.unchanged] == ["SPY"]
