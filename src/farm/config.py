"""Settings, read from the environment with the ``FARM_`` prefix (pydantic-settings)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

from limits import parse as parse_rate
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from farm.brokers.simulated import FILL_LIMIT, MARGIN_LEVERAGE, OPEN_ORDER_LIMIT
from farm.storage.objects import check_url

SandboxMode = Literal["bwrap", "unsafe-local"]
FeedMode = Literal["replay", "alpaca", "off"]
AlpacaFeed = Literal["iex", "sip"]


class Settings(BaseSettings):
    """Every knob of the platform. Embedded defaults need no configuration at all."""

    model_config = SettingsConfigDict(env_prefix="FARM_", extra="ignore")

    home: Path = Field(
        default=Path(".farm"), description="Holds the SQLite db, artifacts, bars and FMEL records."
    )
    host: str = "127.0.0.1"
    port: int = 8000
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Proxies whose X-Forwarded-For and -Proto are trusted (comma-separated, '*').",
    )
    database_url: str | None = Field(default=None, description="Default: SQLite in FARM_HOME.")
    artifacts_url: str | None = Field(
        default=None, description="A folder or s3://bucket/prefix. Default: FARM_HOME/artifacts."
    )
    bars_url: str | None = Field(
        default=None, description="A folder or s3://bucket/prefix. Default: FARM_HOME/bars."
    )
    fmel_url: str | None = Field(
        default=None, description="A folder or s3://bucket/prefix. Default: FARM_HOME/fmel."
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="The S3-compatible server of s3:// URLs (default AWS); credentials come "
        "from the standard AWS_* variables.",
    )
    redis_url: str | None = None
    bus: Literal["memory", "redis"] = Field(
        default="memory",
        description="The event bus: in this process, or Redis Streams at FARM_REDIS_URL.",
    )
    bus_claim_idle_s: float = Field(
        default=30.0,
        gt=0,
        description="Redis bus: a message pending this long (its consumer died or its handler "
        "failed) is taken over by another consumer and delivered again.",
    )
    bus_max_deliveries: int = Field(
        default=5, ge=1, description="Redis bus: deliveries before a message is dead-lettered."
    )
    outbox_poll_s: float = Field(
        default=1.0, gt=0, description="How often the outbox relay looks for unrelayed events."
    )
    redis_cluster: bool = Field(
        default=False, description="FARM_REDIS_URL names a node of a Redis Cluster."
    )
    data_dir: Path | None = Field(default=None, description="Folder of bars imported at start.")
    max_request_bytes: int = 2 * 1024 * 1024
    max_agent_bytes: int = 1024 * 1024

    # Agent uploads (issue 8): the file is parsed in a child process with these caps.
    agent_check_timeout_s: float = Field(default=5.0, gt=0, description="Wall time per check.")
    agent_check_memory_mb: int = Field(default=512, ge=64, description="Address space cap.")
    agent_checks: int = Field(default=2, ge=1, description="Checks run at once; others wait.")

    # Rate limits (issue 8), `limits` notation: per user (valid token), per address (no valid
    # token), and failed token attempts per address (past it, every token from there gets 429).
    rate_limits: bool = True
    rate_limit_user: str = "600/minute"
    rate_limit_address: str = "600/minute"
    rate_limit_auth_failures: str = "10/minute"

    @field_validator("rate_limit_user", "rate_limit_address", "rate_limit_auth_failures")
    @classmethod
    def _rate(cls, value: str) -> str:
        parse_rate(value)  # raises ValueError, naming the bad rate
        return value

    # Gateway (issue 12): OIDC sign-in beside API tokens, /metrics and logs.
    oidc_issuer: str | None = Field(
        default=None, description="Accept ID tokens of this issuer (e.g. Firebase's)."
    )
    oidc_audience: str | None = Field(
        default=None, description="The `aud` tokens must carry (required with the issuer)."
    )
    oidc_jwks_url: str | None = Field(
        default=None, description="Default: `jwks_uri` of the issuer's openid-configuration."
    )
    oidc_jwks_refresh_s: float = Field(
        default=60.0, gt=0, description="Least seconds between two fetches of the issuer's keys."
    )
    metrics_token: str | None = Field(
        default=None, description="When set, GET /metrics needs `Authorization: Bearer` it."
    )
    log_format: Literal["text", "json"] = "text"

    @model_validator(mode="after")
    def _bus_needs_redis(self) -> Settings:
        if self.bus == "redis" and not self.redis_url:
            raise ValueError("FARM_BUS=redis needs FARM_REDIS_URL")
        return self

    @model_validator(mode="after")
    def _oidc_audience(self) -> Settings:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("FARM_OIDC_AUDIENCE is required with FARM_OIDC_ISSUER")
        return self

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
        description="Backtests run at once, each in a worker process; 0 for an API-only process.",
    )
    backtest_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A running backtest's lease: its worker renews it every third of this; "
        "once it expires (the worker died or hung) any live worker re-queues the backtest.",
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

    # Re-evaluation and data honesty (issue 12).
    evaluate_cooldown_s: int = Field(
        default=600,
        ge=0,
        description="Seconds after an agent's last standard evaluation before "
        "POST /api/agents/{id}/evaluate may run it again.",
    )
    import_gap_days: int = Field(
        default=5,
        ge=1,
        description="The importer warns about a symbol whose bars skip more than this many "
        "trading days (weekdays) in a row.",
    )

    # Leaderboard (issue 8: forward results rank the headline board).
    leaderboard_min_forward_bars: int = Field(
        default=20,
        ge=1,
        description="Bars dated after submission an agent needs before the headline ranks it.",
    )
    leaderboard_cache_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a cached board is served before it is rebuilt from SQL (a missed "
        "event cannot leave it stale longer).",
    )

    # Paper trading: accounts and the live feed (issue 9).
    account_max_cash: int = Field(
        default=1_000_000_000, gt=0, description="The most cash one paper account may hold."
    )
    feed: FeedMode = Field(
        default="replay",
        description="The live feed: a replay of stored bars, Alpaca's stream, or none.",
    )
    feed_replay_start: date | None = Field(
        default=None,
        description="First replayed date of a new pass; default one year before the last bar.",
    )
    feed_interval_s: float = Field(
        default=1.0, gt=0, le=86_400, description="Wall seconds per replayed timestep."
    )
    feed_symbols: list[str] = Field(
        default_factory=list, description="Symbols the feed carries; default every stored one."
    )

    # Alpaca (issue 10): accounts of broker `alpaca` and the `alpaca` live feed.
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts brokers' keys at rest; generated into FARM_HOME when unset "
        "(embedded), required at start when scaled out (FARM_REDIS_URL or PostgreSQL).",
    )
    alpaca_trading_url: str = Field(
        default="https://paper-api.alpaca.markets",
        description="Alpaca's paper REST base; its trade stream is the same host's /stream.",
    )
    alpaca_data_url: str = Field(
        default="wss://stream.data.alpaca.markets",
        description="Alpaca's data stream base; /v2/{FARM_ALPACA_FEED} is appended.",
    )
    alpaca_history_url: str = Field(
        default="https://data.alpaca.markets",
        description="Alpaca's historical data REST base (warm-up bars).",
    )
    alpaca_key_id: str | None = Field(default=None, description="The operator's data key id.")
    alpaca_secret_key: SecretStr | None = Field(
        default=None, description="The operator's data secret key."
    )
    alpaca_feed: AlpacaFeed = Field(default="iex", description="Alpaca's data feed.")
    alpaca_reconcile_s: float = Field(
        default=60.0, gt=0, description="How often an Alpaca session reconciles its account."
    )

    # Paper sessions (issue 9): runtime processes claim them with leases (issue 13).
    paper_runtime: bool = Field(
        default=True,
        description="Run the feed and paper sessions in a runtime process (false: the feed runs "
        "in this process and no paper session runs).",
    )
    paper_step_timeout_s: float = Field(
        default=5.0, gt=0, le=600, description="Time an agent has to decide on a live bar."
    )
    paper_poll_s: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description="How often the runtime looks for start/stop requests.",
    )
    paper_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="A paper session's lease: its runtime renews it every third of this; once "
        "it expires (the worker died or hung) any live paper worker takes the session over.",
    )
    paper_max_sessions_per_worker: int = Field(
        default=1000,
        ge=1,
        description="The most paper sessions one paper worker runs; the others wait for a "
        "worker with room, so sessions spread over the paper workers.",
    )
    paper_max_warmup_bars: int = Field(
        default=5000, ge=0, description="The most warm-up bars a paper session may ask for."
    )

    # Risk rules of the host ledger and caps per session (issue 8: accounting, open orders, fills).
    max_leverage: float = Field(
        default=MARGIN_LEVERAGE,
        gt=0,
        description="Gross exposure allowed, as a multiple of equity; past it an order is margin.",
    )
    max_open_orders: int = Field(
        default=OPEN_ORDER_LIMIT,
        ge=1,
        description="Orders not yet done per session; past it a new order is rejected.",
    )
    max_fills: int = Field(
        default=FILL_LIMIT, ge=1, description="Fills per session; past it the session fails."
    )

    # Backtest quotas and fair scheduling (issue 8, item 5). Standard evaluations do not count.
    max_queued_backtests_per_user: int = Field(
        default=10, ge=1, description="Custom backtests one user may have queued at once."
    )
    max_running_backtests_per_user: int = Field(
        default=2, ge=1, description="Custom backtests of one user the scheduler runs at once."
    )

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

    @field_validator("artifacts_url", "bars_url", "fmel_url")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        return check_url(value)

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def scaled_out(self) -> bool:
        """True in the scale-out shape: several processes share Redis or a PostgreSQL
        database (the embedded shape keeps everything in FARM_HOME)."""
        return bool(self.redis_url) or self.resolved_database_url.startswith("postgresql")

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
        return Path(self.bars_url.removeprefix("file://")) if self.bars_url else self.home / "bars"

    @property
    def fmel_dir(self) -> Path:
        return Path(self.fmel_url.removeprefix("file://")) if self.fmel_url else self.home / "fmel"
