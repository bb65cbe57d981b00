"""SQL access to agents."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.agents.schemas import AgentStatus
from farm.storage.models import Agent


def get(session: Session, agent_id: str) -> Agent | None:
    """The agent with this id, deleted or not."""
    return session.get(Agent, agent_id)


def find_live_duplicate(session: Session, user_id: str, sha256: str) -> Agent | None:
    """A non-deleted agent of ``user_id`` with exactly this code."""
    return session.scalar(
        select(Agent).where(
            Agent.user_id == user_id,
            Agent.code_sha256 == sha256,
            Agent.status != AgentStatus.DELETED,
        )
    )


def list_for_user(
    session: Session, user_id: str, *, status: AgentStatus | None, offset: int, limit: int
) -> tuple[Sequence[Agent], int]:
    """One page of a user's non-deleted agents, newest first, and the total that match."""
    where = [Agent.user_id == user_id, Agent.status != AgentStatus.DELETED]
    if status is not None:
        where.append(Agent.status == status)
    total = session.scalar(select(func.count()).select_from(Agent).where(*where)) or 0
    rows = session.scalars(
        select(Agent)
        .where(*where)
        .order_by(Agent.created_at.desc(), Agent.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return rows, total
