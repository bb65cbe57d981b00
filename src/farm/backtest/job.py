"""Run one queued backtest session: bars in, sandboxed agent, host ledger, metrics, results out."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from pydantic.alias_generators import to_camel
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from farm.backtest.results import Stored, write_logs, write_results
from farm.backtest.runner import BacktestConfig, BacktestOutcome, run_backtest
from farm.backtest.schemas import BacktestRequest, FailureReason, SessionStatus
from farm.config import Settings
from farm.core.bars import EXCHANGE_TZ
from farm.core.metrics import Metrics, compute_metrics, daily_returns
from farm.core.orders import ClosedTrade
from farm.engine.session import RunStopped
from farm.errors import FarmError
from farm.events import BACKTEST_COMPLETED
from farm.fmel.capture import StepCapture
from farm.fmel.layout import session_dir, session_folder
from farm.fmel.recorder import CapReport, FmelRecorder
from farm.fmel.records import Mode
from farm.fmel.store import fmel_staging, open_fmel_root
from farm.leases import Lease
from farm.marketdata.store import BarStore
from farm.outbox import emit
from farm.sandbox.host import AgentFailure, AgentSession, DecisionRecord
from farm.sandbox.launcher import SandboxLimits
from farm.storage.artifacts import ArtifactStore
from farm.storage.db import Database, sqlite_write_lock
from farm.storage.models import Agent, BacktestSession, utcnow

log = logging.getLogger("farm.backtest.job")

PROGRESS_SECONDS = 0.5
WATCH_SECONDS = 0.25
MB = 1024 * 1024

ResultHook = Callable[[Session, BacktestSession, Sequence[float]], None]
"""Called inside the transaction that completes a session (e.g. to update the leaderboard)."""


class BacktestJob:
    """Executes sessions claimed by the scheduler; every outcome is recorded, none is raised.

    It writes to its session only while the row is ``running`` under its lease (every write is
    fenced by :meth:`Lease.holds`). A watcher renews the lease (its heartbeat) and reads the row
    every ``WATCH_SECONDS``: once the owner cancels it (the row becomes ``cancelled``) it kills
    the agent and the run ends without recording anything more (the FMEL records received so
    far are flushed); once the lease is lost (recovered after it expired, and maybe claimed by
    another worker) the run ends too, and writes nothing at all: no row update, no FMEL part,
    and its results go under its own attempt's key, which the new owner's row never names.
    """

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        bars: BarStore,
        settings: Settings,
        result_hooks: Sequence[ResultHook] = (),
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._bars = bars
        self._settings = settings
        self._hooks = list(result_hooks)

    def __call__(self, lease: Lease, stopping: threading.Event) -> None:
        session_id = lease.session_id
        abort = _Abort()
        watcher = threading.Thread(
            target=self._watch,
            args=(lease, stopping, abort),
            name=f"backtest-watch-{session_id[:8]}",
            daemon=True,
        )
        watcher.start()
        try:
            self._run(lease, abort)
        except Exception as exc:
            if abort.reason is None:
                log.exception("backtest %s failed unexpectedly", session_id)
                fail_while_running(
                    self._db,
                    lease,
                    FailureReason.INTERNAL_ERROR,
                    f"internal error (a platform bug): {exc}",
                )
        finally:
            abort.finish()
            watcher.join()
        if abort.reason is AbortReason.INTERRUPTED:
            log.info("backtest %s interrupted by shutdown; back in the queue", session_id)
            update_while_running(
                self._db,
                lease,
                status=SessionStatus.QUEUED,
                attempts=BacktestSession.attempts - 1,
                bars_done=0,
                started_at=None,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
            )
        elif abort.reason is AbortReason.CANCELLED:
            log.info("backtest %s cancelled; its agent was stopped", session_id)
        elif abort.reason is AbortReason.LOST:
            log.warning("backtest %s: this worker lost its lease; it wrote nothing", session_id)

    def _watch(self, lease: Lease, stopping: threading.Event, abort: _Abort) -> None:
        """Renew the lease every third of its length, and abort the run when the process stops,
        the session stops being ``running`` or the lease is no longer this run's."""
        renewed = time.monotonic()
        while not abort.finished(WATCH_SECONDS):
            if stopping.is_set():
                abort.trip(AbortReason.INTERRUPTED)
                return
            s = BacktestSession
            try:
                with self._db.transaction() as session:
                    if time.monotonic() - renewed >= self._settings.backtest_lease_s / 3:
                        lease.renew(session, self._settings.backtest_lease_s)
                        renewed = time.monotonic()
                    row = session.execute(
                        select(s.status, s.lease_token).where(s.id == lease.session_id)
                    ).one_or_none()
            except Exception:
                log.exception("cannot renew the lease of backtest %s; retrying", lease.session_id)
                continue
            if row is not None and row.lease_token != lease.token:
                abort.trip(AbortReason.LOST)
                return
            if row is None or row.status != SessionStatus.RUNNING:
                abort.trip(AbortReason.CANCELLED)
                return

    def _holds(self, lease: Lease) -> bool:
        """Whether the session's lease is still this run's (checked before each FMEL part)."""
        with self._db.transaction() as session:
            token = session.scalar(
                select(BacktestSession.lease_token).where(BacktestSession.id == lease.session_id)
            )
        return token == lease.token

    def _run(self, lease: Lease, abort: _Abort) -> None:
        session_id = lease.session_id
        with self._db.transaction() as session:
            row = session.get(BacktestSession, session_id)
            if row is None:
                return
            request = BacktestRequest.model_validate(row.params)
            agent = session.get(Agent, row.agent_id)
            artifact_key = agent.artifact_key if agent else None
            owner = (row.agent_id, row.user_id)
        if artifact_key is None:
            fail_while_running(
                self._db, lease, FailureReason.INVALID_AGENT, "the agent no longer exists"
            )
            return
        try:
            self._bars.coverage(request.symbols, request.start_date, request.end_date).check()
            steps = list(self._bars.steps(request.symbols, request.start_date, request.end_date))
            benchmark = self._bars.frame(request.benchmark, request.start_date, request.end_date)
            source = self._bars.source_of([*request.symbols, request.benchmark])
        except FarmError as exc:
            fail_while_running(self._db, lease, FailureReason.DATA_ERROR, exc.message)
            return
        update_while_running(self._db, lease, bars_total=len(steps), data_source=source)
        if abort.reason is not None:
            return

        recorder = self._recorder(request, lease, owner)
        observer = _StepObserver(self._progress_reporter(lease), recorder, abort)
        try:
            outcome = run_backtest(
                steps,
                self._artifacts.local_path(artifact_key),
                self._config(request),
                on_step=observer,
                on_start=abort.attach,
            )
            observer.record_trades(outcome.trades)
        finally:
            observer.close()  # flushes every record the host received, whatever happened
        if abort.reason is AbortReason.LOST or not self._holds(lease):
            return
        write_logs(self._artifacts, session_id, outcome.output)
        if abort.reason is not None:
            return
        if outcome.failure is not None:
            self._fail_agent(lease, outcome.failure, outcome.steps)
            return
        if outcome.stopped is not None:
            self._fail_stopped(lease, outcome.stopped, outcome.steps)
            return
        closes = list(
            zip(pd.DatetimeIndex(benchmark.index).to_pydatetime(), benchmark["close"], strict=True)
        )
        metrics = compute_metrics(
            outcome.equity,
            outcome.trades,
            benchmark=closes,
            exposure=observer.exposure,
            risk_free_rate=self._settings.risk_free_rate,
        )
        self._complete(lease, outcome, metrics, observer.fmel_report)

    def _recorder(
        self, request: BacktestRequest, lease: Lease, owner: tuple[str, str]
    ) -> FmelRecorder | None:
        """The session's FMEL recorder (None when recording is off); a re-run starts over.
        It writes each part only while the lease is this run's."""
        if not request.fmel:
            return None
        agent_id, user_id = owner
        root, staging = open_fmel_root(self._settings), fmel_staging(self._settings)
        root.delete(session_folder(root, agent_id, lease.session_id))
        shutil.rmtree(session_dir(staging, agent_id, lease.session_id), True)
        return FmelRecorder(
            root,
            agent_id,
            lease.session_id,
            user_id,
            Mode.BACKTEST,
            max_bytes=self._settings.fmel_max_session_mb * MB,
            staging=staging,
            fence=lambda: self._holds(lease),
        )

    def _fail_agent(self, lease: Lease, failure: AgentFailure, steps: int) -> None:
        """Record why the agent's run ended early (an output flood counts as ``killed``)."""
        if failure.reason == "output":
            reason, message = FailureReason.KILLED, f"output limit exceeded: {failure.message}"
        else:
            reason, message = FailureReason(failure.reason), failure.message
        fail_while_running(
            self._db, lease, reason, message, failure.traceback or None, bars_done=steps
        )

    def _fail_stopped(self, lease: Lease, stopped: RunStopped, steps: int) -> None:
        """Record why the host ended the run (the fill cap counts as ``killed``, as output does)."""
        reason = FailureReason.BANKRUPT if stopped.reason == "bankrupt" else FailureReason.KILLED
        fail_while_running(self._db, lease, reason, stopped.message, bars_done=steps)

    def _config(self, request: BacktestRequest) -> BacktestConfig:
        return BacktestConfig(
            initial_cash=request.initial_cash,
            commission=request.commission,
            slippage_bps=request.slippage_bps,
            max_leverage=self._settings.max_leverage,
            max_open_orders=self._settings.max_open_orders,
            max_fills=self._settings.max_fills,
            symbols=tuple(request.symbols),
            record_decisions=request.fmel,
            params=request.params,
            sandbox=self._settings.sandbox,
            limits=SandboxLimits.from_settings(self._settings),
            uid=self._settings.sandbox_uid,
        )

    def _progress_reporter(self, lease: Lease) -> Callable[[int], None]:
        last = time.monotonic()

        def report(done: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS:
                last = now
                update_while_running(self._db, lease, bars_done=done)

        return report

    def _complete(
        self,
        lease: Lease,
        outcome: BacktestOutcome,
        metrics: Metrics,
        fmel: CapReport | None,
    ) -> None:
        key, stored = write_results(
            self._artifacts,
            lease.session_id,
            outcome,
            self._settings.results_max_rows,
            attempt=lease.token,
        )
        with self._db.transaction() as session:
            sqlite_write_lock(session, BacktestSession.id)
            row = session.scalars(
                select(BacktestSession).where(lease.holds()).with_for_update()
            ).one_or_none()
            if row is None:
                return  # cancelled meanwhile, or the lease was lost
            row.status = SessionStatus.COMPLETED
            row.bars_done = row.bars_total
            row.metrics = {
                **_camel_keys(metrics.as_json()),
                "output": _output(stored, fmel),
                "dataRange": _data_range(outcome.equity),
            }
            row.results_key = key
            row.finished_at = utcnow()
            returns = daily_returns(outcome.equity)
            for hook in self._hooks:
                hook(session, row, returns)
            event = {"sessionId": row.id, "agentId": row.agent_id, "userId": row.user_id}
            emit(session, BACKTEST_COMPLETED, {**event, "kind": row.kind})


def fail_while_running(
    db: Database,
    lease: Lease,
    reason: FailureReason,
    message: str,
    traceback: str | None = None,
    *,
    bars_done: int | None = None,
) -> None:
    """Fail a session unless it ended, was cancelled or lost ``lease`` meanwhile."""
    values: dict[str, Any] = {
        "status": SessionStatus.FAILED,
        "failure_reason": reason,
        "failure_message": message,
        "failure_traceback": traceback,
        "finished_at": utcnow(),
    }
    if bars_done is not None:
        values["bars_done"] = bars_done
    update_while_running(db, lease, **values)


def update_while_running(db: Database, lease: Lease, **values: Any) -> None:
    """Update a session while it runs under ``lease`` (never one that ended, was cancelled or
    whose lease was lost meanwhile)."""
    with db.transaction() as session:
        session.execute(update(BacktestSession).where(lease.holds()).values(**values))


class AbortReason(StrEnum):
    """Why a run ended before its agent did."""

    INTERRUPTED = "interrupted"  # the process is stopping: the session goes back to the queue
    CANCELLED = "cancelled"  # its owner cancelled it, or deleted the agent
    LOST = "lost"  # the lease expired and was recovered: the session is someone else's now


class Aborted(Exception):
    """Raised between steps to end an aborted run (the agent is killed on the way out)."""


class _Abort:
    """Ends a run from another thread: kills the agent mid-step, and stops at the next step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._session: AgentSession | None = None
        self.reason: AbortReason | None = None

    def attach(self, session: AgentSession) -> None:
        """The run's agent session started: kill it if the run was aborted already."""
        with self._lock:
            self._session = session
            aborted = self.reason is not None
        if aborted:
            session.kill()

    def trip(self, reason: AbortReason) -> None:
        """Abort the run (the first reason wins) and kill its agent."""
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            session = self._session
        if session is not None:
            session.kill()

    def finish(self) -> None:
        """The run is over: the watcher may stop."""
        self._done.set()

    def finished(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the run to end; True once it has."""
        return self._done.wait(timeout)


class _StepObserver:
    """Sees every step of a run: progress, exposure, (when recording) the FMEL records, and
    whether to stop (raising :class:`Aborted` ends the run and kills the agent)."""

    def __init__(
        self,
        progress: Callable[[int], None],
        recorder: FmelRecorder | None,
        abort: _Abort,
    ) -> None:
        self._progress = progress
        self._capture = StepCapture(recorder) if recorder is not None else None
        self._abort = abort
        self.exposure: list[bool] = []

    def __call__(self, record: DecisionRecord) -> None:
        if self._abort.reason is not None:
            raise Aborted
        self.exposure.append(bool(record.positions))
        if self._capture is not None:
            self._capture.on_step(record)
        self._progress(record.seq + 1)

    def record_trades(self, trades: Sequence[ClosedTrade]) -> None:
        if self._capture is not None:
            self._capture.on_trades(trades)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.recorder.close()

    @property
    def fmel_report(self) -> CapReport | None:
        """What the FMEL recording stored and dropped (None when not recording)."""
        return self._capture.recorder.report if self._capture is not None else None


def _data_range(equity: Sequence[tuple[datetime, float]]) -> dict[str, str] | None:
    """The session dates of the first and last bar the run used (``dataRange``)."""
    if not equity:
        return None
    first, last = (
        ts.astimezone(ZoneInfo(EXCHANGE_TZ)).date() for ts in (equity[0][0], equity[-1][0])
    )
    return {"startDate": first.isoformat(), "endDate": last.isoformat()}


def _output(stored: Stored, fmel: CapReport | None) -> dict[str, Any]:
    """What the run stored and what it left out at the caps (``output`` of the results)."""
    return {
        "fmelCapped": fmel is not None and fmel.capped,
        "fmelBytes": fmel.stored_bytes if fmel else 0,
        "fmelDroppedRecords": sum(fmel.dropped.values()) if fmel else 0,
        "fills": {"total": stored.fills_total, "stored": stored.fills_stored},
        "trades": {"total": stored.trades_total, "stored": stored.trades_stored},
    }


def _camel_keys(values: dict[str, Any]) -> dict[str, Any]:
    """The API's camelCase names, nested dicts included."""
    return {to_camel(k): _camel_keys(v) if isinstance(v, dict) else v for k, v in values.items()}
