"""Settings, read from the environment with the ``FARM_`` prefix (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SandboxMode = Literal["bwrap", "unsafe-local"]


class Settings(BaseSettings):
    """Every knob of the platform. Embedded defaults need no configuration at all."""

    model_config = SettingsConfigDict(env_prefix="FARM_", extra="ignore")

    home: Path = Field(
        default=Path(".farm"), description="Holds the SQLite db, artifacts, bars and FMEL records."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = Field(default=None, description="Default: SQLite in FARM_HOME.")
    artifacts_url: str | None = Field(default=None, description="Default: FARM_HOME/artifacts.")
    fmel_url: str | None = Field(default=None, description="Default: FARM_HOME/fmel.")
    redis_url: str | None = None
    data_dir: Path | None = Field(default=None, description="Folder of bars imported at start.")
    max_request_bytes: int = 2 * 1024 * 1024
    max_agent_bytes: int = 1024 * 1024

    # Sandbox (DESIGN §4).
    sandbox: SandboxMode = "bwrap"
    sandbox_memory_mb: int = 2048
    sandbox_cpu_s: int = 3600
    sandbox_wall_s: int = 1800
    sandbox_pids: int = 64
    sandbox_file_mb: int = 64
    sandbox_output_kb: int = 1024
    sandbox_uid: int = 65534

    # Backtests.
    backtest_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=0,
        description="Backtests run at once in this process; 0 for an API-only process.",
    )
    standard_symbols: list[str] = Field(
        default_factory=lambda: [
            "SPY",
            "QQQ",
            "AAPL",
            "MSFT",
            "GOOGL",
            "AMZN",
            "TSLA",
            "NVDA",
            "META",
            "JPM",
        ]
    )
    standard_start: str | None = None
    standard_end: str | None = None
    risk_free_rate: float = 0.0

    # Output caps and retention (bounded output per session; unset retention keeps forever).
    fmel_max_session_mb: int = Field(
        default=256, ge=1, description="FMEL bytes per session; later records are dropped."
    )
    results_max_rows: int = Field(
        default=100_000, ge=1, description="Fills and trades stored per backtest (the first N)."
    )
    fmel_retention_days: int | None = Field(
        default=None, ge=1, description="Delete FMEL sessions not written to for this long."
    )
    results_retention_days: int | None = Field(
        default=None, ge=1, description="Delete the series of backtests finished this long ago."
    )
    retention_sweep_minutes: float = Field(
        default=60.0, gt=0, description="How often retention runs (also once at start)."
    )

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def sqlite_path(self) -> Path:
        return self.home / "farm.db"

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in use (SQLite in FARM_HOME unless FARM_DATABASE_URL is set)."""
        url = self.database_url or f"sqlite:///{self.sqlite_path}"
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url

    @property
    def artifacts_dir(self) -> Path:
        return (
            Path(self.artifacts_url.removeprefix("file://"))
            if self.artifacts_url
            else self.home / "artifacts"
        )

    @property
    def bars_dir(self) -> Path:
        return self.home / "bars"

    @property
    def fmel_dir(self) -> Path:
        return Path(self.fmel_url.removeprefix("file://")) if self.fmel_url else self.home / "fmel"
