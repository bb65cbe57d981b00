"""FMEL serving: who may read which records, parameter checks, and the API bodies."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, literal, select, union_all
from sqlalchemy.orm import Session

from farm.errors import Forbidden, InvalidInput, NotFound
from farm.fmel import queries
from farm.fmel.layout import is_valid_id
from farm.fmel.queries import EXPORT_FORMATS, DecisionQuery, Row
from farm.fmel.records import Action
from farm.fmel.schemas import (
    ActionCounts,
    AgentReported,
    Analytics,
    Bucket,
    CalibrationBucket,
    Comparison,
    DailyActions,
    DateRange,
    DecisionDetail,
    DecisionList,
    DecisionOut,
    ExecutionOut,
    ExportFormat,
    FieldReads,
    RecordKind,
    SearchHit,
    SearchResults,
    TradeOut,
    TradeStats,
)
from farm.fmel.store import FmelStore
from farm.schemas import DATE_BOUNDS, MAX_DATE, MIN_DATE
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, PaperSession, User

MAX_COMPARE = 10
MAX_SYMBOL_CHARS = 32
MAX_DATE_CHARS = 40
DELETED = "deleted"
PAPER = "paper"
RANGE_DAYS = {DateRange.D7: 7, DateRange.D30: 30, DateRange.D90: 90}


@dataclass(frozen=True, slots=True)
class Filters:
    """The decision filters a request may carry (raw query strings, validated here)."""

    agent_id: str | None = None
    session_id: str | None = None
    start_date: str | None = None
    end_date: str | None = None
    action: Action | None = None
    symbol: str | None = None


@dataclass(frozen=True, slots=True)
class Export:
    """A streamed export: the bytes, their media type and a file name."""

    chunks: Iterator[bytes]
    media_type: str
    filename: str


@dataclass(frozen=True, slots=True)
class RecordedSession:
    """A session whose agent took steps, so recorded decisions: a backtest (``kind`` is its
    ``custom`` or ``standard``) or a paper session (``kind`` is ``paper``)."""

    session_id: str
    agent_id: str
    agent_name: str
    kind: str
    created_at: datetime


class FmelService:
    """Decisions, analytics, comparisons, search and exports, each for the agent's owner only."""

    def __init__(self, db: Database, store: FmelStore) -> None:
        self._db = db
        self._store = store

    def decisions(self, user: User, filters: Filters, *, limit: int, offset: int) -> DecisionList:
        """A page of decisions, newest bar first."""
        query = self._query(user, filters)
        rows, total = queries.list_decisions(self._store, query, limit=limit, offset=offset)
        return DecisionList(
            decisions=[DecisionOut(**_decision(r)) for r in rows],
            total=total,
            limit=limit,
            offset=offset,
        )

    def sessions(self, user: User, *, limit: int) -> list[RecordedSession]:
        """The user's latest ``limit`` sessions that took a step (backtests recording decisions,
        paper sessions) of agents not deleted, newest first: the sessions with decisions."""
        backtests = (
            select(
                BacktestSession.id.label("session_id"),
                BacktestSession.agent_id,
                Agent.name.label("agent_name"),
                BacktestSession.kind,
                BacktestSession.created_at,
            )
            .join(Agent, Agent.id == BacktestSession.agent_id)
            .where(
                BacktestSession.user_id == user.id,
                BacktestSession.bars_done > 0,
                BacktestSession.params["fmel"].as_boolean().is_not(False),
                Agent.status != DELETED,
            )
        )
        paper = (
            select(
                PaperSession.id,
                PaperSession.agent_id,
                Agent.name,
                literal(PAPER, String),
                PaperSession.created_at,
            )
            .join(Agent, Agent.id == PaperSession.agent_id)
            .where(
                PaperSession.user_id == user.id,
                PaperSession.bars_processed > 0,
                Agent.status != DELETED,
            )
        )
        both = union_all(backtests, paper).subquery()
        with self._db.transaction() as session:
            rows = session.execute(
                select(both).order_by(both.c.created_at.desc(), both.c.session_id).limit(limit)
            )
            return [RecordedSession(**row._asdict()) for row in rows]

    def decision(self, user: User, decision_id: str) -> DecisionDetail:
        """One decision with its executions and the trades it opened or closed."""
        session_id, _, seq_text = decision_id.rpartition(":")
        missing = NotFound(f"no decision with id {decision_id}")
        if not (is_valid_id(session_id) and seq_text.isdigit()):
            raise missing
        agent_id = self._agent_of(session_id)
        if agent_id is None:
            raise missing
        self._check_owner(user, agent_id)
        found = queries.get_decision(self._store, agent_id, session_id, int(seq_text))
        if found is None:
            raise missing
        row, executions, trades = found
        return DecisionDetail(
            **_decision(row),
            executions=[ExecutionOut(**_execution(e)) for e in executions],
            trades=[TradeOut(**_trade(t, decision_id)) for t in trades],
        )

    def analytics(
        self, user: User, agent_id: str, session_id: str | None, date_range: DateRange
    ) -> Analytics:
        """One agent's analytics (optionally of one session) over ``date_range``."""
        self._check_owner(user, agent_id)
        return self._analytics(agent_id, _session(session_id), date_range)

    def compare(self, user: User, agent_ids: str, date_range: DateRange) -> Comparison:
        """Analytics of several of the user's agents side by side."""
        ids = list(dict.fromkeys(a.strip() for a in agent_ids.split(",") if a.strip()))
        if not 1 <= len(ids) <= MAX_COMPARE:
            raise InvalidInput(f"agentIds must list 1 to {MAX_COMPARE} agent ids, comma separated")
        for agent_id in ids:
            self._check_owner(user, agent_id)
        return Comparison(agents=[self._analytics(a, None, date_range) for a in ids])

    def search(
        self, user: User, text: str, filters: Filters, *, limit: int, offset: int
    ) -> SearchResults:
        """Decisions whose reasoning matches ``text``, best first (see ``queries.search``)."""
        terms = queries.search_terms(text)
        if not terms:
            raise InvalidInput("q must contain at least one word (letters or digits)")
        query = self._query(user, filters)
        rows, total = queries.search(self._store, query, terms, limit=limit, offset=offset)
        return SearchResults(
            results=[SearchHit(**_decision(r), score=r["score"]) for r in rows],
            total=total,
            limit=limit,
            offset=offset,
            terms=terms,
        )

    def export(
        self,
        user: User,
        agent_id: str,
        session_id: str | None,
        fmt: ExportFormat,
        kind: RecordKind,
    ) -> Export:
        """A stream of the agent's records (optionally one session) in ``fmt``."""
        self._check_owner(user, agent_id)
        session_id = _session(session_id)
        media_type, extension = EXPORT_FORMATS[fmt.value]
        name = "-".join(p for p in ("fmel", agent_id, session_id, kind.value) if p)
        chunks = queries.export(self._store, agent_id, session_id, kind.value, fmt.value)
        return Export(chunks, media_type, f"{name}.{extension}")

    def _analytics(self, agent_id: str, session_id: str | None, date_range: DateRange) -> Analytics:
        days = RANGE_DAYS.get(date_range)
        since = datetime.now(UTC) - timedelta(days=days) if days else None
        query = DecisionQuery([agent_id], session_id, since=since)
        return _analytics(queries.analytics(self._store, query), query, date_range)

    def _query(self, user: User, filters: Filters) -> DecisionQuery:
        start = _parse_date("startDate", filters.start_date, end=False)
        end = _parse_date("endDate", filters.end_date, end=True)
        if start and end and start >= end:
            raise InvalidInput("startDate must be before endDate")
        if filters.symbol is not None and not 1 <= len(filters.symbol) <= MAX_SYMBOL_CHARS:
            raise InvalidInput(f"symbol must be 1 to {MAX_SYMBOL_CHARS} characters")
        session_id = _session(filters.session_id)
        return DecisionQuery(
            self._agents(user, filters.agent_id, session_id),
            session_id,
            start=start,
            end=end,
            action=filters.action.value if filters.action else None,
            symbol=filters.symbol,
        )

    def _agents(self, user: User, agent_id: str | None, session_id: str | None) -> list[str]:
        """The agents a request reads: the one named, the session's, or all the user's."""
        if agent_id is not None:
            self._check_owner(user, agent_id)
            return [agent_id]
        if session_id is not None:
            owner = self.session_agent(session_id)
            self._check_owner(user, owner)
            return [owner]
        with self._db.transaction() as session:
            rows = session.scalars(
                select(Agent.id).where(Agent.user_id == user.id, Agent.status != DELETED)
            )
            return [a for a in rows if is_valid_id(a)]

    def session_agent(self, session_id: str) -> str:
        """The agent of a backtest or paper session (404 when there is none)."""
        agent_id = self._agent_of(session_id) if is_valid_id(session_id) else None
        if agent_id is None:
            raise NotFound(f"no decisions recorded for session {session_id}")
        return agent_id

    def _agent_of(self, session_id: str) -> str | None:
        """The agent of a backtest or paper session, looked up by id (no listing of the FMEL
        folders, which costs a request per agent on object storage)."""
        with self._db.transaction() as session:
            for table in (BacktestSession, PaperSession):
                found = session.scalar(select(table.agent_id).where(table.id == session_id))
                if found is not None:
                    return found
        return None

    def _check_owner(self, user: User, agent_id: str) -> None:
        with self._db.transaction() as session:
            _check_owner(session, user, agent_id)


def _check_owner(session: Session, user: User, agent_id: str) -> None:
    """404 for an unknown or deleted agent, 403 for someone else's."""
    agent = session.get(Agent, agent_id) if is_valid_id(agent_id) else None
    if agent is None or agent.status == DELETED:
        raise NotFound(f"no agent with id {agent_id}")
    if agent.user_id != user.id:
        raise Forbidden("this agent belongs to another user")


def _session(session_id: str | None) -> str | None:
    if session_id is not None and not is_valid_id(session_id):
        raise InvalidInput("sessionId must be 1 to 64 letters, digits, '_' or '-'")
    return session_id


def _parse_date(name: str, text: str | None, *, end: bool) -> datetime | None:
    """An ISO date or date-time as UTC, within ``MIN_DATE``..``MAX_DATE``; a bare end date
    includes that whole day."""
    if text is None:
        return None
    try:
        value = (
            datetime.combine(date.fromisoformat(text), time())
            if len(text) == 10
            else datetime.fromisoformat(text)
        )
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO date (2024-01-31) or date-time (2024-01-31T15:30:00Z), "
            f"got {text!r}"
        ) from None
    if not MIN_DATE <= value.date() <= MAX_DATE:
        raise InvalidInput(f"{name} must be between {DATE_BOUNDS}, got {text!r}")
    if len(text) == 10:
        return value.replace(tzinfo=UTC) + timedelta(days=1 if end else 0)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _decision(row: Row) -> dict[str, Any]:
    return {
        "decision_id": row["decision_id"],
        "session_id": row["session_id"],
        "agent_id": row["agent_id"],
        "user_id": row["user_id"],
        "mode": row["mode"],
        "seq": row["seq"],
        "bar_time": row["bar_ts"],
        "wall_time": row["wall_ts"],
        "action": row["action"],
        "symbols": row["symbols"],
        "bars": row["bars"],
        "positions": row["positions"],
        "portfolio": {"cash": row["cash"], "value": row["value"]},
        "orders": row["orders"],
        "cancels": row["cancels"],
        "agent_reported": AgentReported(
            reasoning=row["reasoning"],
            reasoning_truncated=row["reasoning_truncated"],
            confidence=row["confidence"],
            indicators=row["indicators"],
            indicators_truncated=row["indicators_truncated"],
            data_accessed=row["data_accesses"],
            data_accessed_truncated=row["data_accesses_truncated"],
            hook_errors=row["hook_errors"],
        ),
        "schema_version": row["schema_version"],
    }


def _execution(row: Row) -> dict[str, Any]:
    names = ExecutionOut.model_fields.keys() - {"time"}
    return {**{k: row[k] for k in names}, "time": row["ts"]}


def _trade(row: Row, decision_id: str) -> dict[str, Any]:
    names = TradeOut.model_fields.keys() - {"role", "entry_time", "exit_time"}
    role = "opened" if row["opened_by_decision_id"] == decision_id else "closed"
    return {
        **{k: row[k] for k in names},
        "role": role,
        "entry_time": row["entry_ts"],
        "exit_time": row["exit_ts"],
    }


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _analytics(result: Row, query: DecisionQuery, date_range: DateRange) -> Analytics:
    bounds = [(round(i / 10, 1), round((i + 1) / 10, 1)) for i in range(10)]
    histogram: dict[int, int] = result["histogram"]
    calibration: dict[int, Row] = result["calibration"]
    trades: Row = result["trades"]
    empty: Row = {"trades": 0, "won": 0, "average_pnl": None}
    return Analytics(
        agent_id=query.agent_ids[0],
        session_id=query.session_id,
        date_range=date_range,
        total_decisions=result["total"],
        actions=ActionCounts(
            buy=result["buy"], sell=result["sell"], hold=result["hold"], mixed=result["mixed"]
        ),
        average_confidence=result["average_confidence"],
        confidence_deciles=result["deciles"],
        confidence_distribution=[
            Bucket(lower=lo, upper=hi, count=histogram.get(i, 0))
            for i, (lo, hi) in enumerate(bounds)
        ],
        trades=TradeStats(
            total=trades["total"],
            won=trades["won"],
            win_rate=_ratio(trades["won"], trades["total"]),
            average_pnl=trades["average_pnl"],
            total_pnl=trades["total_pnl"] or 0.0,
        ),
        pnl_by_confidence=[
            CalibrationBucket(
                lower=lo,
                upper=hi,
                trades=(c := calibration.get(i, empty))["trades"],
                win_rate=_ratio(c["won"], c["trades"]),
                average_pnl=c["average_pnl"],
            )
            for i, (lo, hi) in enumerate(bounds)
        ],
        most_read_fields=[FieldReads(**r) for r in result["most_read"]],
        daily_actions=[DailyActions(date=r.pop("day"), **r) for r in result["daily"]],
        capped_sessions=result["capped_sessions"],
    )
