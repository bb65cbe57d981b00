"""The bar store: steps, coverage, frames, manifest freshness and atomic replacement."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from farm.core.bars import Bar, Step
from farm.errors import InvalidInput
from farm.marketdata.importer import import_path
from farm.marketdata.store import BarStore, MinuteStore, SymbolData
from farm.storage.objects import LocalRoot


def bars(days: list[int], price: float = 10.0, hour: int = 4) -> pd.DataFrame:
    """Bars on the given days of July 2024 at ``hour`` UTC; open = price + day."""
    index = pd.DatetimeIndex(
        [datetime(2024, 7, d, hour, tzinfo=UTC) for d in days], name="timestamp"
    )
    opens = np.array([price + d for d in days], dtype=float)
    return pd.DataFrame(
        {"open": opens, "high": opens + 1, "low": opens - 1, "close": opens + 0.5, "volume": 100.0},
        index=index,
    )


@pytest.fixture
def filled(store: BarStore) -> BarStore:
    """AAA trades every day 1..8, BBB only on 2, 4 and 6, CCC only on 20..21."""
    store.write_symbol("AAA", bars(list(range(1, 9))), "real")
    store.write_symbol("BBB", bars([2, 4, 6], price=100.0), "real")
    store.write_symbol("CCC", bars([20, 21]), "synthetic")
    return store


def test_steps_are_in_time_order_with_inclusive_dates_and_gaps(filled: BarStore) -> None:
    steps = list(filled.steps(["bbb", "AAA"], date(2024, 7, 2), date(2024, 7, 5)))

    assert [s.ts for s in steps] == [datetime(2024, 7, d, 4, tzinfo=UTC) for d in (2, 3, 4, 5)]
    assert [list(s.bars) for s in steps] == [["BBB", "AAA"], ["AAA"], ["BBB", "AAA"], ["AAA"]]
    assert steps[0].bars["BBB"] == Bar(open=102.0, high=103.0, low=101.0, close=102.5, volume=100.0)
    assert steps[1].bars["AAA"] == Bar(open=13.0, high=14.0, low=12.0, close=13.5, volume=100.0)
    assert all(s.ts.tzinfo is UTC for s in steps)


def test_the_end_date_includes_bars_late_in_that_utc_day(store: BarStore) -> None:
    store.write_symbol("LATE", bars([1, 2, 3], hour=23), "real")
    steps = list(store.steps(["LATE"], date(2024, 7, 2), date(2024, 7, 3)))
    assert [s.ts.day for s in steps] == [2, 3]
    assert list(store.steps(["LATE"], date(2024, 7, 10), date(2024, 7, 12))) == []


def test_steps_refuse_unknown_symbols(filled: BarStore) -> None:
    with pytest.raises(InvalidInput, match="unknown symbols: NOPE"):
        filled.steps(["AAA", "NOPE"], date(2024, 7, 1), date(2024, 7, 9))


def test_coverage_lists_unknown_and_empty_symbols(filled: BarStore) -> None:
    coverage = filled.coverage(["AAA", "bbb", "CCC", "NOPE"], date(2024, 7, 3), date(2024, 7, 5))

    assert coverage.unknown == ("NOPE",)
    assert coverage.empty == ("CCC",)
    assert dict(coverage.bars) == {"AAA": 3, "BBB": 1, "CCC": 0}
    assert not coverage.ok
    with pytest.raises(InvalidInput, match="unknown symbols: NOPE; no bars in the requested"):
        coverage.check()


def test_coverage_sees_a_gap_inside_the_symbols_history(filled: BarStore) -> None:
    coverage = filled.coverage(["BBB"], date(2024, 7, 3), date(2024, 7, 3))
    assert coverage.empty == ("BBB",)
    assert filled.coverage(["AAA", "BBB"], date(2024, 7, 1), date(2024, 7, 31)).ok


def test_frame_has_a_utc_index_and_ohlcv_columns(filled: BarStore) -> None:
    frame = filled.frame("BBB", date(2024, 7, 3), date(2024, 7, 6))
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert str(pd.DatetimeIndex(frame.index).tz) == "UTC"
    assert frame["open"].tolist() == [104.0, 106.0]
    assert len(filled.frame("AAA")) == 8


def test_source_of_is_synthetic_if_any_symbol_is(filled: BarStore) -> None:
    assert filled.source_of(["AAA", "BBB"]) == "real"
    assert filled.source_of(["AAA", "CCC"]) == "synthetic"
    with pytest.raises(InvalidInput, match="unknown symbols"):
        filled.source_of(["ZZZ"])


def test_symbols_lists_first_last_bars_and_source(filled: BarStore) -> None:
    listing = {i.symbol: i for i in filled.symbols()}
    assert list(listing) == ["AAA", "BBB", "CCC"]
    assert listing["BBB"].first == datetime(2024, 7, 2, 4, tzinfo=UTC)
    assert listing["BBB"].last == datetime(2024, 7, 6, 4, tzinfo=UTC)
    assert listing["BBB"].bars == 3
    assert listing["CCC"].source == "synthetic"


def test_a_running_store_sees_symbols_written_by_another_instance(
    filled: BarStore, tmp_path: Path
) -> None:
    server = BarStore(filled.root)
    assert len(server.symbols()) == 3
    cli = BarStore(filled.root)
    csv = tmp_path / "NEW.csv"
    csv.write_text("Date,Open,High,Low,Close,Volume\n2024-07-01,1,2,0.5,1.5,10\n")
    import_path(cli, csv)
    cli.write_symbol("AAA", bars([1, 2]), "real")

    assert [i.symbol for i in server.symbols()] == ["AAA", "BBB", "CCC", "NEW"]
    info = server.info("AAA")
    assert info is not None
    assert info.bars == 2
    assert len(server.frame("NEW")) == 1


def test_the_manifest_is_rebuilt_from_the_files_when_lost(filled: BarStore) -> None:
    (filled.root / "manifest.json").unlink()
    fresh = BarStore(filled.root)
    assert [(i.symbol, i.bars, i.source) for i in fresh.symbols()] == [
        ("AAA", 8, "real"),
        ("BBB", 3, "real"),
        ("CCC", 2, "synthetic"),
    ]
    assert (filled.root / "manifest.json").exists()


def test_write_symbol_refuses_bad_frames(store: BarStore) -> None:
    naive = bars([1, 2]).tz_localize(None)
    with pytest.raises(InvalidInput, match="timezone-aware"):
        store.write_symbol("X", naive, "real")
    with pytest.raises(InvalidInput, match="strictly increasing"):
        store.write_symbol("X", bars([2, 1]), "real")
    with pytest.raises(InvalidInput, match="missing columns: volume"):
        store.write_symbol("X", bars([1]).drop(columns="volume"), "real")
    with pytest.raises(InvalidInput, match="invalid symbol"):
        store.write_symbol("../X", bars([1]), "real")
    assert store.is_empty()


def test_a_reader_of_steps_sees_each_symbol_old_or_new_never_partial(store: BarStore) -> None:
    symbols = [f"S{i}" for i in range(8)]
    old, new = bars([1, 2, 3]), bars(list(range(1, 29)), price=500.0)
    store.write_many([SymbolData(s, old, "real") for s in symbols])
    reader = BarStore(store.root)
    errors: list[BaseException] = []
    stop = threading.Event()
    allowed = ([11.0, 12.0, 13.0], [500.0 + d for d in range(1, 29)])

    def read() -> None:
        try:
            while not stop.is_set():
                steps = list(reader.steps(symbols, date(2024, 7, 1), date(2024, 7, 31)))
                for s in symbols:
                    assert [st.bars[s].open for st in steps if s in st.bars] in allowed
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for k in range(16):
            store.write_many([SymbolData(s, new if k % 2 == 0 else old, "real") for s in symbols])
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_steps_over_real_data_match_the_csvs(shared_data: Path, store: BarStore) -> None:
    symbols = ["SPY", "AAPL", "META"]
    for symbol in symbols:
        import_path(store, shared_data / "daily" / f"{symbol}.csv")
    start, end = date(2022, 1, 1), date(2022, 12, 31)

    steps = list(store.steps(symbols, start, end))

    expected = {
        s: pd.read_csv(shared_data / "daily" / f"{s}.csv", index_col="Date", parse_dates=True)
        for s in symbols
    }
    indexes = [pd.DatetimeIndex(f.index) for f in expected.values()]
    days = sorted(set().union(*(i[(i.date >= start) & (i.date <= end)] for i in indexes)))
    assert [s.ts for s in steps] == [d.to_pydatetime() for d in days]
    for step in steps[::50]:
        for symbol, bar in step.bars.items():
            row = expected[symbol].loc[pd.Timestamp(step.ts)]
            assert (bar.open, bar.close, bar.volume) == (row["Open"], row["Close"], row["Volume"])


def test_unknown_symbols_get_close_matches(real_bars: Path) -> None:
    store = BarStore(real_bars)
    coverage = store.coverage(["APPL", "SPY", "QQQQ", "ZZZZZZ"], date(2023, 1, 1), date(2023, 2, 1))
    assert coverage.unknown == ("APPL", "QQQQ", "ZZZZZZ")
    assert coverage.suggestions == {"APPL": ["AAPL"], "QQQQ": ["QQQ"]}
    with pytest.raises(InvalidInput) as raised:
        coverage.check()
    assert raised.value.message == (
        "unknown symbols: APPL (did you mean AAPL?), QQQQ (did you mean QQQ?), ZZZZZZ"
    )
    assert raised.value.extra["suggestions"] == {"APPL": ["AAPL"], "QQQQ": ["QQQ"]}


def test_the_minute_store_keeps_a_file_per_day_and_replaces_a_bar(tmp_path: Path) -> None:
    store = MinuteStore(LocalRoot(tmp_path))
    late = datetime(2026, 12, 1, 23, 59, tzinfo=UTC)
    first = [
        Step(late, {"AAPL": Bar(1, 2, 0.5, 1.5, 10), "MSFT": Bar(5, 5, 5, 5, 1)}),
        Step(late + timedelta(minutes=1), {"AAPL": Bar(2, 2, 2, 2, 1)}),  # the next UTC day
    ]
    store.append(first)
    assert sorted(p.name for p in tmp_path.glob("*.parquet")) == [
        "2026-12-01.parquet",
        "2026-12-02.parquet",
    ]
    corrected = Step(late, {"AAPL": Bar(1, 2, 0.5, 1.75, 12)})
    store.append([corrected])
    steps = store.steps(["MSFT", "AAPL"], date(2026, 11, 30), date(2026, 12, 2))
    assert [s.ts for s in steps] == [late, late + timedelta(minutes=1)]
    assert steps[0].bars == {"AAPL": Bar(1, 2, 0.5, 1.75, 12), "MSFT": Bar(5, 5, 5, 5, 1)}
    assert list(steps[0].bars) == ["MSFT", "AAPL"]  # in the order asked
    assert store.steps(["AAPL"], date(2026, 12, 2), date(2026, 12, 2)) == [first[1]]
    assert store.steps(["TSLA"], date(2026, 12, 1), date(2026, 12, 2)) == []


def test_the_minute_store_prunes_whole_days_before_a_date(tmp_path: Path) -> None:
    store = MinuteStore(LocalRoot(tmp_path))
    days = [datetime(2026, 12, d, 15, tzinfo=UTC) for d in (1, 2, 3)]
    store.append([Step(ts, {"AAPL": Bar(1, 1, 1, 1, 1)}) for ts in days])
    (tmp_path / "notes.txt").write_text("not a day")
    assert store.prune(date(2026, 12, 1)) == []
    assert store.prune(date(2026, 12, 3)) == [date(2026, 12, 1), date(2026, 12, 2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-12-03.parquet", "notes.txt"]
    assert [s.ts for s in store.steps(["AAPL"], date(2026, 12, 1), date(2026, 12, 3))] == days[2:]
