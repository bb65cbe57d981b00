"""Fixtures for market data tests: a store in a temporary folder and a CSV writer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from marketdata_helpers import HEADER, WriteCsv

from farm.marketdata.store import BarStore


@pytest.fixture
def store(tmp_path: Path) -> BarStore:
    """An empty bar store."""
    return BarStore(tmp_path / "bars")


@pytest.fixture
def write_csv(tmp_path: Path) -> WriteCsv:
    """``write_csv(name, rows, header=HEADER, folder="in")``: a CSV file in a temporary folder."""

    def write(name: str, rows: Sequence[str], header: str = HEADER, folder: str = "in") -> Path:
        path = tmp_path / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *rows]) + "\n")
        return path

    return write
