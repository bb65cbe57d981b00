"""SQL access to leaderboard entries: the source of truth and the fallback ranking."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Select, and_, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session

from farm.leaderboard.schemas import BoardType, Metric
from farm.storage.models import Agent, LeaderboardEntry, User

DELETED = "deleted"
METRIC_COLUMNS: dict[Metric, InstrumentedAttribute[float | None]] = {
    m: getattr(LeaderboardEntry, m.value) for m in Metric
}


class BoardRow(NamedTuple):
    """An entry with what a leaderboard row shows about its agent and owner."""

    entry: LeaderboardEntry
    agent_name: str
    submitted_at: datetime
    owner: str


def upsert(session: Session, values: dict[str, Any]) -> None:
    """Insert an entry, or replace the agent's entry on that board if this one is not older."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(LeaderboardEntry).values(**values)
    keys = ("board_type", "timeframe", "agent_id")
    statement = statement.on_conflict_do_update(
        index_elements=keys,
        set_={k: statement.excluded[k] for k in values if k not in keys},
        where=LeaderboardEntry.evaluated_at <= statement.excluded.evaluated_at,
    )
    session.execute(statement)


def count_agents(session: Session, user_id: str) -> int:
    """How many agents the user ever submitted, deleted ones included."""
    return session.scalar(select(func.count()).where(Agent.user_id == user_id)) or 0


def delete_agent(session: Session, agent_id: str) -> None:
    """Remove every entry of an agent."""
    session.execute(delete(LeaderboardEntry).where(LeaderboardEntry.agent_id == agent_id))


def _rows() -> Select[LeaderboardEntry, str, datetime, str]:
    return (
        select(LeaderboardEntry, Agent.name, Agent.created_at, User.name)
        .join(Agent, Agent.id == LeaderboardEntry.agent_id)
        .join(User, User.id == Agent.user_id)
        .where(Agent.status != DELETED)
    )


def _board(board_type: BoardType, timeframe: str, since: datetime | None) -> list[Any]:
    where: list[Any] = [
        LeaderboardEntry.board_type == board_type.value,
        LeaderboardEntry.timeframe == timeframe,
    ]
    if since is not None:
        where.append(LeaderboardEntry.evaluated_at >= since)
    return where


def agent_rows(session: Session, agent_id: str) -> list[BoardRow]:
    """Every entry of a live agent, on every board."""
    result = session.execute(_rows().where(LeaderboardEntry.agent_id == agent_id))
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def board_rows(
    session: Session, board_type: BoardType, timeframe: str, since: datetime | None
) -> list[BoardRow]:
    """Every entry of a board (all metrics), to rebuild the cache from."""
    result = session.execute(_rows().where(*_board(board_type, timeframe, since)))
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def _order(metric: Metric) -> list[Any]:
    column = METRIC_COLUMNS[metric]
    # Ties: earlier submission first, then agent id descending (the cache's member order).
    return [
        column.desc() if metric.higher_is_better else column.asc(),
        Agent.created_at.asc(),
        Agent.id.desc(),
    ]


def ranked_page(
    session: Session,
    board_type: BoardType,
    timeframe: str,
    since: datetime | None,
    metric: Metric,
    limit: int,
) -> list[BoardRow]:
    """The best ``limit`` entries of a board by ``metric``, ranked by SQL ordering."""
    column = METRIC_COLUMNS[metric]
    result = session.execute(
        _rows()
        .where(*_board(board_type, timeframe, since), column.is_not(None))
        .order_by(*_order(metric))
        .limit(limit)
    )
    return [BoardRow(e, name, submitted, owner) for e, name, submitted, owner in result]


def rank_of(
    session: Session,
    board_type: BoardType,
    timeframe: str,
    since: datetime | None,
    metric: Metric,
    agent_id: str,
) -> tuple[int, float, int] | None:
    """``(rank, score, total)`` of an agent on a board, or None if it is not ranked there."""
    column = METRIC_COLUMNS[metric]
    ranked = [*_board(board_type, timeframe, since), column.is_not(None), Agent.status != DELETED]
    mine = session.execute(
        select(column, Agent.created_at)
        .join(Agent, Agent.id == LeaderboardEntry.agent_id)
        .where(*ranked, LeaderboardEntry.agent_id == agent_id)
    ).first()
    if mine is None:
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
    counted = select(func.count()).select_from(LeaderboardEntry)
    counted = counted.join(Agent, Agent.id == LeaderboardEntry.agent_id).where(*ranked)
    total = session.scalar(counted) or 0
    before = session.scalar(counted.where(ahead)) or 0
    return before + 1, score, total
