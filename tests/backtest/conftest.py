"""Backtest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from backtest_support import Market


@pytest.fixture(scope="session")
def market(shared_data: Path) -> Market:
    """The shared daily bars, read once per session."""
    return Market(shared_data / "daily")
