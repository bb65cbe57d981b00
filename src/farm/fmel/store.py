"""The FMEL dataset root and the DuckDB database that queries it (one per app, cursors per use)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pyarrow.parquet as pq

from farm.fmel.layout import part_names
from farm.fmel.summary import SUMMARIZED_KINDS, SUMMARY_NAME, Summary, read_summary
from farm.storage.objects import LocalRoot, Root, open_root, register

if TYPE_CHECKING:
    from farm.config import Settings

MAX_CACHED_SUMMARIES = 10_000


def open_fmel_root(settings: Settings) -> Root:
    """Where ``FARM_FMEL_URL`` keeps FMEL records (a folder, or ``s3://bucket/prefix``)."""
    return open_root(settings.fmel_url, settings.fmel_dir, settings.s3_endpoint_url)


def fmel_staging(settings: Settings) -> Path:
    """Where a recorder writes parts before copying them to object storage."""
    return settings.home / "cache" / "fmel"


class FmelStore:
    """``root`` holds the Parquet records; ``cursor()`` gives a DuckDB cursor over them.

    One in-memory DuckDB database is opened on first use and shared, so Parquet metadata is
    cached across requests (part files are immutable); every use gets its own cursor. Local
    folder listings and part row counts are cached too. On object storage DuckDB reads the
    parts through the root's S3 client.
    """

    def __init__(self, root: Path | Root) -> None:
        self.root: Root = LocalRoot(root) if isinstance(root, Path) else root
        # Bounded: a long-running server must not grow without limit.
        self._rows = lru_cache(maxsize=1_000_000)(self._footer_rows)
        self._summaries = lru_cache(maxsize=MAX_CACHED_SUMMARIES)(self._summary_at)
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def _footer_rows(self, part: str) -> int:
        with self.root.open(part) as handle:
            return int(pq.read_metadata(handle).num_rows)

    def _summary_at(self, path: str, *identity: object) -> Summary | None:
        """The summary at ``path``; ``identity`` (what changes when it is replaced) keys the
        cache."""
        try:
            return read_summary(self.root.read(path))
        except FileNotFoundError:
            return None

    def rows(self, part: str) -> int:
        """How many records a part file holds (from its footer, read once: parts are immutable)."""
        return self._rows(part)

    def summary(self, folder: str, names: tuple[str, ...]) -> Summary | None:
        """The session's summary if it covers exactly the session's parts (``names``), else None.

        Summaries are cached by file identity (see :meth:`Root.identity`).
        """
        if SUMMARY_NAME not in names:
            return None
        path = f"{folder}/{SUMMARY_NAME}"
        identity = self.root.identity(path)
        if identity is None:
            return None
        summary = self._summaries(path, *identity)
        parts = {n for kind in SUMMARIZED_KINDS for n in part_names(names, kind)}
        return summary if summary is not None and summary.parts == parts else None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of the shared database, closed after the block."""
        cursor = self._database().cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def close(self) -> None:
        """Close the DuckDB database (reopened on next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _database(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._db is None:
                self._db = connect()
                register(self._db, self.root)
            return self._db


def connect() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database set up for FMEL queries (UTC, Parquet metadata cached)."""
    db = duckdb.connect(":memory:")
    db.execute(
        "SET GLOBAL TimeZone = 'UTC'; SET GLOBAL parquet_metadata_cache = true; "
        "SET GLOBAL late_materialization_max_rows = 1000"
    )
    return db
