"""SQL access to paper accounts, their positions and their orders."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from farm.storage.models import Agent, PaperAccount, PaperOrder, PaperPosition, PaperSession, utcnow

#: Order statuses still waiting at the broker.
OPEN_STATUSES = ("submitted", "accepted", "partial")


def get(session: Session, account_id: str) -> PaperAccount | None:
    """The account with this id."""
    return session.get(PaperAccount, account_id)


def list_for_user(
    session: Session, user_id: str, *, offset: int, limit: int
) -> tuple[Sequence[PaperAccount], int]:
    """One page of a user's accounts, newest first, and how many they have."""
    where = PaperAccount.user_id == user_id
    total = session.scalar(select(func.count()).select_from(PaperAccount).where(where)) or 0
    rows = session.scalars(
        select(PaperAccount)
        .where(where)
        .order_by(PaperAccount.created_at.desc(), PaperAccount.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return rows, total


def positions(session: Session, account_ids: Sequence[str]) -> Sequence[PaperPosition]:
    """The open positions of these accounts, by symbol."""
    return session.scalars(
        select(PaperPosition)
        .where(PaperPosition.account_id.in_(account_ids))
        .order_by(PaperPosition.account_id, PaperPosition.symbol)
    ).all()


def open_orders(session: Session, account_id: str) -> Sequence[PaperOrder]:
    """The account's orders still waiting at the broker, oldest first."""
    return session.scalars(
        select(PaperOrder)
        .where(PaperOrder.account_id == account_id, PaperOrder.status.in_(OPEN_STATUSES))
        .order_by(PaperOrder.created_at, PaperOrder.client_order_id)
    ).all()


def add_cash(session: Session, account_id: str, amount: Decimal, max_cash: Decimal) -> bool:
    """Add ``amount`` in one conditional update: only while no session runs and the cash stays
    at most ``max_cash``. False when refused (the caller finds out why)."""
    result = session.execute(
        update(PaperAccount)
        .where(
            PaperAccount.id == account_id,
            PaperAccount.running_session_id.is_(None),
            PaperAccount.cash <= max_cash - amount,
        )
        .values(cash=PaperAccount.cash + amount, funded=PaperAccount.funded + amount)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def reset(session: Session, account_id: str) -> bool:
    """Put the account back to its initial cash with nothing held, only while no session runs.
    False when refused."""
    result = session.execute(
        update(PaperAccount)
        .where(PaperAccount.id == account_id, PaperAccount.running_session_id.is_(None))
        .values(cash=PaperAccount.initial_cash, funded=Decimal(0))
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    session.execute(delete(PaperPosition).where(PaperPosition.account_id == account_id))
    session.execute(delete(PaperOrder).where(PaperOrder.account_id == account_id))
    return True


def release(session: Session, row: PaperSession) -> None:
    """What an ended session held: its account is free for another one, its agent no longer
    paper trading."""
    session.execute(
        update(PaperAccount)
        .where(PaperAccount.id == row.account_id, PaperAccount.running_session_id == row.id)
        .values(running_session_id=None)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(Agent)
        .where(Agent.id == row.agent_id, Agent.status == "paper_trading")
        .values(status="active")
        .execution_options(synchronize_session=False)
    )


def stop_unclaimed(session: Session, row: PaperSession) -> bool:
    """Stop at once a session no runtime has claimed yet (no lease, no bar: nothing to cancel
    at a broker). False when a runtime took it meanwhile (the stop is then its to make)."""
    stopped = session.execute(
        update(PaperSession)
        .where(
            PaperSession.id == row.id,
            PaperSession.status == "starting",
            PaperSession.lease_token.is_(None),
            PaperSession.first_bar_time.is_(None),
        )
        .values(status="stopped", stopped_at=utcnow(), stop_requested=True)
        .execution_options(synchronize_session=False)
    )
    if not stopped.rowcount:  # type: ignore[attr-defined]
        return False
    release(session, row)
    session.expire(row)
    return True
