"""Paper-trading API bodies (camelCase). Money is a Decimal inside and a number on the wire."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PlainSerializer, SecretStr

from farm.backtest.schemas import TradeOut
from farm.schemas import ApiModel, Pagination

DEFAULT_INITIAL_CASH = Decimal(100_000)
MAX_NAME_CHARS = 100

#: An amount of money in, exact to the cent: positive, finite, at most two decimal places.
AmountIn = Annotated[Decimal, Field(gt=0, decimal_places=2, allow_inf_nan=False, examples=[100000])]
#: An amount of money out: a JSON number (exact to the cent up to the account cap).
MoneyOut = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


class AccountCreate(ApiModel):
    """A new paper account: simulated (the host holds ``initialCash``), or bound to an Alpaca
    paper key pair (cash and equity come from Alpaca)."""

    model_config = ConfigDict(extra="forbid")

    broker: Literal["simulated", "alpaca"] = "simulated"
    name: str | None = Field(default=None, description=f"1 to {MAX_NAME_CHARS} characters")
    initial_cash: AmountIn = Field(
        default=DEFAULT_INITIAL_CASH, description="Starting cash, in whole cents (simulated)"
    )
    key_id: str | None = Field(
        default=None, min_length=1, max_length=64, description="Alpaca paper key id (alpaca)"
    )
    secret_key: SecretStr | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Alpaca paper secret key (alpaca): stored encrypted, never returned",
    )


class FundRequest(ApiModel):
    """Cash to add to an account."""

    model_config = ConfigDict(extra="forbid")

    amount: AmountIn = Field(description="Positive, in whole cents; the account cap applies")


class AccountOut(ApiModel):
    """An account's headline numbers."""

    account_id: str
    name: str
    broker: str
    initial_cash: MoneyOut
    cash: MoneyOut
    equity: MoneyOut = Field(description="Cash plus the market value of the positions")
    created_at: datetime


class AccountPosition(ApiModel):
    """An open position, marked at the symbol's last bar."""

    symbol: str
    size: float
    average_price: float
    last_price: float
    marked_at: datetime
    market_value: MoneyOut
    unrealized_pnl: MoneyOut


class AccountOrder(ApiModel):
    """An order waiting at the broker."""

    client_order_id: str
    session_id: str
    symbol: str
    size: float = Field(description="Signed: positive buys, negative sells")
    type: str
    price: float | None
    limit_price: float | None
    valid_until: datetime | None
    status: str
    filled: float
    bar_time: datetime = Field(description="The bar the agent decided on")
    created_at: datetime


class RunningSession(ApiModel):
    """The paper session trading the account."""

    session_id: str


class AccountDetail(AccountOut):
    """An account with its positions, open orders and running session."""

    funded: MoneyOut = Field(description="Cash added since creation or the last reset")
    total_pnl: MoneyOut = Field(description="Equity minus initial cash minus funding")
    positions: list[AccountPosition]
    open_orders: list[AccountOrder]
    session: RunningSession | None = Field(description="The session trading it, if any")
    updated_at: datetime


class AccountList(ApiModel):
    """One page of accounts, newest first."""

    accounts: list[AccountOut]
    pagination: Pagination


# -- paper sessions (issue 9) ---------------------------------------------------------------------

SessionStatus = Literal["starting", "running", "stopped", "failed", "not_running"]


class PaperStart(ApiModel):
    """Start an agent on the live feed."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    account_id: str | None = Field(default=None, description="Default: a new $100,000 account")
    symbols: list[str] = Field(min_length=1, max_length=100)
    warmup_bars: int = Field(default=0, ge=0, description="Stored bars streamed before live ones")
    commission: float = Field(default=0.0, ge=0, le=0.1, allow_inf_nan=False)


class PaperStop(ApiModel):
    """Stop an agent's running session."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    liquidate: bool = Field(default=False, description="Close the positions at the next bar")


class PaperStarted(ApiModel):
    """A session was requested; the runtime starts it within a moment."""

    session_id: str
    agent_id: str
    account_id: str
    status: SessionStatus


class PaperFailure(ApiModel):
    """Why a session failed."""

    reason: str
    message: str
    traceback: str | None


class PaperStatus(ApiModel):
    """An agent's latest paper session and its account."""

    agent_id: str
    session_id: str | None = None
    account_id: str | None = None
    status: SessionStatus
    symbols: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    stopped_at: datetime | None = None
    first_bar_time: datetime | None = None
    last_bar_time: datetime | None = None
    bars_processed: int = 0
    missing_at_last_step: list[str] = Field(default_factory=list)
    broker: dict[str, Any] | None = Field(
        default=None,
        description="A real broker's reconciliation: when it last ran and the differences found",
    )
    cash: MoneyOut | None = None
    equity: MoneyOut | None = None
    total_pnl: MoneyOut | None = None
    total_return: float | None = None
    positions: list[AccountPosition] = Field(default_factory=list)
    open_orders: list[AccountOrder] = Field(default_factory=list)
    failure: PaperFailure | None = None


class PaperSessionOut(ApiModel):
    """One paper session in a list."""

    session_id: str
    agent_id: str
    account_id: str
    status: SessionStatus
    symbols: list[str]
    created_at: datetime
    first_bar_time: datetime | None
    last_bar_time: datetime | None
    bars_processed: int


class PaperSessionList(ApiModel):
    """One page of sessions, newest first."""

    sessions: list[PaperSessionOut]
    pagination: Pagination


class EquityPoint(ApiModel):
    """The account's value at one live bar's close."""

    timestamp: datetime
    cash: float
    equity: float


class PaperEquityOut(ApiModel):
    """A session's equity curve."""

    session_id: str
    equity: list[EquityPoint]


class PaperTradeOut(TradeOut):
    """A round trip the session closed."""


class PaperTradesOut(ApiModel):
    """A session's closed trades."""

    session_id: str
    trades: list[PaperTradeOut]
