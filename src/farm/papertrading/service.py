"""Paper accounts: create, list, show, fund and reset, owner only. The host keeps the money."""

from __future__ import annotations

import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.orm import Session

from farm.errors import Conflict, InvalidInput
from farm.ownership import owned
from farm.papertrading import repository
from farm.papertrading.schemas import (
    MAX_NAME_CHARS,
    AccountCreate,
    AccountDetail,
    AccountList,
    AccountOrder,
    AccountOut,
    AccountPosition,
    RunningSession,
)
from farm.schemas import Pagination
from farm.storage.db import Database
from farm.storage.models import PaperAccount, PaperOrder, PaperPosition, User

DEFAULT_NAME = "Paper account"
SIMULATED = "simulated"
CENT = Decimal("0.01")


class AccountService:
    """The accounts of the paper-trading service."""

    def __init__(self, db: Database, max_cash: int) -> None:
        self._db = db
        self._max_cash = Decimal(max_cash)

    def create(self, user: User, request: AccountCreate) -> AccountOut:
        """A new simulated account holding ``initialCash``."""
        name = DEFAULT_NAME if request.name is None else request.name.strip()
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidInput(f"name must be 1 to {MAX_NAME_CHARS} characters")
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
            raise InvalidInput("name must not contain control or format characters")
        if request.initial_cash > self._max_cash:
            raise InvalidInput(
                f"initialCash must be at most {self._max_cash:,} (FARM_ACCOUNT_MAX_CASH)"
            )
        with self._db.transaction() as session:
            account = PaperAccount(
                id=str(uuid.uuid4()),
                user_id=user.id,
                name=name,
                broker=SIMULATED,
                initial_cash=request.initial_cash,
                cash=request.initial_cash,
                funded=Decimal(0),
            )
            session.add(account)
            session.flush()
            return _out(account, [])

    def list(self, user: User, *, page: int, limit: int) -> AccountList:
        """A page of the user's accounts, newest first, with the real total."""
        with self._db.transaction() as session:
            rows, total = repository.list_for_user(
                session, user.id, offset=(page - 1) * limit, limit=limit
            )
            held = defaultdict(list)
            for position in repository.positions(session, [a.id for a in rows]):
                held[position.account_id].append(position)
            accounts = [_out(account, held[account.id]) for account in rows]
        return AccountList(accounts=accounts, pagination=Pagination.of(page, limit, total))

    def show(self, user: User, account_id: str) -> AccountDetail:
        """One of the user's accounts with its positions, open orders and running session."""
        with self._db.transaction() as session:
            return _detail(session, owned_account(session, user, account_id))

    def fund(self, user: User, account_id: str, amount: Decimal) -> AccountDetail:
        """Add ``amount`` to the account's cash (refused while a session trades it)."""
        with self._db.transaction() as session:
            account = owned_account(session, user, account_id)
            room = max(self._max_cash - account.cash, Decimal(0)).quantize(CENT)
            if amount > room:
                _refuse_while_trading(account, "fund")
                raise self._over_cap(room)
            if not repository.add_cash(session, account_id, amount, self._max_cash):
                session.refresh(account)  # it changed since: a session started, or cash came in
                _refuse_while_trading(account, "fund")
                raise self._over_cap(max(self._max_cash - account.cash, Decimal(0)))
            session.refresh(account)
            return _detail(session, account)

    def _over_cap(self, room: Decimal) -> InvalidInput:
        return InvalidInput(
            f"an account may hold at most {self._max_cash:,} (FARM_ACCOUNT_MAX_CASH); "
            f"this one can take at most {room.quantize(CENT):,} more",
            maxCash=float(self._max_cash),
            room=float(room),
        )

    def reset(self, user: User, account_id: str) -> AccountDetail:
        """Back to the initial cash with no positions or orders (refused while a session
        trades it)."""
        with self._db.transaction() as session:
            account = owned_account(session, user, account_id)
            if not repository.reset(session, account_id):
                _refuse_while_trading(account, "reset")
            session.refresh(account)
            return _detail(session, account)


def owned_account(session: Session, user: User, account_id: str) -> PaperAccount:
    """The account ``account_id`` if ``user`` owns it: 404 if none, 403 if someone else's."""
    return owned(repository.get(session, account_id), user, "account", account_id)


def _refuse_while_trading(account: PaperAccount, action: str) -> None:
    """The hook for running sessions: 409 naming the session that trades ``account``."""
    running = account.running_session_id
    if running is not None:
        raise Conflict(
            f"cannot {action} account {account.id} while paper session {running} trades it; "
            "stop the session first",
            sessionId=running,
        )


def _market_value(position: PaperPosition) -> Decimal:
    return Decimal(position.size) * Decimal(position.last_price)


def _equity(account: PaperAccount, positions: Sequence[PaperPosition]) -> Decimal:
    return account.cash + sum((_market_value(p) for p in positions), Decimal(0))


def _out(account: PaperAccount, positions: Sequence[PaperPosition]) -> AccountOut:
    return AccountOut(
        account_id=account.id,
        name=account.name,
        broker=account.broker,
        initial_cash=account.initial_cash,
        cash=account.cash,
        equity=_equity(account, positions).quantize(CENT, ROUND_HALF_EVEN),
        created_at=account.created_at,
    )


def _detail(session: Session, account: PaperAccount) -> AccountDetail:
    positions = repository.positions(session, [account.id])
    equity = _equity(account, positions)
    running = account.running_session_id
    return AccountDetail(
        **_out(account, positions).model_dump(),
        funded=account.funded,
        total_pnl=(equity - account.initial_cash - account.funded).quantize(CENT, ROUND_HALF_EVEN),
        positions=[_position(p) for p in positions],
        open_orders=[_order(o) for o in repository.open_orders(session, account.id)],
        session=None if running is None else RunningSession(session_id=running),
        updated_at=account.updated_at,
    )


def _position(position: PaperPosition) -> AccountPosition:
    value = _market_value(position)
    cost = Decimal(position.size) * Decimal(position.average_price)
    return AccountPosition(
        symbol=position.symbol,
        size=position.size,
        average_price=position.average_price,
        last_price=position.last_price,
        marked_at=position.marked_at,
        market_value=value.quantize(CENT, ROUND_HALF_EVEN),
        unrealized_pnl=(value - cost).quantize(CENT, ROUND_HALF_EVEN),
    )


def _order(order: PaperOrder) -> AccountOrder:
    return AccountOrder(
        client_order_id=order.client_order_id,
        session_id=order.session_id,
        symbol=order.symbol,
        size=order.size,
        type=order.type,
        price=order.price,
        limit_price=order.limit_price,
        valid_until=order.valid_until,
        status=order.status,
        filled=order.filled,
        bar_time=order.bar_time,
        created_at=order.created_at,
    )
