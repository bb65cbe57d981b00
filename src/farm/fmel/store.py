"""The FMEL dataset root and the DuckDB database that queries it (one per app, cursors per use)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb


class FmelStore:
    """``root`` holds the Parquet records; ``cursor()`` gives a DuckDB cursor over them.

    One in-memory DuckDB database is opened on first use and shared, so Parquet metadata is
    cached across requests (part files are immutable); every use gets its own cursor.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._db: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()

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
                db = duckdb.connect(":memory:")
                db.execute(
                    "SET GLOBAL TimeZone = 'UTC'; SET GLOBAL parquet_metadata_cache = true; "
                    "SET GLOBAL late_materialization_max_rows = 1000"
                )
                self._db = db
            return self._db
