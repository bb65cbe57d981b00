"""Storage roots on a local folder and on a real S3 wire protocol (moto's server): the same
behaviour behind the artifact, bar and FMEL stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from storage_support import Bucket, frame

from farm.backtest.results import read_page
from farm.core.orders import Fill
from farm.fmel import queries
from farm.fmel.layout import part_files
from farm.fmel.recorder import FmelRecorder
from farm.fmel.store import FmelStore
from farm.marketdata.store import BarStore, SymbolData
from farm.papertrading.runtime import recorded_until
from farm.storage.artifacts import RootArtifactStore
from farm.storage.objects import LocalRoot, Root, S3Root, check_url, open_root


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Root]:
    """A local folder, then a prefix of a bucket on the S3 server."""
    if request.param == "local":
        yield LocalRoot(tmp_path / "root")
        return
    bucket: Bucket = request.getfixturevalue("bucket")
    yield S3Root(bucket.url("root"), bucket.endpoint)


def test_a_root_writes_atomically_lists_reads_and_deletes(root: Root) -> None:
    path = root.join("a", "b.bin")
    assert root.identity(path) is None
    with pytest.raises(FileNotFoundError):
        root.read(path)
    with pytest.raises(FileNotFoundError):
        root.open(path)
    root.write(path, b"first")
    first = root.identity(path)
    assert first is not None
    root.write(path, b"second version")
    assert root.read(path) == b"second version"
    assert root.identity(path) not in (None, first)
    with root.open(path) as handle:
        handle.seek(7)
        assert handle.read() == b"version"
    root.write(root.join("a", "c", "d.bin"), b"x")
    assert sorted(root.names(root.join("a"))) == ["b.bin", "c"]
    assert root.names(root.join("nothing")) == ()
    assert root.is_dir(root.join("a"))
    root.delete(root.join("a"))
    assert root.names(root.join("a")) == ()
    assert root.identity(path) is None
    root.delete(root.join("a"))  # nothing there is fine


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    root = LocalRoot(tmp_path)
    for n in range(3):
        root.write(root.join("k"), str(n).encode())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_storage_urls_are_checked() -> None:
    assert check_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert check_url("/var/farm") == "/var/farm"
    assert check_url("file:///var/farm") == "file:///var/farm"
    for bad in ("s3://", "gs://bucket/x", "http://example.org"):
        with pytest.raises(ValueError, match="unsupported storage URL"):
            check_url(bad)
    assert isinstance(open_root(None, Path("/tmp/x")), LocalRoot)
    assert isinstance(open_root("s3://b/p", Path("/tmp/x"), "http://127.0.0.1:1"), S3Root)


def test_artifacts_on_s3_round_trip_and_bind_a_local_copy(bucket: Bucket, tmp_path: Path) -> None:
    store = RootArtifactStore(S3Root(bucket.url("artifacts"), bucket.endpoint), tmp_path / "c")
    assert store.healthy()
    missing = S3Root(f"s3://{bucket.name}-missing/artifacts", bucket.endpoint)
    assert not RootArtifactStore(missing, tmp_path).healthy()
    store.put("agents/a1.py", b"print('v1')\n")
    assert store.get("agents/a1.py") == b"print('v1')\n"
    local = store.local_path("agents/a1.py")
    assert local.read_bytes() == b"print('v1')\n"
    assert local.is_relative_to(tmp_path / "c")
    store.put("agents/a1.py", b"print('v2')\n")
    assert store.local_path("agents/a1.py").read_bytes() == b"print('v2')\n"  # never stale
    with pytest.raises(KeyError):
        store.get("agents/none.py")
    with pytest.raises(KeyError):
        store.local_path("agents/none.py")
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put("../escape", b"")
    store.put("backtests/s1/x.json", b"{}")
    store.delete("backtests/s1")
    with pytest.raises(KeyError):
        store.get("backtests/s1/x.json")
    assert store.get("agents/a1.py") == b"print('v2')\n"


def test_results_pages_read_from_s3(bucket: Bucket, tmp_path: Path) -> None:
    from farm.backtest.results import ROWS_PER_GROUP, SCHEMAS, _parquet, series_key

    store = RootArtifactStore(S3Root(bucket.url("artifacts"), bucket.endpoint), tmp_path)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = [(start + timedelta(days=i), 100.0 + i, 0.0) for i in range(2 * ROWS_PER_GROUP + 5)]
    store.put(series_key("backtests/s", "equity"), _parquet(SCHEMAS["equity"], rows))
    page, total = read_page(store, "backtests/s", "equity", limit=10, offset=ROWS_PER_GROUP - 5)
    assert total == len(rows)
    assert [r["equity"] for r in page] == [100.0 + i for i in range(995, 1005)]


def test_bars_on_s3_match_the_local_store(bucket: Bucket, tmp_path: Path) -> None:
    items = [SymbolData("AAA", frame(30, 10.0), "real"), SymbolData("BBB", frame(20, 50.0), "real")]
    local, remote = (
        BarStore(tmp_path / "bars"),
        BarStore(S3Root(bucket.url("bars"), bucket.endpoint)),
    )
    assert remote.is_empty()
    local.write_many(items)
    remote.write_many(items)
    assert remote.symbols() == local.symbols()
    span = (date(2024, 1, 5), date(2024, 1, 25))
    assert list(remote.steps(["AAA", "BBB"], *span)) == list(local.steps(["AAA", "BBB"], *span))
    pd.testing.assert_frame_equal(remote.frame("BBB"), local.frame("BBB"))
    assert remote.coverage(["AAA", "ZZZ"], *span).unknown == ("ZZZ",)

    reader = BarStore(S3Root(bucket.url("bars"), bucket.endpoint))  # another process
    assert [i.bars for i in reader.symbols()] == [30, 20]
    remote.write_symbol("AAA", frame(40, 10.0), "synthetic")
    assert [(i.bars, i.source) for i in reader.symbols()] == [(40, "synthetic"), (20, "real")]


def test_fmel_on_s3_is_staged_put_queried_and_exported(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = S3Root(bucket.url("fmel"), bucket.endpoint)
    staging = tmp_path / "staging"
    bar_ts = datetime(2024, 3, 1, 21, tzinfo=UTC)
    with FmelRecorder(
        root, "agent-1", "sess-1", "u1", "BACKTEST", batch_size=2, staging=staging
    ) as rec:
        for seq in range(5):
            rec.record_decision(
                seq=seq, bar_ts=bar_ts + timedelta(days=seq), bars=[], cash=1.0, value=1.0
            )
        rec.record_execution(Fill("o1", "AAPL", bar_ts, 2.0, 10.0, 0.5, 1))
    assert not (staging / "agent=agent-1" / "session=sess-1").exists()  # all on S3 now
    assert len(part_files(root, ["agent-1"], "decisions")) == 3
    assert "_summary.json" in root.names(root.join("agent=agent-1", "session=sess-1"))
    opened: list[str] = []
    read = root.open
    with monkeypatch.context() as patch:
        patch.setattr(root, "open", lambda path: opened.append(path) or read(path))
        assert recorded_until(root, "agent-1", "sess-1") == 4  # where a resumed session goes on
    assert len(opened) == 1, "only the part holding the latest bar is read"

    store = FmelStore(root)
    try:
        query = queries.DecisionQuery(["agent-1"])
        rows, total = queries.list_decisions(store, query, limit=2, offset=1)
        assert total == 5
        assert [r["seq"] for r in rows] == [3, 2]
        decision, executions, _ = queries.get_decision(store, "agent-1", "sess-1", 1) or (
            (),
            [],
            [],
        )
        assert decision["seq"] == 1
        assert [e["order_id"] for e in executions] == ["o1"]
        assert queries.analytics(store, query)["total"] == 5  # from the summary on S3
        csv = b"".join(queries.export(store, "agent-1", None, "decisions", "csv")).decode()
        assert len(csv.strip().splitlines()) == 6
    finally:
        store.close()


def test_fmel_retention_sweeps_s3_by_last_write(bucket: Bucket, tmp_path: Path) -> None:
    from farm.retention import _sweep_fmel

    root = S3Root(bucket.url("fmel"), bucket.endpoint)
    with FmelRecorder(root, "agent-1", "old", "u1", "BACKTEST", staging=tmp_path) as rec:
        rec.record_decision(
            seq=0, bar_ts=datetime(2024, 1, 2, tzinfo=UTC), bars=[], cash=1, value=1
        )
    written = datetime.now(UTC)
    assert _sweep_fmel(root, written - timedelta(hours=1)) == 0
    assert root.names(root.join("agent=agent-1")) == ("session=old",)
    assert _sweep_fmel(root, written + timedelta(hours=1)) == 1
    assert root.names(root.join("agent=agent-1")) == ()
