"""SQL access to leaderboard entries: the source of truth and the fallback ranking."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from farm.leaderboard.forward import StoredBar
from farm.leaderboard.schemas import BoardType, Metric
from farm.storage.models import Agent, ForwardBar, LeaderboardEntry, User

DELETED = "deleted"
ALL_TIME = "all_time"
METRIC_COLUMNS: dict[Metric, InstrumentedAttribute[float | None]] = {
    m: getattr(LeaderboardEntry, m.value) for m in Metric
}
CHECKED_COLUMNS: tuple[InstrumentedAttribute[float | None], ...] = (
    *METRIC_COLUMNS.values(),
    LeaderboardEntry.probabilistic_sharpe,
    LeaderboardEntry.deflated_sharpe,
    LeaderboardEntry.in_sample_sharpe,
    LeaderboardEntry.forward_sharpe,
)
"""Columns a listed entry must hold as finite numbers (or null)."""


class BoardRow(NamedTuple):
    """An entry with what a leaderboard row shows about its agent and owner."""

    entry: LeaderboardEntry
    agent_name: str
    submitted_at: datetime
    owner: str


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def upsert(session: Session, values: dict[str, Any]) -> None:
    """Insert an entry, or replace the agent's entry on that board if this one is not older."""
    upsert_many(session, [values])


def upsert_many(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """:func:`upsert` for several entries with the same keys, in one executemany."""
    if rows:
        dialect = session.get_bind().dialect.name
        session.connection().execute(_upsert_statement(dialect, tuple(rows[0])), list(rows))


@functools.lru_cache(maxsize=16)
def _upsert_statement(dialect: str, columns: tuple[str, ...]) -> Any:
    """The upsert of entries with these columns (built once: building it is costly)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(LeaderboardEntry)
    keys = ("board_type", "timeframe", "agent_id")
    return statement.on_conflict_do_update(
        index_elements=keys,
        set_={k: statement.excluded[k] for k in columns if k not in keys},
        where=LeaderboardEntry.evaluated_at <= statement.excluded.evaluated_at,
    )


def count_agents(session: Session, user_id: str) -> int:
    """How many agents the user ever submitted, deleted ones included."""
    return session.scalar(select(func.count()).where(Agent.user_id == user_id)) or 0


def entry(session: Session, board_type: BoardType, agent_id: str) -> LeaderboardEntry | None:
    """An agent's ``all_time`` entry on a board (backtest or headline), or None, as stored now
    (an upsert earlier in the transaction is seen)."""
    key = (board_type.value, ALL_TIME, agent_id)
    return session.get(LeaderboardEntry, key, populate_existing=True)


def delete_agent(session: Session, agent_id: str) -> None:
    """Remove every entry and every forward bar of an agent."""
    session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.agent_id == agent_id))
    session.execute(delete(ForwardBar).where(ForwardBar.agent_id == agent_id))


def add_forward_bars(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Store forward bars; a bar time the agent holds already is kept as it is. Returns how
    many were added."""
    if not rows:
        return 0
    statement = _insert(session)(ForwardBar).values(list(rows)).on_conflict_do_nothing()
    return len(session.execute(statement.returning(ForwardBar.bar_time)).all())


def forward_bars(session: Session, agent_id: str) -> list[StoredBar]:
    """Every forward bar of an agent, in time order."""
    result = session.execute(
        select(ForwardBar.bar_time, ForwardBar.ret, ForwardBar.pnl)
        .where(ForwardBar.agent_id == agent_id)
        .order_by(ForwardBar.bar_time)
    )
    return [StoredBar(time, ret, pnl) for time, ret, pnl in result]


def _listable() -> list[ColumnElement[bool]]:
    """Entries that may be listed: every checked value finite or null, and not bankrupt (a
    total return of -100% or worse). NaN sorts above every number in PostgreSQL, so it is
    excluded explicitly, never left to the ordering."""
    finite = [
        or_(column.is_(None), and_(column > -math.inf, column < math.inf))
        for column in CHECKED_COLUMNS
    ]
    solvent = or_(LeaderboardEntry.returns.is_(None), LeaderboardEntry.returns > -1.0)
    return [*finite, solvent]


def listable(entry: LeaderboardEntry) -> bool:
    """The rule of :func:`_listable` for an entry already read."""
    values = [getattr(entry, column.key) for column in CHECKED_COLUMNS]
    finite = all(v is None or math.isfinite(v) for v in values)
    return finite and (entry.returns is None or entry.returns > -1.0)


def _live() -> Select[LeaderboardEntry, str, datetime, str]:
    """Entries of agents that are not deleted, with their name, submission time and owner."""
    return (
        select(LeaderboardEntry, Agent.name, Agent.created_at, User.name)
        .join(Agent, Agent.id == LeaderboardEntry.agent_id)
        .join(User, User.id == Agent.user_id)
        .where(Agent.status != DELETED)
    )


def _rows() -> Select[LeaderboardEntry, str, datetime, str]:
    """Entries that may be listed."""
    return _live().where(*_listable())


def _forward_count() -> ColumnElement[int]:
    return func.coalesce(LeaderboardEntry.forward_bars, 0)


def _window(board_type: BoardType, timeframe: str, since: datetime | None) -> list[Any]:
    """The entries a board lists (ranked or awaiting)."""
    where: list[Any] = [
        LeaderboardEntry.board_type == board_type.value,
        LeaderboardEntry.timeframe == timeframe,
    ]
    if since is not None:
        where.append(LeaderboardEntry.evaluated_at >= since)
    return where


def _board(
    board_type: BoardType, timeframe: str, since: datetime | None, min_forward_bars: int
) -> list[Any]:
    """The entries a board ranks (headline: those with enough forward bars)."""
    where = _window(board_type, timeframe, since)
    if board_type is BoardType.HEADLINE:
        where.append(_forward_count() >= min_forward_bars)
    return where


def _awaiting(since: datetime | None, min_forward_bars: int) -> list[Any]:
    """Headline entries still short of forward bars."""
    where = _window(BoardType.HEADLINE, ALL_TIME, since)
    return [*where, _forward_count() < min_forward_bars]


def agent_rows(session: Session, agent_id: str) -> list[BoardRow]:
    """Every entry of a live agent, on every board, listable or not (to write through)."""
    result = session.execute(_live().where(LeaderboardEntry.agent_id == agent_id))
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def board_rows(
    session: Session, board_type: BoardType, timeframe: str, since: datetime | None
) -> list[BoardRow]:
    """Every listable entry of a board (ranked or awaiting, all metrics), to rebuild the cache
    from."""
    result = session.execute(_rows().where(*_window(board_type, timeframe, since)))
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


# Ties: earlier submission first, then agent id descending (the cache's member order).
_TIES = (Agent.created_at.asc(), Agent.id.desc())


def _order(metric: Metric) -> list[Any]:
    column = METRIC_COLUMNS[metric]
    return [column.desc() if metric.higher_is_better else column.asc(), *_TIES]


def ranked_page(
    session: Session,
    board_type: BoardType,
    timeframe: str,
    since: datetime | None,
    metric: Metric,
    limit: int,
    min_forward_bars: int,
) -> list[BoardRow]:
    """The best ``limit`` entries of a board by ``metric``, ranked by SQL ordering."""
    column = METRIC_COLUMNS[metric]
    result = session.execute(
        _rows()
        .where(*_board(board_type, timeframe, since, min_forward_bars), column.is_not(None))
        .order_by(*_order(metric))
        .limit(limit)
    )
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def awaiting_page(
    session: Session, since: datetime | None, limit: int, min_forward_bars: int
) -> list[BoardRow]:
    """Up to ``limit`` headline entries awaiting forward results, earlier submission first."""
    if limit <= 0:
        return []
    result = session.execute(
        _rows().where(*_awaiting(since, min_forward_bars)).order_by(*_TIES).limit(limit)
    )
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def rank_of(
    session: Session,
    board_type: BoardType,
    timeframe: str,
    since: datetime | None,
    metric: Metric,
    agent_id: str,
    min_forward_bars: int,
) -> tuple[int | None, float | None, int] | None:
    """``(rank, score, total)`` of an agent on a board; rank and score are None while it awaits
    forward results (headline); None if the board does not list it."""
    column = METRIC_COLUMNS[metric]
    ranked = [
        *_board(board_type, timeframe, since, min_forward_bars),
        column.is_not(None),
        Agent.status != DELETED,
        *_listable(),
    ]
    counted = select(func.count()).select_from(LeaderboardEntry)
    counted = counted.join(Agent, Agent.id == LeaderboardEntry.agent_id).where(*ranked)
    mine = session.execute(
        select(column, Agent.created_at)
        .join(Agent, Agent.id == LeaderboardEntry.agent_id)
        .where(*ranked, LeaderboardEntry.agent_id == agent_id)
    ).first()
    if mine is None:
        if board_type is BoardType.HEADLINE:
            waiting = _rows().where(
                *_awaiting(since, min_forward_bars), LeaderboardEntry.agent_id == agent_id
            )
            if session.execute(waiting).first() is not None:
                return None, None, session.scalar(counted) or 0
        return None
    score, submitted = mine
    assert score is not None
    better: ColumnElement[bool] = column > score if metric.higher_is_better else column < score
    ahead = or_(
        better,
        and_(
            column == score,
            or_(
                Agent.created_at < submitted,
                and_(Agent.created_at == submitted, Agent.id > agent_id),
            ),
        ),
    )
    total = session.scalar(counted) or 0
    before = session.scalar(counted.where(ahead)) or 0
    return before + 1, score, total
