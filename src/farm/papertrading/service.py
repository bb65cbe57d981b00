"""Paper accounts: create, list, show, fund and reset, owner only. The host keeps the money."""

from __future__ import annotations

import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal

from alpaca.common.exceptions import APIError
from sqlalchemy import select
from sqlalchemy.orm import Session

from farm.brokers.alpaca import AlpacaKey, verify_key
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
from farm.secretbox import SecretBox
from farm.storage.db import Database
from farm.storage.models import PaperAccount, PaperOrder, PaperPosition, User

DEFAULT_NAME = "Paper account"
SIMULATED = "simulated"
ALPACA = "alpaca"
CENT = Decimal("0.01")


class AccountService:
    """The accounts of the paper-trading service. ``alpaca`` (the check of a key and the box
    that seals it) is needed for accounts of broker ``alpaca`` only."""

    def __init__(self, db: Database, max_cash: int, alpaca: AlpacaBinding | None = None) -> None:
        self._db = db
        self._max_cash = Decimal(max_cash)
        self._alpaca = alpaca

    def create(self, user: User, request: AccountCreate) -> AccountOut:
        """A new account: simulated holding ``initialCash``, or bound to an Alpaca key pair
        (verified with Alpaca, stored encrypted) whose cash Alpaca reports."""
        name = DEFAULT_NAME if request.name is None else request.name.strip()
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidInput(f"name must be 1 to {MAX_NAME_CHARS} characters")
        if any(unicodedata.category(c) in ("Cc", "Cf") for c in name):
            raise InvalidInput("name must not contain control or format characters")
        key_id = sealed = None
        cash = request.initial_cash
        if request.broker == ALPACA:
            key_id, sealed, cash = self._bind(request)
        elif request.key_id is not None or request.secret_key is not None:
            raise InvalidInput("keyId and secretKey are for accounts of broker alpaca")
        if cash > self._max_cash:
            raise InvalidInput(
                f"initialCash must be at most {self._max_cash:,} (FARM_ACCOUNT_MAX_CASH)"
            )
        with self._db.transaction() as session:
            if key_id is not None and session.scalar(
                select(PaperAccount.id).where(PaperAccount.broker_key_id == key_id)
            ):
                raise Conflict("this Alpaca key is already bound to an account")
            account = PaperAccount(
                id=str(uuid.uuid4()),
                user_id=user.id,
                name=name,
                broker=request.broker,
                initial_cash=cash,
                cash=cash,
                funded=Decimal(0),
                broker_key_id=key_id,
                broker_secret=sealed,
            )
            session.add(account)
            session.flush()
            return _out(account, [])

    def _bind(self, request: AccountCreate) -> tuple[str, str, Decimal]:
        """Verify an Alpaca key pair: its key id, the sealed secret and Alpaca's cash."""
        if request.key_id is None or request.secret_key is None:
            raise InvalidInput("an alpaca account needs keyId and secretKey (a paper key pair)")
        if self._alpaca is None:
            raise InvalidInput("Alpaca accounts are not available on this server")
        secret = request.secret_key.get_secret_value()
        cash = self._alpaca.verify(request.key_id, secret)
        return request.key_id, self._alpaca.box.seal(secret), cash.quantize(CENT)

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
            _refuse_real(account, "funded")
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
            _refuse_real(account, "reset")
            if not repository.reset(session, account_id):
                _refuse_while_trading(account, "reset")
            session.refresh(account)
            return _detail(session, account)


def owned_account(session: Session, user: User, account_id: str) -> PaperAccount:
    """The account ``account_id`` if ``user`` owns it: 404 if none, 403 if someone else's."""
    return owned(repository.get(session, account_id), user, "account", account_id)


class AlpacaBinding:
    """What binding an Alpaca key needs: where Alpaca is, and the box sealing secrets."""

    def __init__(self, trading_url: str, box: SecretBox) -> None:
        self.trading_url = trading_url
        self.box = box

    def verify(self, key_id: str, secret_key: str) -> Decimal:
        """Alpaca's cash for the key pair (``GET /v2/account``); 400 saying why when refused."""
        try:
            account = verify_key(AlpacaKey(key_id, secret_key, self.trading_url))
        except APIError as exc:
            raise InvalidInput(
                f"Alpaca refused the key (HTTP {exc.status_code}): {_api_message(exc)}"
            ) from None
        except Exception as exc:  # connection refused, DNS, TLS: Alpaca was not reached
            raise InvalidInput(
                f"Alpaca could not be reached at {self.trading_url}: {type(exc).__name__}"
            ) from None
        if account.trading_blocked or account.account_blocked:
            raise InvalidInput("Alpaca reports this account as blocked from trading")
        return Decimal(account.cash or "0")


def _api_message(exc: Exception) -> str:
    try:
        return str(exc.message)  # type: ignore[attr-defined]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "no reason given"


def _refuse_real(account: PaperAccount, action: str) -> None:
    if account.broker != SIMULATED:
        raise InvalidInput(
            f"an {account.broker} account cannot be {action}: its cash comes from {account.broker}"
        )


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
