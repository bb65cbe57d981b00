"""The host-side recorder: batching, atomic part files, schema, caps and crash safety."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fmel_helpers import stored

from farm.fmel.layout import part_files, session_dir
from farm.fmel.recorder import FmelFlusher, FmelRecorder
from farm.fmel.records import (
    DECISION_SCHEMA,
    MAX_DATA_ACCESSES,
    MAX_REASONING_CHARS,
    SCHEMA_VERSION,
    Bar,
    DataAccess,
    Indicator,
    Order,
)
from farm.fmel.summary import SUMMARY_NAME
from support import wait_until

T0 = datetime(2024, 3, 1, tzinfo=UTC)
BAR = [Bar(symbol="AAPL", open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0)]


def decide(recorder: FmelRecorder, seq: int, **fields: object) -> None:
    recorder.record_decision(
        seq=seq, bar_ts=T0 + timedelta(days=seq), bars=BAR, cash=1.0, value=2.0, **fields
    )


def recorder(root: Path, **options: object) -> FmelRecorder:
    return FmelRecorder(root, "agent-1", "session-1", "user-1", "BACKTEST", **options)  # type: ignore[arg-type]


def seqs(root: Path) -> list[int]:
    return sorted(stored(root, "agent-1", "decisions").column("seq").to_pylist())


def test_batches_by_count_each_flush_one_new_part(tmp_path: Path) -> None:
    rec = recorder(tmp_path, batch_size=3, flush_seconds=60)
    for seq in range(7):
        decide(rec, seq)
    assert len(part_files(tmp_path, ["agent-1"], "decisions")) == 2
    assert seqs(tmp_path) == list(range(6))
    rec.close()
    assert len(part_files(tmp_path, ["agent-1"], "decisions")) == 3
    assert seqs(tmp_path) == list(range(7))
    folder = session_dir(tmp_path, "agent-1", "session-1")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*(p.name for p in folder.glob("decisions-*.parquet")), SUMMARY_NAME]
    ), "the parts and the session summary, no temporary files"


def test_batches_by_time_without_a_new_record(tmp_path: Path) -> None:
    rec = recorder(tmp_path, batch_size=1000, flush_seconds=0.2)
    decide(rec, 0)
    decide(rec, 1)
    deadline = time.monotonic() + 5
    while not part_files(tmp_path, ["agent-1"], "decisions") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seqs(tmp_path) == [0, 1]
    rec.close()
    assert rec.parts_written == 1


def test_recorders_sharing_a_flusher_start_no_thread_and_flush_by_time(tmp_path: Path) -> None:
    flusher = FmelFlusher(interval=0.02)
    threads = threading.active_count()
    recs = [
        FmelRecorder(
            tmp_path,
            "agent-1",
            f"session-{i}",
            "user-1",
            "PAPER",
            flush_seconds=0.2,
            flusher=flusher,
        )
        for i in range(20)
    ]
    assert threading.active_count() == threads, "no thread per recorder"
    for rec in recs:
        decide(rec, 0)
    deadline = time.monotonic() + 5
    while not all(rec.parts_written for rec in recs) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [rec.parts_written for rec in recs] == [1] * 20, "each flushed once its record aged"
    for rec in recs:
        decide(rec, 1)
        rec.close()
    flusher.close()
    assert threading.active_count() == threads - 1
    decisions = stored(tmp_path, "agent-1", "decisions").column("seq").to_pylist()
    assert sorted(decisions) == [0] * 20 + [1] * 20, "close() flushed the rest"


def test_a_shared_flusher_spaces_parts_by_the_number_of_recorders(tmp_path: Path) -> None:
    flusher = FmelFlusher(interval=0.02, spacing=0.05)  # 20 recorders: records wait 1 s
    recs = [
        FmelRecorder(
            tmp_path, "agent-1", f"s-{i}", "user-1", "PAPER", flush_seconds=0.05, flusher=flusher
        )
        for i in range(20)
    ]
    started = time.monotonic()
    for rec in recs:
        decide(rec, 0)
    time.sleep(0.5)
    if time.monotonic() - started < 0.95:  # a stalled machine proves nothing either way
        assert not any(rec.parts_written for rec in recs), "flushed before 20 x 50 ms"
    wait_until(lambda: all(rec.parts_written for rec in recs), 10)
    for rec in recs:
        rec.close()
    flusher.close()


def test_a_shared_flusher_waits_for_its_producer_to_be_idle(tmp_path: Path) -> None:
    idle = threading.Event()
    flusher = FmelFlusher(interval=2.0, idle=idle)  # a round at 2 s waits for idle until 4 s
    rec = FmelRecorder(
        tmp_path, "agent-1", "s-1", "user-1", "PAPER", flush_seconds=0.01, flusher=flusher
    )
    started = time.monotonic()
    decide(rec, 0)
    time.sleep(2.5)
    assert rec.parts_written == 0, "flushed while the producer was busy"
    idle.set()
    wait_until(lambda: rec.parts_written == 1, 10)
    assert time.monotonic() - started < 3.9, "flushed by the fallback, not when idle"
    rec.close()
    flusher.close()


def test_parts_are_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    rec = recorder(tmp_path, batch_size=50, flush_seconds=60)
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.append(
                sum(
                    pq.read_metadata(f).num_rows
                    for f in part_files(tmp_path, ["agent-1"], "decisions")
                )
            )

    reader = threading.Thread(target=read)
    reader.start()
    for seq in range(2000):
        decide(rec, seq)
    stop.set()
    reader.join()
    rec.close()
    assert seen
    assert all(n % 50 == 0 for n in seen), "a reader only ever sees whole parts"
    assert seqs(tmp_path) == list(range(2000))


def test_schema_is_versioned_in_rows_and_file_metadata(tmp_path: Path) -> None:
    with recorder(tmp_path) as rec:
        decide(rec, 0)
    (path,) = part_files(tmp_path, ["agent-1"], "decisions")
    table = pq.read_table(path)
    assert table.schema.remove_metadata() == DECISION_SCHEMA.remove_metadata()
    assert table.column("schema_version").to_pylist() == [SCHEMA_VERSION]
    assert table.schema.metadata[b"fmel.schema_version"] == str(SCHEMA_VERSION).encode()


def test_agent_reported_fields_are_capped_and_cleaned(tmp_path: Path) -> None:
    with recorder(tmp_path) as rec:
        long = rec.record_decision(
            seq=0,
            bar_ts=T0,
            bars=BAR,
            cash=1.0,
            value=1.0,
            reasoning="x" * (MAX_REASONING_CHARS + 500),
            confidence=1.5,
            indicators=[
                Indicator(name="sma", line=0, value=float("nan")),
                Indicator(name="bb", line=2, value=float("inf")),
                Indicator(name="bb", line=1, value=3.5),
            ],
            data_accesses=[DataAccess(symbol="AAPL", field="close", index=0)]
            * (MAX_DATA_ACCESSES + 1),
            hook_errors=["e" * 2000],
        )
        short = rec.record_decision(
            seq=1,
            bar_ts=T0 + timedelta(days=1),
            bars=BAR,
            cash=1.0,
            value=1.0,
            reasoning="ok",
            confidence=0.0,
        )
    assert long.reasoning == "x" * MAX_REASONING_CHARS
    assert long.reasoning_truncated
    assert long.confidence is None
    assert long.hook_errors[0] == "e" * 500
    assert long.hook_errors[1] == "get_decision_confidence: 1.5 is not in [0, 1]; dropped"
    assert long.data_accesses_truncated
    assert len(long.data_accesses) == MAX_DATA_ACCESSES
    assert (short.reasoning, short.reasoning_truncated, short.confidence) == ("ok", False, 0.0)
    rows = sorted(stored(tmp_path, "agent-1", "decisions").to_pylist(), key=lambda r: r["seq"])
    assert rows[0]["indicators"] == [
        {"name": "sma", "line": 0, "value": None},
        {"name": "bb", "line": 2, "value": None},
        {"name": "bb", "line": 1, "value": 3.5},
    ]
    assert rows[0]["reasoning_truncated"] is True
    assert rows[1]["reasoning_truncated"] is False


def test_action_and_symbols_come_from_orders_and_reads(tmp_path: Path) -> None:
    def order(symbol: str, side: str) -> Order:
        return Order(
            order_id=f"{symbol}{side}",
            symbol=symbol,
            side=side,
            size=1,
            type="market",
            status="submitted",
        )

    with recorder(tmp_path) as rec:
        hold = rec.record_decision(
            seq=0,
            bar_ts=T0,
            bars=BAR,
            cash=1,
            value=1,
            data_accesses=[DataAccess(symbol="SPY", field="close", index=0)],
        )
        buy = rec.record_decision(
            seq=1, bar_ts=T0, bars=BAR, cash=1, value=1, orders=[order("MSFT", "buy")]
        )
        mixed = rec.record_decision(
            seq=2,
            bar_ts=T0,
            bars=BAR,
            cash=1,
            value=1,
            orders=[order("MSFT", "buy"), order("AAPL", "sell")],
        )
    assert (hold.action, hold.symbols) == ("hold", ["SPY"])
    assert (buy.action, buy.symbols) == ("buy", ["MSFT"])
    assert (mixed.action, mixed.symbols) == ("mixed", ["AAPL", "MSFT"])


def test_records_flushed_before_the_producer_dies_are_readable_and_close_flushes_the_rest(
    tmp_path: Path,
) -> None:
    rec = recorder(tmp_path, batch_size=10, flush_seconds=60)

    def producer() -> None:
        for seq in range(25):
            decide(rec, seq)
        # the producing thread ends abruptly here: nothing flushes or closes the recorder

    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    assert seqs(tmp_path) == list(range(20)), "every full batch is already on disk"
    rec.close()
    assert seqs(tmp_path) == list(range(25)), "close() writes what the host still held"
    rec.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        decide(rec, 99)


def test_a_failing_background_flush_is_reported_to_the_producer(tmp_path: Path) -> None:
    blocker = tmp_path / "agent=agent-1"
    blocker.write_text("a file where the agent folder should be")
    rec = recorder(tmp_path, batch_size=1000, flush_seconds=0.05)
    decide(rec, 0)
    failure: RuntimeError | None = None
    seq = 1
    while failure is None and seq < 200:
        time.sleep(0.02)
        try:
            decide(rec, seq)
        except RuntimeError as exc:
            failure = exc
        else:
            seq += 1
    assert failure is not None
    assert "an FMEL flush failed" in str(failure)
    with pytest.raises(OSError, match="agent="):
        rec.close()
    blocker.unlink()
    rec.flush()
    assert seqs(tmp_path) == list(range(seq)), "nothing was lost while writes failed"


@pytest.mark.parametrize(
    ("agent_id", "session_id"),
    [("../x", "s"), ("a", "s/../../t"), ("", "s"), ("a", "x" * 65), ("a=b", "s")],
)
def test_ids_that_are_not_safe_path_segments_are_refused(
    tmp_path: Path, agent_id: str, session_id: str
) -> None:
    with pytest.raises(ValueError, match="must be 1 to 64"):
        FmelRecorder(tmp_path, agent_id, session_id, "u", "BACKTEST")


def test_naive_times_are_refused(tmp_path: Path) -> None:
    with recorder(tmp_path) as rec, pytest.raises(ValueError, match="timezone-aware"):
        rec.record_decision(seq=0, bar_ts=datetime(2024, 1, 1), bars=BAR, cash=1, value=1)


def test_a_writer_fenced_out_discards_its_records_and_writes_no_summary(tmp_path: Path) -> None:
    """Its session went to another writer (a lost lease): what it still holds is discarded and
    the summary is left to the new writer."""
    owns = True
    rec = recorder(tmp_path, batch_size=3, flush_seconds=60, fence=lambda: owns)
    for seq in range(4):
        decide(rec, seq)
    assert seqs(tmp_path) == [0, 1, 2]
    owns = False
    rec.close()
    assert seqs(tmp_path) == [0, 1, 2]
    folder = session_dir(tmp_path, "agent-1", "session-1")
    assert not (folder / SUMMARY_NAME).exists()
