"""Paper sessions as the API sees them: start, status, stop, list, equity and trades.

The API process only writes requests (a ``starting`` row, a stop request) and reads what the
paper runtime process wrote (:mod:`farm.papertrading.runtime`); it never runs an agent.
"""

from __future__ import annotations

import uuid
from decimal import ROUND_HALF_EVEN, Decimal
from typing import cast

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from farm.agents.service import owned_agent
from farm.config import Settings
from farm.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from farm.marketdata.feed import FeedState
from farm.marketdata.store import BarStore, normalize_symbol
from farm.ownership import owned
from farm.papertrading import repository
from farm.papertrading.schemas import (
    DEFAULT_INITIAL_CASH,
    EquityPoint,
    PaperEquityOut,
    PaperFailure,
    PaperSessionList,
    PaperSessionOut,
    PaperStart,
    PaperStarted,
    PaperStatus,
    PaperStop,
    PaperTradeOut,
    PaperTradesOut,
    SessionStatus,
)
from farm.papertrading.service import (
    CENT,
    DEFAULT_NAME,
    SIMULATED,
    _equity,
    _order,
    _position,
    owned_account,
)
from farm.schemas import Pagination
from farm.storage.db import Database
from farm.storage.models import (
    MarketFeed,
    PaperAccount,
    PaperEquity,
    PaperSession,
    PaperTrade,
    User,
)

ACTIVE = ("starting", "running")


class PaperService:
    """Requests paper sessions of the platform's runtime and reports on them."""

    def __init__(self, db: Database, bars: BarStore, settings: Settings) -> None:
        self._db = db
        self._bars = bars
        self._settings = settings

    def start(self, user: User, request: PaperStart) -> PaperStarted:
        """Request a session: 400 for symbols the feed does not carry, 404/403 for the agent or
        the account, 409 naming the session when the agent or the account already runs one,
        503 when the platform runs no sessions or its feed has ended or failed."""
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in request.symbols))
        if request.warmup_bars > self._settings.paper_max_warmup_bars:
            raise InvalidInput(
                f"warmupBars must be at most {self._settings.paper_max_warmup_bars} "
                "(FARM_PAPER_MAX_WARMUP_BARS)"
            )
        with self._db.transaction() as session:
            self._check_symbols(session, symbols)
            agent = owned_agent(session, user, request.agent_id)
            running = _active(session, PaperSession.agent_id == agent.id)
            if running is not None:
                raise Conflict(
                    f"agent {agent.id} already runs paper session {running.id}; stop it first",
                    sessionId=running.id,
                )
            if request.account_id is None:
                account = PaperAccount(
                    id=str(uuid.uuid4()),
                    user_id=user.id,
                    name=DEFAULT_NAME,
                    broker=SIMULATED,
                    initial_cash=DEFAULT_INITIAL_CASH,
                    cash=DEFAULT_INITIAL_CASH,
                    funded=Decimal(0),
                )
                session.add(account)
                session.flush()
            else:
                account = owned_account(session, user, request.account_id)
            session_id = str(uuid.uuid4())
            claimed = session.execute(
                update(PaperAccount)
                .where(PaperAccount.id == account.id, PaperAccount.running_session_id.is_(None))
                .values(running_session_id=session_id)
                .execution_options(synchronize_session=False)
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                session.refresh(account)
                raise Conflict(
                    f"account {account.id} is traded by paper session "
                    f"{account.running_session_id}; stop it first",
                    sessionId=account.running_session_id,
                )
            _check_feed_goes_on(session.get(MarketFeed, self._settings.feed))
            session.add(
                PaperSession(
                    id=session_id,
                    agent_id=agent.id,
                    user_id=user.id,
                    account_id=account.id,
                    status="starting",
                    symbols=symbols,
                    warmup_bars=request.warmup_bars,
                    commission=request.commission,
                    initial_cash=account.cash,
                    missing_at_last_step=[],
                )
            )
            agent.status = "paper_trading"
            return PaperStarted(
                session_id=session_id, agent_id=agent.id, account_id=account.id, status="starting"
            )

    def _check_symbols(self, session: Session, symbols: list[str]) -> None:
        if not self._settings.paper_runtime or self._settings.feed == "off":
            raise ServiceUnavailable(
                "this platform runs no paper sessions (FARM_PAPER_RUNTIME or FARM_FEED is off)"
            )
        unknown = [s for s in symbols if self._bars.info(s) is None]
        if unknown:
            raise InvalidInput(f"unknown symbols: {', '.join(unknown)}", symbols=unknown)
        feed = session.get(MarketFeed, self._settings.feed)
        carried = set(feed.symbols) if feed is not None and feed.symbols else None
        if carried is None:
            configured = self._settings.feed_symbols
            carried = {normalize_symbol(s) for s in configured} if configured else set(symbols)
        absent = [s for s in symbols if s not in carried]
        if absent:
            raise InvalidInput(f"the live feed does not carry: {', '.join(absent)}", symbols=absent)

    def status(self, user: User, agent_id: str) -> PaperStatus:
        """The agent's latest session (``not_running`` when it never had one)."""
        with self._db.transaction() as session:
            agent = owned_agent(session, user, agent_id)
            row = session.scalars(
                select(PaperSession)
                .where(PaperSession.agent_id == agent.id)
                .order_by(PaperSession.created_at.desc())
                .limit(1)
            ).first()
            if row is None:
                return PaperStatus(agent_id=agent.id, status="not_running")
            return _status(session, row)

    def stop(self, user: User, request: PaperStop) -> PaperStatus:
        """Ask the runtime to stop the agent's running session (404 when none runs); one that
        no runtime has claimed yet stops here."""
        with self._db.transaction() as session:
            agent = owned_agent(session, user, request.agent_id)
            row = _active(session, PaperSession.agent_id == agent.id)
            if row is None:
                raise NotFound(f"agent {agent.id} runs no paper session")
            if not request.liquidate and repository.stop_unclaimed(session, row):
                return _status(session, row)  # no runtime had it (all were full)
            row.stop_requested = True
            row.liquidate = row.liquidate or request.liquidate
            session.flush()
            return _status(session, row)

    def list(self, user: User, *, page: int, limit: int) -> PaperSessionList:
        """The user's sessions, newest first."""
        with self._db.transaction() as session:
            where = PaperSession.user_id == user.id
            total = session.scalar(select(func.count()).select_from(PaperSession).where(where)) or 0
            rows = session.scalars(
                select(PaperSession)
                .where(where)
                .order_by(PaperSession.created_at.desc(), PaperSession.id)
                .offset((page - 1) * limit)
                .limit(limit)
            ).all()
            return PaperSessionList(
                sessions=[
                    PaperSessionOut(
                        session_id=r.id,
                        agent_id=r.agent_id,
                        account_id=r.account_id,
                        status=_public(r.status),
                        symbols=list(r.symbols),
                        created_at=r.created_at,
                        first_bar_time=r.first_bar_time,
                        last_bar_time=r.last_bar_time,
                        bars_processed=r.bars_processed,
                    )
                    for r in rows
                ],
                pagination=Pagination.of(page, limit, total),
            )

    def equity(self, user: User, session_id: str) -> PaperEquityOut:
        """The session's value at each live bar's close."""
        with self._db.transaction() as session:
            row = _owned(session, user, session_id)
            points = session.scalars(
                select(PaperEquity)
                .where(PaperEquity.session_id == row.id)
                .order_by(PaperEquity.seq)
            ).all()
            return PaperEquityOut(
                session_id=row.id,
                equity=[
                    EquityPoint(timestamp=p.bar_time, cash=p.cash, equity=p.equity) for p in points
                ],
            )

    def trades(self, user: User, session_id: str) -> PaperTradesOut:
        """The round trips the session closed."""
        with self._db.transaction() as session:
            row = _owned(session, user, session_id)
            trades = session.scalars(
                select(PaperTrade).where(PaperTrade.session_id == row.id).order_by(PaperTrade.n)
            ).all()
            return PaperTradesOut(
                session_id=row.id,
                trades=[PaperTradeOut.model_validate(t, from_attributes=True) for t in trades],
            )


def _active(session: Session, where: object) -> PaperSession | None:
    return session.scalars(
        select(PaperSession).where(where, PaperSession.status.in_(ACTIVE)).limit(1)  # type: ignore[arg-type]
    ).first()


def _owned(session: Session, user: User, session_id: str) -> PaperSession:
    return owned(session.get(PaperSession, session_id), user, "paper session", session_id)


def _public(status: str) -> SessionStatus:
    """A stored status (``running`` is stored once the agent decided on a live bar)."""
    return cast(SessionStatus, status)


def _status(session: Session, row: PaperSession) -> PaperStatus:
    account = session.get(PaperAccount, row.account_id)
    assert account is not None
    positions = repository.positions(session, [account.id])
    equity = _equity(account, positions)
    pnl = equity - row.initial_cash
    failure = None
    if row.failure_reason is not None:
        failure = PaperFailure(
            reason=row.failure_reason,
            message=row.failure_message or "",
            traceback=row.failure_traceback,
        )
    orders = [o for o in repository.open_orders(session, account.id) if o.session_id == row.id]
    return PaperStatus(
        agent_id=row.agent_id,
        session_id=row.id,
        account_id=row.account_id,
        status=_public(row.status),
        symbols=list(row.symbols),
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        first_bar_time=row.first_bar_time,
        last_bar_time=row.last_bar_time,
        bars_processed=row.bars_processed,
        missing_at_last_step=list(row.missing_at_last_step),
        broker=row.broker_status,
        cash=account.cash.quantize(CENT, ROUND_HALF_EVEN),
        equity=equity.quantize(CENT, ROUND_HALF_EVEN),
        total_pnl=pnl.quantize(CENT, ROUND_HALF_EVEN),
        total_return=float(pnl / row.initial_cash) if row.initial_cash else None,
        positions=[_position(p) for p in positions],
        open_orders=[_order(o) for o in orders],
        failure=failure,
    )


def _check_feed_goes_on(feed: MarketFeed | None) -> None:
    """503 when the feed has ended or failed: a session started now would wait for a bar
    that never comes."""
    if feed is not None and feed.state == FeedState.ENDED:
        raise ServiceUnavailable(f"the live feed ({feed.source}) has ended: {feed.message}")
    if feed is not None and feed.state == FeedState.FAILED:
        raise ServiceUnavailable(
            f"the live feed ({feed.source}) failed: {feed.message}; the next start of its "
            "process (farm up, or farm feed scaled out) tries again"
        )
