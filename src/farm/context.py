"""The platform's backends, built once per process from settings and shared by every service."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from farm.agents.checker import AgentChecker
from farm.agents.service import AgentService
from farm.backtest.job import BacktestJob
from farm.backtest.scheduler import Scheduler
from farm.backtest.service import BacktestService
from farm.backtest.worker import WorkerPool
from farm.config import Settings
from farm.events import AGENT_DELETED, AGENT_SUBMITTED, EventBus, InProcessBus
from farm.fmel.store import FmelStore, open_fmel_root
from farm.leaderboard.service import LeaderboardService, record_backtest_result
from farm.marketdata.bootstrap import ensure_data
from farm.marketdata.feed import FeedRunner
from farm.marketdata.store import BarStore, open_bar_store
from farm.papertrading.runtime import RuntimeProcess
from farm.retention import RetentionSweeper
from farm.sandbox.launcher import SandboxUnavailable, check_sandbox
from farm.storage.artifacts import ArtifactStore, open_artifact_store
from farm.storage.db import Database

log = logging.getLogger("farm")


@dataclass
class Context:
    """Everything a request or a job needs, wired for the configured deployment shape."""

    settings: Settings
    db: Database
    artifacts: ArtifactStore
    bus: EventBus
    bars: BarStore
    agents: AgentService
    leaderboard: LeaderboardService
    fmel: FmelStore
    backtests: BacktestService
    scheduler: Scheduler
    feed: FeedRunner
    workers: WorkerPool
    retention: RetentionSweeper
    paper: RuntimeProcess

    @classmethod
    def build(cls, settings: Settings) -> Context:
        """Wire the backends chosen by ``settings`` (nothing is connected until first use)."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        artifacts = open_artifact_store(settings)
        bus = InProcessBus()
        bars = open_bar_store(settings)
        workers = WorkerPool(backtest_job, settings, bus)
        scheduler = Scheduler(
            db,
            workers,
            settings.backtest_workers,
            max_running_per_user=settings.max_running_backtests_per_user,
        )
        backtests = BacktestService(db, artifacts, bars, settings, scheduler.notify)
        bus.subscribe(AGENT_SUBMITTED, backtests.queue_standard_evaluation)
        bus.subscribe(AGENT_DELETED, backtests.cancel_agent_work)
        return cls(
            settings=settings,
            db=db,
            artifacts=artifacts,
            bus=bus,
            bars=bars,
            agents=AgentService(
                db,
                artifacts,
                bus,
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
            feed=FeedRunner(db, bars, bus, settings),
            workers=workers,
            retention=RetentionSweeper(settings, db, artifacts),
            paper=RuntimeProcess(settings, bus),
        )

    def start(self) -> None:
        """Prepare storage and data, then run backtests here if this process has workers and
        the sandbox works (if it does not, agents are refused with the reason)."""
        self.db.migrate()
        imported = ensure_data(self.settings, self.bars, log)
        if imported is not None:
            changed = [str(r.symbol) for r in imported.imported]
            if queued := self.backtests.requeue_standard_evaluations(changed):
                log.info("standard data changed: %d standard evaluations queued", queued)
        self.retention.start()
        if self.settings.feed != "off":  # without a feed no paper session can run (503)
            if self.settings.paper_runtime:
                self.paper.start()  # it runs the feed too; returns once the feed runs
            else:
                self.feed.start()
        if self.settings.backtest_workers == 0:
            return
        try:
            check_sandbox(self.settings)
        except SandboxUnavailable as exc:
            self.backtests.refuse(f"the agent sandbox cannot be set up, so no agent runs: {exc}")
            log.error("%s", self.backtests.refusal)
            return
        self.workers.start(self.settings.backtest_workers)
        self.scheduler.start()

    def close(self) -> None:
        """Stop background work and release connections."""
        self.feed.stop()
        self.retention.stop()
        self.paper.close()
        self.scheduler.stop()
        self.workers.close()
        self.leaderboard.close()
        self.fmel.close()
        self.db.dispose()


def backtest_job(settings: Settings, bus: EventBus) -> BacktestJob:
    """The backtest job of a worker process, wired from ``settings``; it publishes on ``bus``."""
    db = Database(settings.resolved_database_url)
    artifacts = open_artifact_store(settings)
    ranked = partial(record_backtest_result, risk_free_rate=settings.risk_free_rate)
    return BacktestJob(db, artifacts, open_bar_store(settings), bus, settings, [ranked])
