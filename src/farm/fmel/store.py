"""The FMEL dataset root and the DuckDB database that queries it (one per app, cursors per use)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from farm.fmel.layout import Listings, part_names
from farm.fmel.summary import SUMMARIZED_KINDS, SUMMARY_NAME, Summary, read_summary


class FmelStore:
    """``root`` holds the Parquet records; ``cursor()`` gives a DuckDB cursor over them.

    One in-memory DuckDB database is opened on first use and shared, so Parquet metadata is
    cached across requests (part files are immutable); every use gets its own cursor. Folder
    listings and part row counts are cached too.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.listings = Listings()
        self._rows: dict[str, int] = {}
        self._summaries: dict[tuple[int, int, int, int], Summary | None] = {}
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def rows(self, part: str) -> int:
        """How many records a part file holds (from its footer, read once: parts are immutable)."""
        if (count := self._rows.get(part)) is None:
            count = self._rows[part] = pq.read_metadata(part).num_rows
        return count

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
        key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if key not in self._summaries:
            self._summaries[key] = read_summary(Path(path))
        summary = self._summaries[key]
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
