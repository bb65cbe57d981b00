"""Shared fixtures: where the real market data lives, and settings in a temporary FARM_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from farm.config import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``FARM_TEST_DATA``): real bars; never copied into the repo."""
    path = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (path / "daily").is_dir():
        pytest.fail(f"test data not found at {path}; set FARM_TEST_DATA")
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a fresh FARM_HOME."""
    return Settings(home=tmp_path / "farm", sandbox_wall_s=120)
