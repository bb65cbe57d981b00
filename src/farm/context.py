"""The platform's backends, built once per process from settings and shared by every service.

A process plays one role (docs/architecture.md): ``all`` (``farm up``: everything in one
process), ``api`` (``farm serve``: HTTP and event handlers only), ``backtest`` (``farm worker
backtest``: the backtest queue), ``paper`` (``farm worker paper``: a paper runtime, running the
sessions it claims; on the in-process bus it runs the feed too) or ``feed`` (``farm feed``: the
live feed, its steps fanned out over Redis Streams to the paper workers). Every role relays the
outbox when the bus is shared (Redis); on the in-process bus only the processes that handle
events (``all``, ``api``) relay, so no event is spent on a process without subscribers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

from farm.agents.checker import AgentChecker
from farm.agents.service import AgentService
from farm.backtest.job import BacktestJob
from farm.backtest.scheduler import Scheduler
from farm.backtest.service import BacktestService
from farm.backtest.worker import WorkerPool
from farm.config import Settings
from farm.events import AGENT_DELETED, AGENT_SUBMITTED, EventBus, open_bus
from farm.fmel.store import FmelStore, open_fmel_root
from farm.leaderboard.service import LeaderboardService, record_backtest_result
from farm.leases import renew_lease
from farm.marketdata.bootstrap import ensure_data
from farm.marketdata.fanout import open_bar_bus
from farm.marketdata.feed import FeedRunner
from farm.marketdata.store import BarStore, open_bar_store
from farm.outbox import OutboxRelay
from farm.papertrading.runtime import RuntimeProcess
from farm.retention import RetentionSweeper
from farm.sandbox.launcher import SandboxUnavailable, check_sandbox
from farm.secretbox import SecretBox
from farm.storage.artifacts import ArtifactStore, open_artifact_store
from farm.storage.db import Database

log = logging.getLogger("farm")

Role = Literal["all", "api", "backtest", "paper", "feed"]
ROLES: tuple[Role, ...] = ("all", "api", "backtest", "paper", "feed")


@dataclass
class Context:
    """Everything a request or a job needs, wired for the configured deployment shape."""

    settings: Settings
    db: Database
    artifacts: ArtifactStore
    bus: EventBus
    relay: OutboxRelay
    bars: BarStore
    agents: AgentService
    leaderboard: LeaderboardService
    fmel: FmelStore
    backtests: BacktestService
    scheduler: Scheduler
    feed: FeedRunner
    feed_bus: EventBus  # where the feed publishes its steps
    workers: WorkerPool
    retention: RetentionSweeper
    paper: RuntimeProcess
    role: Role = "all"
    sandbox_refusal: str | None = field(default=None, init=False)  # why agents cannot run here
    _secrets: SecretBox | None = field(default=None, init=False, repr=False)
    _migrated: bool = field(default=False, init=False, repr=False)
    _sandbox_checked: bool = field(default=False, init=False, repr=False)

    @property
    def secrets(self) -> SecretBox:
        """The box that seals and opens brokers' keys, built once (by :meth:`start` in the
        processes that hold such keys)."""
        if self._secrets is None:
            self._secrets = SecretBox.from_settings(self.settings)
        return self._secrets

    @classmethod
    def build(cls, settings: Settings, role: Role = "all") -> Context:
        """Wire the backends chosen by ``settings`` for ``role`` (nothing is connected until
        first use)."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        artifacts = open_artifact_store(settings)
        bus = open_bus(settings)
        relay = OutboxRelay(db, bus, poll_s=settings.outbox_poll_s)
        relays = _relays(role, settings)
        if relays:
            relay.hook()
        bars = open_bar_store(settings)
        workers = WorkerPool(
            backtest_job,
            settings,
            relay.flush if relays else lambda: None,
            partial(renew_lease, db, settings.backtest_lease_s),
        )
        scheduler = Scheduler(
            db,
            workers,
            settings.backtest_workers,
            max_running_per_user=settings.max_running_backtests_per_user,
            lease_s=settings.backtest_lease_s,
        )
        backtests = BacktestService(db, artifacts, bars, settings, scheduler.notify)
        bus.subscribe(AGENT_SUBMITTED, backtests.queue_standard_evaluation)
        bus.subscribe(AGENT_DELETED, backtests.cancel_agent_work)
        feed_bus = _bars_bus(settings, bus)
        return cls(
            settings=settings,
            db=db,
            artifacts=artifacts,
            bus=bus,
            relay=relay,
            bars=bars,
            agents=AgentService(
                db,
                artifacts,
                AgentChecker(
                    timeout_s=settings.agent_check_timeout_s,
                    memory_mb=settings.agent_check_memory_mb,
                    concurrency=settings.agent_checks,
                ),
                settings.max_agent_bytes,
            ),
            leaderboard=LeaderboardService.open(db, bus, settings),
            fmel=FmelStore(open_fmel_root(settings)),
            backtests=backtests,
            scheduler=scheduler,
            feed=FeedRunner(db, bars, feed_bus, settings),
            feed_bus=feed_bus,
            workers=workers,
            retention=RetentionSweeper(settings, db, artifacts),
            paper=RuntimeProcess(settings, bus),
            role=role,
        )

    def migrate(self) -> None:
        """Apply the database migrations, once per context (``farm up`` migrates before it
        creates the demo user; its start then does not migrate again)."""
        if not self._migrated:
            self.db.migrate()
            self._migrated = True

    def start(self) -> None:
        """Start what this process's role runs. ``all`` prepares storage and data first (the
        other roles leave that to ``farm migrate`` and ``farm data import``); backtests run
        here if the role has them, this process has workers and the sandbox works (if it does
        not, agents are refused with the reason). Scaled out without ``FARM_SECRET_KEY``, the
        processes that hold brokers' keys (``all``, ``api``, ``paper``) stop here."""
        role = self.role
        if role in ("all", "api", "paper"):
            self.secrets  # noqa: B018 - built now: a missing key fails the start, not a request
        if role == "all":
            self.migrate()
        if role in ("all", "api"):
            self.bus.start()  # the event handlers (queueing evaluations, the leaderboard)
        if _relays(role, self.settings):
            self.relay.start()  # its first pass relays the events a stopped process left
        if role == "all":
            imported = ensure_data(self.settings, self.bars, log)
            if imported is not None:
                changed = [str(r.symbol) for r in imported.imported]
                if queued := self.backtests.requeue_standard_evaluations(changed):
                    log.info("standard data changed: %d standard evaluations queued", queued)
        if role in ("all", "backtest"):
            self.retention.start()
        if self.settings.feed != "off":  # without a feed no paper session can run (503)
            self._start_live()
        if role in ("all", "backtest") and self.settings.backtest_workers > 0:
            self._start_backtests()

    def _start_backtests(self) -> None:
        """The backtest workers and their scheduler, if the sandbox works here."""
        if self._sandbox_works():
            self.workers.start(self.settings.backtest_workers)
            self.scheduler.start()
        else:
            assert self.sandbox_refusal is not None
            self.backtests.refuse(self.sandbox_refusal)

    def _sandbox_works(self) -> bool:
        """Whether agents can run in this process (checked once; :attr:`sandbox_refusal`
        says why not, and ``/health`` shows it)."""
        if not self._sandbox_checked:
            self._sandbox_checked = True
            try:
                check_sandbox(self.settings)
            except SandboxUnavailable as exc:
                self.sandbox_refusal = (
                    f"the agent sandbox cannot be set up, so no agent runs: {exc}"
                )
                log.error("%s", self.sandbox_refusal)
        return self.sandbox_refusal is None

    def _start_live(self) -> None:
        """Start the feed and the paper runtime if the role runs them: on the in-process bus
        the runtime runs the feed; on Redis `farm feed` does (and `farm up`, every role)."""
        role, settings = self.role, self.settings
        runtime = role in ("all", "paper") and settings.paper_runtime
        if role == "paper" and runtime and not self._sandbox_works():
            return  # claiming nothing, its sessions wait for a worker whose sandbox works
        if role == "feed" or (role == "all" and (settings.bus != "memory" or not runtime)):
            self.feed.start()
        if runtime:
            self.paper.start()  # returns once its feed runs (on the in-process bus)

    def close(self) -> None:
        """Stop background work and release connections."""
        self.feed.stop()
        if self.feed_bus is not self.bus:
            self.feed_bus.close()
        self.retention.stop()
        self.paper.close()
        self.scheduler.stop()
        self.workers.close()
        self.relay.stop()
        self.bus.close()
        self.leaderboard.close()
        self.fmel.close()
        self.db.dispose()


def _bars_bus(settings: Settings, bus: EventBus) -> EventBus:
    """Where this process's feed publishes its steps: the process's bus, or on Redis the
    fan-out stream every paper worker reads (:mod:`farm.marketdata.fanout`)."""
    return bus if settings.bus == "memory" else open_bar_bus(settings)


def _relays(role: Role, settings: Settings) -> bool:
    """Whether a process of ``role`` relays the outbox (see the module docstring)."""
    return role in ("all", "api") or settings.bus != "memory"


def backtest_job(settings: Settings) -> BacktestJob:
    """The backtest job of a worker process, wired from ``settings`` (its events go through
    the outbox)."""
    db = Database(settings.resolved_database_url)
    artifacts = open_artifact_store(settings)
    ranked = partial(record_backtest_result, risk_free_rate=settings.risk_free_rate)
    return BacktestJob(db, artifacts, open_bar_store(settings), settings, [ranked])
