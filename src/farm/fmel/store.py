"""The FMEL dataset root and the DuckDB database that queries it (one per app, cursors per use)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from farm.fmel.layout import Listings


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
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

    def rows(self, part: str) -> int:
        """How many records a part file holds (from its footer, read once: parts are immutable)."""
        if (count := self._rows.get(part)) is None:
            count = self._rows[part] = pq.read_metadata(part).num_rows
        return count

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
