"""Bar importers writing one store at once: on S3 they update the manifest by compare-and-swap
(conditional PUTs), in a local folder they take turns with ``flock``. No update is lost, and the
entry of a symbol two importers race on describes the file stored."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3fs.errors import translate_boto_error
from storage_support import Bucket, frame, import_rounds, stored_info

import farm.marketdata.store as bar_module
from farm.errors import Conflict
from farm.marketdata.store import BarStore, SymbolData
from farm.storage.objects import S3Root, WriteConflict, open_root

ROUNDS = 25


@pytest.fixture(params=["local", "s3"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str | None, str]]:
    """``FARM_BARS_URL`` and the bars folder: a local folder, then a prefix of a bucket."""
    if request.param == "local":
        yield None, str(tmp_path / "bars")
        return
    bucket: Bucket = request.getfixturevalue("bucket")
    yield bucket.url("bars"), str(tmp_path / "unused")


def test_two_importer_processes_lose_no_symbol_and_agree_with_the_files(
    where: tuple[str | None, str], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url, folder = where
    endpoint = request.getfixturevalue("s3_endpoint") if url else None
    ready = tmp_path / "ready"
    ready.mkdir()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        runs = [
            pool.submit(import_rounds, url, folder, endpoint, writer, ROUNDS, str(ready))
            for writer in "AB"
        ]
        for run in runs:
            run.result(timeout=240)

    root = open_root(url, Path(folder), endpoint)
    store = BarStore(root)
    expected = {f"{w}{n}" for w in "AB" for n in range(ROUNDS)} | {"SHARED"}
    assert {info.symbol for info in store.symbols()} == expected
    for info in store.symbols():
        assert info == stored_info(root, store, info.symbol)
    shared = store.info("SHARED")
    assert shared is not None
    assert shared.content_hash in {f"A{ROUNDS - 1}", f"B{ROUNDS - 1}"}


def s3_store(bucket: Bucket) -> tuple[BarStore, S3Root]:
    """A store on the bucket with its own S3 client, as in another process."""
    root = S3Root(bucket.url("bars"), bucket.endpoint)
    return BarStore(root), root


def test_the_entry_of_a_symbol_two_importers_race_on_describes_the_stored_file(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, first_root = s3_store(bucket)
    second, _ = s3_store(bucket)
    read = first_root.read_version
    reads: list[str] = []

    def overtaken(path: str) -> tuple[bytes, str] | None:
        # first's file is stored; second stores the same symbol and lists it before first can
        reads.append(path)
        if len(reads) == 1:
            second.write_symbol("SAME", frame(40, 5.0), "real", "second")
        return read(path)

    monkeypatch.setattr(first_root, "read_version", overtaken)
    first.write_symbol("SAME", frame(10, 1.0), "real", "first")

    reader, root = s3_store(bucket)
    info = reader.info("SAME")
    assert info is not None
    assert (info.bars, info.content_hash) == (40, "second")
    assert info == stored_info(root, reader, "SAME")


def test_a_lost_manifest_update_is_read_again_and_retried(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, first_root = s3_store(bucket)
    second, _ = s3_store(bucket)
    first.write_symbol("OLD", frame(3, 1.0), "real")
    read = first_root.read_version
    reads: list[str] = []
    lost: list[WriteConflict] = []
    put = first_root.put

    def read_then_overtaken(path: str) -> tuple[bytes, str] | None:
        found = read(path)
        reads.append(path)
        if len(reads) == 1:
            second.write_symbol("OTHER", frame(4, 1.0), "real")  # the manifest's ETag changes
        return found

    def recording_put(path: str, data: bytes, **condition: object) -> str:
        try:
            return put(path, data, **condition)  # type: ignore[arg-type]
        except WriteConflict as error:
            lost.append(error)
            raise

    monkeypatch.setattr(first_root, "read_version", read_then_overtaken)
    monkeypatch.setattr(first_root, "put", recording_put)
    first.write_symbol("MINE", frame(5, 1.0), "real")

    assert len(reads) == 2, "the manifest is read again after the lost PUT"
    assert len(lost) == 1
    refused = lost[0].__cause__.__cause__  # s3fs's OSError, then botocore's error
    assert isinstance(refused, ClientError)
    assert refused.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert [i.symbol for i in s3_store(bucket)[0].symbols()] == ["MINE", "OLD", "OTHER"]


def test_a_lost_manifest_on_s3_is_rebuilt_from_the_footers(bucket: Bucket) -> None:
    store, root = s3_store(bucket)
    store.write_many(
        [SymbolData("AAA", frame(3, 1.0), "real"), SymbolData("BBB", frame(4, 1.0), "real")]
    )
    root.delete(root.join("manifest.json"))
    reader, _ = s3_store(bucket)
    assert [(i.symbol, i.bars) for i in reader.symbols()] == [("AAA", 3), ("BBB", 4)]
    assert root.read_version(root.join("manifest.json")) is not None  # created if absent


def test_a_manifest_that_keeps_changing_fails_clearly(
    bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, root = s3_store(bucket)
    store.write_symbol("OLD", frame(3, 1.0), "real")
    monkeypatch.setattr(bar_module, "_CAS_BACKOFF_S", 0.0)
    put = root.put

    def always_lost(path: str, data: bytes, **condition: object) -> str:
        if condition:
            raise WriteConflict(f"{path} changed since it was read")
        return put(path, data)

    monkeypatch.setattr(root, "put", always_lost)
    with pytest.raises(Conflict, match=r"20 attempts .* run the import again"):
        store.write_symbol("NEW", frame(3, 1.0), "real")


def test_conditional_puts_on_s3(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    root = S3Root(bucket.url("cas"), bucket.endpoint)
    path = root.join("m.json")
    assert root.read_version(path) is None
    etag = root.put(path, b"v1", if_absent=True)
    assert root.read_version(path) == (b"v1", etag)
    assert root.etags(root.join()) == {"m.json": etag}
    with pytest.raises(WriteConflict):
        root.put(path, b"again", if_absent=True)  # 412, If-None-Match
    newer = root.put(path, b"v2", if_match=etag)
    with pytest.raises(WriteConflict):
        root.put(path, b"stale", if_match=etag)  # 412, If-Match
    root.delete(path)
    with pytest.raises(WriteConflict):
        root.put(path, b"gone", if_match=newer)  # 404: deleted since it was read
    assert root.read_version(path) is None

    conflict = ClientError(
        {
            "Error": {"Code": "ConditionalRequestConflict", "Message": "try again"},
            "ResponseMetadata": {"HTTPStatusCode": 409},
        },
        "PutObject",
    )

    def busy(*args: object, **kwargs: object) -> None:
        raise translate_boto_error(conflict)  # what s3fs raises for S3's 409

    monkeypatch.setattr(root.fs, "call_s3", busy)
    with pytest.raises(WriteConflict):
        root.put(path, b"x", if_absent=True)
    with pytest.raises(OSError, match="try again"):
        root.put(path, b"x")  # an unconditional PUT has nothing to lose: the error stands
