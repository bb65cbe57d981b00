"""The FMEL dataset root and the DuckDB database that queries it (one per app, cursors per use)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from farm.fmel.layout import Listings, part_names
from farm.fmel.summary import SUMMARIZED_KINDS, SUMMARY_NAME, Summary, read_summary

MAX_CACHED_SUMMARIES = 10_000


def _footer_rows(part: str) -> int:
    return int(pq.read_metadata(part).num_rows)


def _summary_at(path: str, *identity: int) -> Summary | None:
    """The summary at ``path``; ``identity`` (device, inode, mtime, size) keys the cache."""
    return read_summary(Path(path))


class FmelStore:
    """``root`` holds the Parquet records; ``cursor()`` gives a DuckDB cursor over them.

    One in-memory DuckDB database is opened on first use and shared, so Parquet metadata is
    cached across requests (part files are immutable); every use gets its own cursor. Folder
    listings and part row counts are cached too.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.listings = Listings()
        # Bounded: a long-running server must not grow without limit.
        self._rows = lru_cache(maxsize=1_000_000)(_footer_rows)
        self._summaries = lru_cache(maxsize=MAX_CACHED_SUMMARIES)(_summary_at)
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def rows(self, part: str) -> int:
        """How many records a part file holds (from its footer, read once: parts are immutable)."""
        return self._rows(part)

    def summary(self, folder: str, names: tuple[str, ...]) -> Summary | None:
        """The session's summary if it covers exactly the session's parts (``names``), else None.

        Summaries are cached by file identity (device, inode, mtime, size).
        """
        if SUMMARY_NAME not in names:
            return None
        path = f"{folder}/{SUMMARY_NAME}"
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        summary = self._summaries(path, stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
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
            return self._db


def connect() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database set up for FMEL queries (UTC, Parquet metadata cached)."""
    db = duckdb.connect(":memory:")
    db.execute(
        "SET GLOBAL TimeZone = 'UTC'; SET GLOBAL parquet_metadata_cache = true; "
        "SET GLOBAL late_materialization_max_rows = 1000"
    )
    return db
