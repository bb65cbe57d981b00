"""The importer on real shared CSVs and on small hand-written files, one rule at a time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from marketdata_helpers import HEADER, WriteCsv, good_rows

from farm.errors import InvalidInput
from farm.marketdata.importer import MAX_PROBLEMS, import_path
from farm.marketdata.store import BarStore

SHARED_SYMBOLS = ["AAPL", "SPY", "JPM", "TSLA", "AEP"]


def test_shared_csvs_import_with_their_exact_values(
    shared_data: Path, tmp_path: Path, store: BarStore
) -> None:
    folder = tmp_path / "links"
    folder.mkdir()
    for symbol in SHARED_SYMBOLS:
        (folder / f"{symbol}.csv").symlink_to(shared_data / "daily" / f"{symbol}.csv")

    report = import_path(store, folder)

    assert report.ok
    assert sorted(str(r.symbol) for r in report.imported) == sorted(SHARED_SYMBOLS)
    for symbol in SHARED_SYMBOLS:
        source = pd.read_csv(shared_data / "daily" / f"{symbol}.csv")
        frame = store.frame(symbol)
        assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
        expected_index = pd.to_datetime(source["Date"], utc=True)
        assert (frame.index == expected_index).all()
        for column in ("Open", "High", "Low", "Close", "Volume"):
            assert np.array_equal(frame[column.lower()].to_numpy(), source[column].to_numpy())
        info = store.info(symbol)
        assert info is not None
        assert info.bars == len(source)
        assert info.source == "real"
        assert info.first == expected_index.iloc[0].to_pydatetime()


def test_a_single_csv_file_imports(shared_data: Path, store: BarStore) -> None:
    report = import_path(store, shared_data / "daily" / "NVDA.csv")
    assert [r.symbol for r in report.imported] == ["NVDA"]
    assert report.bars_imported == len(pd.read_csv(shared_data / "daily" / "NVDA.csv"))


def test_naive_dates_are_utc_and_offsets_are_converted(
    write_csv: WriteCsv, store: BarStore
) -> None:
    header = "Date,Open,High,Low,Close,Volume"
    write_csv(
        "naive.csv",
        ["2024-07-01 00:00:00,10,11,9,10,100", "2024-07-02 04:00:00,10,11,9,10,100"],
        header,
    )
    write_csv(
        "aware.csv",
        ["2024-07-01T00:00:00Z,10,11,9,10,100", "2024-07-02 00:00:00-04:00,10,11,9,10,100"],
        header,
    )
    report = import_path(store, write_csv("x.csv", good_rows()).parent)
    assert report.ok
    expected = [datetime(2024, 7, 1, tzinfo=UTC), datetime(2024, 7, 2, 4, tzinfo=UTC)]
    for symbol in ("NAIVE", "AWARE"):
        assert list(pd.DatetimeIndex(store.frame(symbol).index).to_pydatetime()) == expected


def test_headers_are_case_insensitive_and_adj_close_optional(
    write_csv: WriteCsv, store: BarStore
) -> None:
    path = write_csv(
        "msft.csv",
        ["2024-07-01,10,11,9,10.5,100,x", "2024-07-02,10,11,9,10.5,200,y"],
        header=" DATE ,OPEN,high,Low,cLoSe,VOLUME,comment",
    )
    report = import_path(store, path)
    assert report.ok
    assert store.frame("MSFT")["volume"].tolist() == [100.0, 200.0]
    adj = pq.read_table(store.path_of("MSFT")).column("adj_close")
    assert adj.null_count == 2


RULES = [
    pytest.param(2, "2024-07-0x 04:00:00+00:00", "Date", "unparsable date ('2024-07-0x", id="date"),
    pytest.param(1, "", "Date", "missing date", id="no-date"),
    pytest.param(3, "11", "High", "high 11.0 is below low 12.0", id="high-below-low"),
    pytest.param(2, "30", "Open", "open 30.0 is outside [low 11.0, high 13.0]", id="open-outside"),
    pytest.param(4, "1", "Close", "close 1.0 is outside", id="close-outside"),
    pytest.param(1, "0", "Low", "low is 0.0; prices must be positive", id="zero-price"),
    pytest.param(1, "-10", "Open", "open is -10.0; prices must be positive", id="negative-price"),
    pytest.param(
        2, "-5", "Volume", "volume is -5.0; it must not be negative", id="negative-volume"
    ),
    pytest.param(2, "NaN", "Close", "close is missing or not a number ('NaN')", id="nan"),
    pytest.param(2, "", "Volume", "volume is missing or not a number", id="empty"),
    pytest.param(2, "abc", "Open", "open is missing or not a number ('abc')", id="text"),
    pytest.param(2, "inf", "High", "high is not finite", id="infinite"),
    pytest.param(2, "-1", "Adj Close", "adj_close is -1.0; it must be positive", id="adj-close"),
]


@pytest.mark.parametrize(("index", "value", "column", "message"), RULES)
def test_each_rule_reports_file_and_line_and_spares_other_files(
    write_csv: WriteCsv, store: BarStore, index: int, value: str, column: str, message: str
) -> None:
    rows = [row.split(",") for row in good_rows()]
    rows[index][HEADER.split(",").index(column)] = value
    bad = write_csv("BAD.csv", [",".join(r) for r in rows])
    write_csv("GOOD.csv", good_rows())

    report = import_path(store, bad.parent)

    assert [r.symbol for r in report.imported] == ["GOOD"]
    (failed,) = report.failed
    assert failed.path == bad
    assert failed.symbol == "BAD"
    assert failed.problems[0].row == index + 2  # the header is line 1
    assert message in failed.problems[0].message
    assert store.info("BAD") is None


def test_duplicate_and_unsorted_timestamps(write_csv: WriteCsv, store: BarStore) -> None:
    rows = good_rows(6)
    write_csv("DUP.csv", [*rows[:4], rows[1], rows[5]])
    write_csv("UNSORTED.csv", [rows[0], rows[2], rows[1], rows[3]])

    report = import_path(store, write_csv("OK.csv", rows).parent)

    failures = {r.symbol: r.problems for r in report.failed}
    assert [str(p) for p in failures["DUP"]] == [
        "row 6: duplicate timestamp 2024-07-02T04:00:00+00:00 (first at row 3)"
    ]
    assert [str(p) for p in failures["UNSORTED"]] == [
        "row 4: timestamp 2024-07-02T04:00:00+00:00 is before the previous row's "
        "2024-07-03T04:00:00+00:00; rows must be sorted by time"
    ]
    assert [r.symbol for r in report.imported] == ["OK"]


def test_missing_columns_and_unreadable_files(
    write_csv: WriteCsv, tmp_path: Path, store: BarStore
) -> None:
    write_csv("NOVOL.csv", ["2024-07-01,1,2,0.5,1"], header="Date,Open,High,Low,Close")
    write_csv("EMPTY.csv", [], header="")
    write_csv("HEADER.csv", [])
    write_csv("bad name!.csv", good_rows())

    report = import_path(store, tmp_path / "in")

    messages = {r.path.name: [str(p) for p in r.problems] for r in report.failed}
    assert messages["NOVOL.csv"][0].startswith("missing columns: volume (found: Date, Open")
    assert messages["EMPTY.csv"][0].startswith("cannot read CSV")
    assert messages["HEADER.csv"] == ["no rows"]
    assert "invalid symbol 'bad name!'" in messages["bad name!.csv"][0]
    assert not report.imported


def test_problems_are_capped_but_counted(write_csv: WriteCsv, store: BarStore) -> None:
    rows = [r.rsplit(",", 1)[0] + ",-1" for r in good_rows(28)]
    report = import_path(store, write_csv("MANY.csv", rows))
    (failed,) = report.failed
    assert failed.problem_count == 28
    assert len(failed.problems) == MAX_PROBLEMS
    assert [p.row for p in failed.problems[:3]] == [2, 3, 4]


def test_blank_lines_are_skipped_and_line_numbers_stay_true(
    write_csv: WriteCsv, store: BarStore
) -> None:
    rows = good_rows(3)
    path = write_csv("GAP.csv", [rows[0], "", rows[1], rows[2].replace("12.0,13.0", "12.0,-13")])
    (failed,) = import_path(store, path).failed
    assert failed.problems[0].row == 5


def test_the_same_symbol_in_two_files_is_refused_not_overwritten(
    write_csv: WriteCsv, store: BarStore
) -> None:
    write_csv("AAPL.csv", good_rows(3))
    write_csv("aapl.csv", good_rows(4))
    report = import_path(store, write_csv("x.csv", good_rows()).parent)
    (failed,) = report.failed
    assert failed.path.name == "aapl.csv"
    assert "also in AAPL.csv" in failed.problems[0].message
    info = store.info("AAPL")
    assert info is not None
    assert info.bars == 3


def test_reimport_replaces_and_a_failed_reimport_keeps_the_old_bars(
    write_csv: WriteCsv, store: BarStore
) -> None:
    path = write_csv("ABC.csv", good_rows(3))
    import_path(store, path)
    write_csv("ABC.csv", good_rows(5, price=20))
    assert import_path(store, path).ok
    assert store.frame("ABC")["open"].tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]

    write_csv("ABC.csv", [*good_rows(6, price=30)[:5], "garbage,1,1,1,1,1,1"])
    report = import_path(store, path)

    assert not report.ok
    assert store.frame("ABC")["open"].tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]
    assert not list(Path(store.path_of("ABC")).parent.glob(".*.tmp"))


def test_a_reader_during_reimport_sees_old_or_new_never_partial(
    write_csv: WriteCsv, tmp_path: Path, store: BarStore
) -> None:
    small = write_csv("ATOM.csv", good_rows(3, price=10), folder="small")
    big = write_csv("ATOM.csv", good_rows(28, price=500), folder="big")
    import_path(store, small)
    reader = BarStore(store.root)
    seen: list[tuple[int, float]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                frame = reader.frame("ATOM")
                first = float(frame["open"].iloc[0])
                assert frame["open"].tolist() == [first + k for k in range(len(frame))]
                seen.append((len(frame), first))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for k in range(30):
            import_path(store, big if k % 2 == 0 else small)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert set(seen) <= {(3, 10.0), (28, 500.0)}
    assert len(set(seen)) == 2


def test_skip_unchanged_reimports_only_changed_files(write_csv: WriteCsv, store: BarStore) -> None:
    write_csv("ONE.csv", good_rows(3))
    folder = write_csv("TWO.csv", good_rows(4)).parent
    assert len(import_path(store, folder, skip_unchanged=True).imported) == 2

    write_csv("TWO.csv", good_rows(5))
    report = import_path(store, folder, skip_unchanged=True)

    assert [(r.symbol, r.status, r.bars) for r in report.reports] == [
        ("ONE", "unchanged", 3),
        ("TWO", "imported", 5),
    ]


def test_progress_reaches_the_total(write_csv: WriteCsv, tmp_path: Path, store: BarStore) -> None:
    for name in ("A", "B", "C"):
        write_csv(f"{name}.csv", good_rows())
    _long_parquet(tmp_path / "in" / "long.parquet")
    calls: list[tuple[int, int]] = []
    import_path(store, tmp_path / "in", progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5, 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_missing_path_is_a_user_error(tmp_path: Path, store: BarStore) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        import_path(store, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match=r"no \.csv or \.parquet"):
        import_path(store, tmp_path / "empty")


def _long_parquet(path: Path, **overrides: Any) -> pd.DataFrame:
    """Two symbols interleaved by date (sorted by date, then symbol), naive timestamps."""
    days = pd.date_range("2024-07-01", periods=4, freq="D")
    frame = pd.DataFrame(
        {
            "Ticker": ["xx", "YY"] * 4,
            "timestamp": np.repeat(days.to_numpy(), 2),
            "open": np.arange(8) + 10.0,
            "high": np.arange(8) + 11.0,
            "low": np.arange(8) + 9.0,
            "close": np.arange(8) + 10.5,
            "volume": np.arange(8) * 100,
        }
    )
    for column, value in overrides.items():
        frame[column] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return frame


def test_long_parquet_imports_each_symbol_on_its_own(tmp_path: Path, store: BarStore) -> None:
    frame = _long_parquet(tmp_path / "long.parquet")
    frame.loc[5, "low"] = 99.0  # YY's third bar: high 16 below low 99
    frame.to_parquet(tmp_path / "long.parquet", index=False)

    report = import_path(store, tmp_path / "long.parquet")

    assert [(r.symbol, r.bars) for r in report.imported] == [("XX", 4)]
    (failed,) = report.failed
    assert failed.symbol == "YY"
    assert [str(p) for p in failed.problems] == ["row 6: high 16.0 is below low 99.0"]
    xx = store.frame("XX")
    assert xx["open"].tolist() == [10.0, 12.0, 14.0, 16.0]
    assert xx.index[0] == pd.Timestamp("2024-07-01", tz="UTC")


def test_long_parquet_with_string_dates_and_a_bad_one(tmp_path: Path, store: BarStore) -> None:
    path = tmp_path / "long.parquet"
    dates = [f"2024-07-0{day}" for day in (1, 1, 2, 2, 3, 3, 4)] + ["July 5th"]
    _long_parquet(path, timestamp=dates)
    report = import_path(store, path)
    (failed,) = report.failed
    assert str(failed.problems[0]) == "row 8: unparsable date ('July 5th')"


def test_long_parquet_file_level_problems(tmp_path: Path, store: BarStore) -> None:
    pq.write_table(pa.table({"symbol": ["A"], "open": [1.0]}), tmp_path / "cols.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    _long_parquet(tmp_path / "types.parquet", open=["x"] * 8)

    report = import_path(store, tmp_path)

    messages = {r.path.name: str(r.problems[0]) for r in report.failed}
    assert messages["cols.parquet"].startswith("missing columns: timestamp, high, low, close")
    assert messages["junk.parquet"].startswith("cannot read Parquet")
    assert messages["types.parquet"] == "column open has type large_string; expected numbers"
    assert not report.imported


@pytest.mark.slow
def test_the_bulk_parquet_imports_every_valid_symbol(shared_data: Path, store: BarStore) -> None:
    # Its speed is measured in bench/, not asserted here (a loaded machine is not a regression).
    report = import_path(store, shared_data / "daily_bulk.parquet")

    source = pq.read_table(shared_data / "daily_bulk.parquet").to_pandas()
    assert len(report.imported) == 2249
    assert report.bars_imported == len(source) - int((source["symbol"] == "T").sum())
    # The source has one impossible bar: T on 2021-06-11 with a low of 0.
    (failed,) = report.failed
    assert failed.symbol == "T"
    assert "low is 0.0; prices must be positive" in failed.problems[0].message
    aapl = source[source["symbol"] == "AAPL"].set_index("timestamp")
    stored = store.frame("AAPL")
    assert (stored.index == aapl.index).all()
    assert np.array_equal(stored["close"].to_numpy(), aapl["close"].to_numpy())
    assert len(store.symbols()) == 2249

    again = import_path(store, shared_data / "daily_bulk.parquet", skip_unchanged=True)
    assert len(again.unchanged) == 2249
    assert not again.imported


def test_a_date_without_a_time_is_the_session_date_at_midnight_new_york(
    shared_data: Path, write_csv: WriteCsv, store: BarStore
) -> None:
    """A date-only row lands on the instant the shipped files use for that day (04:00 UTC in
    summer, 05:00 UTC in winter), so mixing both kinds never splits a day into two steps."""
    header = "Date,Open,High,Low,Close,Volume"
    write_csv("dates.csv", ["2020-07-27,10,11,9,10,100", "2020-12-01,10,11,9,10,100"], header)
    report = import_path(store, write_csv("x.csv", good_rows()).parent)
    assert report.ok
    expected = [datetime(2020, 7, 27, 4, tzinfo=UTC), datetime(2020, 12, 1, 5, tzinfo=UTC)]
    assert list(pd.DatetimeIndex(store.frame("DATES").index).to_pydatetime()) == expected
    import_path(store, shared_data / "daily" / "AAPL.csv")
    shipped = store.frame("AAPL").index
    assert set(store.frame("DATES").index) <= set(shipped)


def test_parquet_dates_are_session_dates_too(tmp_path: Path, store: BarStore) -> None:
    day = pa.array([datetime(2020, 12, 1).date(), datetime(2020, 12, 2).date()], pa.date32())
    table = pa.table(
        {
            "symbol": ["AAA", "AAA"],
            "timestamp": day,
            "open": [10.0, 10.0],
            "high": [11.0, 11.0],
            "low": [9.0, 9.0],
            "close": [10.0, 10.0],
            "volume": [1.0, 1.0],
        }
    )
    pq.write_table(table, tmp_path / "bulk.parquet")
    assert import_path(store, tmp_path / "bulk.parquet").ok
    expected = [datetime(2020, 12, 1, 5, tzinfo=UTC), datetime(2020, 12, 2, 5, tzinfo=UTC)]
    assert list(pd.DatetimeIndex(store.frame("AAA").index).to_pydatetime()) == expected


def test_gaps_of_more_than_n_weekdays_are_warned_about(
    write_csv: WriteCsv, store: BarStore
) -> None:
    rows = [*good_rows(3), *good_rows(2, start_day=22)]  # 07-03 to 07-22: 12 weekdays missing
    path = write_csv("gappy.csv", rows)
    report = import_path(store, path, max_gap_days=5)
    assert report.ok
    assert report.imported[0].warnings == [
        "no bars for 12 weekdays between 2024-07-03 and 2024-07-22"
    ]
    assert import_path(store, path, max_gap_days=12).imported[0].warnings == []
    weekend = write_csv("weekend.csv", good_rows(10))  # 07-06 and 07-07 are a weekend
    assert import_path(store, weekend, max_gap_days=1).imported[0].warnings == []
