"""Object storage test helpers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.marketdata.store import BarStore, SymbolData, SymbolInfo
from farm.storage.objects import Root, S3Root, open_root
from support import user_token


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the local S3 server; ``url(name)`` is an ``s3://`` URL in it."""

    endpoint: str
    name: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"


@contextmanager
def s3_server(
    bucket: Bucket, home: Path, real_bars: Path, symbols: Sequence[str], **settings: Any
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A server whose artifacts, bars (``symbols``, copied from ``real_bars``) and FMEL are all
    in the bucket (SQLite stays in ``home``), and alice's Authorization header."""
    bars = BarStore(S3Root(bucket.url("bars"), bucket.endpoint))
    local = BarStore(real_bars)
    for symbol in symbols:
        bars.write_symbol(symbol, local.frame(symbol), "real")
    configured = Settings(
        home=home,
        artifacts_url=bucket.url("artifacts"),
        bars_url=bucket.url("bars"),
        fmel_url=bucket.url("fmel"),
        s3_endpoint_url=bucket.endpoint,
        **settings,
    )
    with TestClient(create_app(configured)) as client:
        token = user_token(client.app.state.context, "alice")  # type: ignore[attr-defined]
        yield client, {"Authorization": f"Bearer {token}"}


def frame(days: int, first: float) -> pd.DataFrame:
    """``days`` daily bars from 2024-01-01 closing at ``first``, ``first + 1``..."""
    index = pd.date_range("2024-01-01", periods=days, freq="D", tz="UTC", name="timestamp")
    close = [first + i for i in range(days)]
    return pd.DataFrame(
        {"open": close, "high": close, "low": close, "close": close, "volume": [1e6] * days},
        index=index,
    )


def import_rounds(
    url: str | None, folder: str, endpoint: str | None, writer: str, rounds: int, ready: str
) -> None:
    """An importer process: ``rounds`` imports of a symbol of its own and of ``SHARED`` (which
    every writer replaces with different bars), started once both writers have marked ``ready``.
    """
    store = BarStore(open_root(url, Path(folder), endpoint))  # as open_bar_store does
    (Path(ready) / writer).touch()
    while len(list(Path(ready).iterdir())) < 2:
        time.sleep(0.01)
    for n in range(rounds):
        mine = SymbolData(f"{writer}{n}", frame(5, float(n)), "real")
        shared = SymbolData("SHARED", frame(1 + n, 1.0), "real", content_hash=f"{writer}{n}")
        store.write_many([mine, shared])


def stored_info(root: Root, store: BarStore, symbol: str) -> SymbolInfo:
    """What the stored file of ``symbol`` holds (its rows; source and hash from its footer)."""
    with root.open(store.path_of(symbol)) as handle:
        stored = pq.ParquetFile(handle)
        ts = stored.read(columns=["timestamp"]).column("timestamp")
        farm = json.loads(stored.schema_arrow.metadata[b"farm"])
    return SymbolInfo(
        symbol, ts[0].as_py(), ts[-1].as_py(), len(ts), farm["source"], farm["contentHash"]
    )
