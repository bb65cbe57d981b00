"""Backtests: validate and queue requests (within the user's quota), queue each agent's standard
evaluation, cancel sessions, read results."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from farm.agents.params import check_params
from farm.agents.schemas import AgentStatus
from farm.agents.service import owned_agent
from farm.backtest.results import read_logs, read_page
from farm.backtest.schemas import (
    BacktestRequest,
    BacktestResults,
    DataRange,
    EquitySeries,
    Failure,
    FailureReason,
    FillList,
    Output,
    Progress,
    SessionList,
    SessionLogs,
    SessionStatus,
    TradeList,
)
from farm.config import Settings
from farm.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
)
from farm.events import Event
from farm.marketdata.store import BarStore, normalize_symbol
from farm.ownership import owned
from farm.storage.artifacts import ArtifactStore
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, User, utcnow

CUSTOM, STANDARD = "custom", "standard"
PRIORITY = {CUSTOM: 0, STANDARD: 10}
UNFINISHED = (SessionStatus.QUEUED, SessionStatus.RUNNING)
QUOTA_RETRY_AFTER_S = 30
RANGE_SLACK = timedelta(days=7)


class BacktestService:
    """Owns backtest sessions: requests in, queue, results out."""

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        bars: BarStore,
        settings: Settings,
        notify: Callable[[], None],
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._bars = bars
        self._settings = settings
        self._notify = notify
        self.refusal: str | None = None

    def refuse(self, reason: str) -> None:
        """Refuse new backtests from now on, saying why (e.g. the sandbox is unavailable)."""
        self.refusal = reason

    def start(self, user: User, agent_id: str, request: BacktestRequest) -> str:
        """Validate ``request`` against the bar store and queue it; returns the session id."""
        if self.refusal is not None:
            raise ServiceUnavailable(self.refusal)
        request = self.validated(request)
        with self._db.transaction() as session:
            agent = owned_agent(session, user, agent_id)
            check_params(agent.declared_params, request.params)
            # Lock the user's row (PostgreSQL), then insert before counting (SQLite serializes
            # writers), so concurrent starts cannot overrun the quota.
            session.execute(select(User.id).where(User.id == user.id).with_for_update())
            session_id = _enqueue(session, agent, CUSTOM, request)
            session.flush()
            self._check_queued_quota(session, user)
        self._notify()
        return session_id

    def _check_queued_quota(self, session: Session, user: User) -> None:
        limit = self._settings.max_queued_backtests_per_user
        queued = session.scalar(
            select(func.count())
            .select_from(BacktestSession)
            .where(
                BacktestSession.user_id == user.id,
                BacktestSession.status == SessionStatus.QUEUED,
                BacktestSession.kind != STANDARD,
            )
        )
        if (queued or 0) > limit:
            raise QuotaExceeded(
                f"you already have {limit} backtests queued, the most allowed at once; wait for "
                "some to start, or cancel some (POST /api/backtest/{sessionId}/cancel)",
                retry_after_s=QUOTA_RETRY_AFTER_S,
            )

    def cancel(self, user: User, session_id: str) -> BacktestResults:
        """Cancel a queued or running session of the user's (a running agent is stopped at
        once by its worker); 409 once it has finished."""
        with self._db.transaction() as session:
            row = _owned_session(session, user, session_id)
            cancelled = session.execute(
                update(BacktestSession)
                .where(BacktestSession.id == session_id, BacktestSession.status.in_(UNFINISHED))
                .values(status=SessionStatus.CANCELLED, finished_at=utcnow())
            )
            session.refresh(row)
            if cancelled.rowcount != 1:  # type: ignore[attr-defined]
                raise Conflict(f"backtest {session_id} is {row.status} already; nothing to cancel")
            return to_results(row)

    def cancel_agent_work(self, event: Event) -> None:
        """Cancel the queued and running sessions of a deleted agent (``agent.deleted``)."""
        with self._db.transaction() as session:
            session.execute(
                update(BacktestSession)
                .where(
                    BacktestSession.agent_id == str(event["agentId"]),
                    BacktestSession.status.in_(UNFINISHED),
                )
                .values(status=SessionStatus.CANCELLED, finished_at=utcnow())
            )

    def validated(self, request: BacktestRequest) -> BacktestRequest:
        """``request`` with normalised symbols, or ``InvalidInput`` saying what to fix."""
        if request.start_date >= request.end_date:
            raise InvalidInput("startDate must be before endDate")
        if request.initial_cash <= 0:
            raise InvalidInput("initialCash must be positive")
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in request.symbols))
        benchmark = normalize_symbol(request.benchmark)
        self._bars.coverage(symbols, request.start_date, request.end_date).check()
        bench = self._bars.coverage([benchmark], request.start_date, request.end_date)
        if bench.unknown:
            raise InvalidInput(
                f"unknown benchmark symbol: {bench.named(benchmark)}",
                suggestions=dict(bench.suggestions),
            )
        if bench.empty:
            raise InvalidInput(f"benchmark {benchmark} has no bars between the requested dates")
        return request.model_copy(update={"symbols": symbols, "benchmark": benchmark})

    def queue_standard_evaluation(self, event: Event) -> None:
        """Queue the standard evaluation of a newly submitted agent (``agent.submitted``).

        Idempotent: an agent that has a standard evaluation already (this event was delivered
        before) gets no other; the agent's row lock serializes two deliveries at once."""
        request = self.standard_request()
        with self._db.transaction() as session:
            agent = session.get(Agent, str(event["agentId"]), with_for_update=True)
            if agent is None or session.scalar(
                select(BacktestSession.id)
                .where(BacktestSession.agent_id == agent.id, BacktestSession.kind == STANDARD)
                .limit(1)
            ):
                return
            _enqueue(session, agent, STANDARD, request)
        self._notify()

    def requeue_standard_evaluations(self, changed: Iterable[str]) -> int:
        """After an import that ``changed`` these symbols: when one is in the standard
        universe, queue a standard evaluation for every live agent that has none queued yet
        (one per agent however many imports), so the board reflects the stored data. Returns
        how many were queued."""
        standard = {normalize_symbol(s) for s in self._settings.standard_symbols}
        if not standard & set(changed):
            return 0
        request = self.standard_request()
        with self._db.transaction() as session:
            agents = session.scalars(
                select(Agent)
                .where(Agent.status != AgentStatus.DELETED)
                .order_by(Agent.id)
                .with_for_update()
            ).all()
            waiting = _queued_standard(session, [a.id for a in agents])
            fresh = [a for a in agents if a.id not in waiting]
            for agent in fresh:
                _enqueue(session, agent, STANDARD, request)
        if fresh:
            self._notify()
        return len(fresh)

    def evaluate(self, user: User, agent_id: str) -> str:
        """Re-run the standard evaluation of one of the user's agents on demand; 429 while one
        is queued or running, or within ``FARM_EVALUATE_COOLDOWN_S`` of the last one's start."""
        if self.refusal is not None:
            raise ServiceUnavailable(self.refusal)
        request = self.standard_request()
        cooldown = self._settings.evaluate_cooldown_s
        with self._db.transaction() as session:
            agent = owned_agent(session, user, agent_id)
            session.execute(select(Agent.id).where(Agent.id == agent.id).with_for_update())
            last = session.scalars(
                select(BacktestSession)
                .where(BacktestSession.agent_id == agent.id, BacktestSession.kind == STANDARD)
                .order_by(BacktestSession.created_at.desc())
                .limit(1)
            ).first()
            if last is not None and last.status in UNFINISHED:
                raise RateLimited(
                    f"agent {agent_id}'s standard evaluation {last.id} is {last.status}; "
                    "wait for it to finish",
                    QUOTA_RETRY_AFTER_S,
                )
            if last is not None:
                wait = last.created_at + timedelta(seconds=cooldown) - utcnow()
                if wait > timedelta(0):
                    raise RateLimited(
                        f"agent {agent_id} was evaluated less than {cooldown} s ago "
                        f"(FARM_EVALUATE_COOLDOWN_S); retry in {int(wait.total_seconds()) + 1} s",
                        int(wait.total_seconds()) + 1,
                    )
            session_id = _enqueue(session, agent, STANDARD, request)
        self._notify()
        return session_id

    def standard_request(self) -> BacktestRequest:
        """The same universe and period for every agent: the operator's, or the full history
        that every standard symbol covers."""
        symbols = [normalize_symbol(s) for s in self._settings.standard_symbols]
        infos = [self._bars.info(s) for s in symbols]
        known = [i for i in infos if i is not None]
        start = self._settings.standard_start
        end = self._settings.standard_end
        default_start = max((i.first.date() for i in known), default=date(2020, 1, 1))
        default_end = min((i.last.date() for i in known), default=date(2020, 12, 31))
        return BacktestRequest(
            start_date=date.fromisoformat(start) if start else default_start,
            end_date=date.fromisoformat(end) if end else default_end,
            symbols=symbols,
            benchmark=symbols[0],
            fmel=True,
        )

    def results(self, user: User, session_id: str) -> BacktestResults:
        """A session's status, progress and (when completed) metrics."""
        with self._db.transaction() as session:
            return to_results(_owned_session(session, user, session_id))

    def list_for_agent(self, user: User, agent_id: str, *, limit: int, offset: int) -> SessionList:
        """A page of an agent's sessions, newest first."""
        with self._db.transaction() as session:
            owned_agent(session, user, agent_id)
            where = BacktestSession.agent_id == agent_id
            rows = session.scalars(
                select(BacktestSession)
                .where(where)
                .order_by(BacktestSession.created_at.desc(), BacktestSession.id)
                .limit(limit)
                .offset(offset)
            ).all()
            total = session.scalar(select(func.count()).select_from(BacktestSession).where(where))
            return SessionList(
                sessions=[to_results(r) for r in rows], total=total or 0, limit=limit, offset=offset
            )

    def equity(self, user: User, session_id: str, *, limit: int, offset: int) -> EquitySeries:
        """A page of the equity and drawdown series of a completed session."""
        rows, total = self._page(user, session_id, "equity", limit, offset)
        return EquitySeries(
            session_id=session_id, points=rows, total=total, limit=limit, offset=offset
        )

    def fills(self, user: User, session_id: str, *, limit: int, offset: int) -> FillList:
        """A page of the stored fills of a completed session."""
        rows, total = self._page(user, session_id, "fills", limit, offset)
        return FillList(session_id=session_id, fills=rows, total=total, limit=limit, offset=offset)

    def trades(self, user: User, session_id: str, *, limit: int, offset: int) -> TradeList:
        """A page of the stored closed trades of a completed session."""
        rows, total = self._page(user, session_id, "trades", limit, offset)
        return TradeList(
            session_id=session_id, trades=rows, total=total, limit=limit, offset=offset
        )

    def logs(self, user: User, session_id: str) -> SessionLogs:
        """What the session's agent printed (head and tail); 409 until the run has ended."""
        with self._db.transaction() as session:
            row = _owned_session(session, user, session_id)
            status = SessionStatus(row.status)
        if status in UNFINISHED:
            raise Conflict(
                f"backtest {session_id} is {status}; its agent's output comes once it ends"
            )
        record = read_logs(self._artifacts, session_id) or {}
        return SessionLogs(
            session_id=session_id,
            status=status,
            head=record.get("head", ""),
            tail=record.get("tail", ""),
            total_bytes=record.get("totalBytes", 0),
            omitted_bytes=record.get("omittedBytes", 0),
        )

    def _page(
        self, user: User, session_id: str, series: str, limit: int, offset: int
    ) -> tuple[list[Any], int]:
        with self._db.transaction() as session:
            row = _owned_session(session, user, session_id)
            if row.status != SessionStatus.COMPLETED:
                raise Conflict(
                    f"backtest {session_id} is {row.status}; results come once completed"
                )
            if row.results_key is None:
                days = self._settings.results_retention_days
                raise NotFound(
                    f"the series of backtest {session_id} were deleted {days} days after it "
                    "finished (FARM_RESULTS_RETENTION_DAYS); its metrics remain"
                )
            key = row.results_key
        return read_page(self._artifacts, key, series, limit=limit, offset=offset)


def _enqueue(session: Session, agent: Agent, kind: str, request: BacktestRequest) -> str:
    row = BacktestSession(
        id=str(uuid.uuid4()),
        agent_id=agent.id,
        user_id=agent.user_id,
        kind=kind,
        status=SessionStatus.QUEUED,
        priority=PRIORITY[kind],
        params=request.model_dump(mode="json"),
    )
    session.add(row)
    return row.id


def _queued_standard(session: Session, agent_ids: list[str]) -> set[str]:
    """The agents among ``agent_ids`` with a standard evaluation queued (not yet started)."""
    if not agent_ids:
        return set()
    return set(
        session.scalars(
            select(BacktestSession.agent_id).where(
                BacktestSession.agent_id.in_(agent_ids),
                BacktestSession.kind == STANDARD,
                BacktestSession.status == SessionStatus.QUEUED,
            )
        )
    )


def _owned_session(session: Session, user: User, session_id: str) -> BacktestSession:
    return owned(session.get(BacktestSession, session_id), user, "backtest", session_id)


def to_results(row: BacktestSession) -> BacktestResults:
    """The API view of a session row."""
    failure = None
    if row.failure_reason is not None:
        failure = Failure(
            reason=FailureReason(row.failure_reason),
            message=row.failure_message or "",
            traceback=row.failure_traceback,
        )
    metrics = dict(row.metrics) if row.metrics else None
    benchmark = metrics.pop("benchmark", None) if metrics else None
    output = metrics.pop("output", None) if metrics else None
    data_range = metrics.pop("dataRange", None) if metrics else None
    parameters = BacktestRequest.model_validate(row.params)
    used = DataRange.model_validate(data_range) if data_range else None
    return BacktestResults(
        session_id=row.id,
        agent_id=row.agent_id,
        kind=row.kind,
        status=SessionStatus(row.status),
        progress=Progress(bars_done=row.bars_done, bars_total=row.bars_total),
        parameters=parameters,
        data_source=row.data_source,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        metrics=metrics,
        benchmark=benchmark,
        output=Output.model_validate(output) if output else None,
        failure=failure,
        data_range=used,
        warnings=_range_warnings(parameters, used),
    )


def _range_warnings(request: BacktestRequest, used: DataRange | None) -> list[str]:
    """A warning when the stored data covers the requested dates short by more than
    ``RANGE_SLACK`` at either end (weekends and holidays are not worth one)."""
    if used is None:
        return []
    if (
        used.start_date - request.start_date <= RANGE_SLACK
        and request.end_date - used.end_date <= RANGE_SLACK
    ):
        return []
    return [
        f"the stored data covers {used.start_date} to {used.end_date} of the requested "
        f"{request.start_date} to {request.end_date}; the metrics are over that range only"
    ]
