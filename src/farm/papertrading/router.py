"""HTTP routes of the paper-trading service: accounts and paper sessions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, status

from farm.deps import CurrentUser
from farm.papertrading.dependencies import AccountsDep, PaperDep
from farm.papertrading.schemas import (
    AccountCreate,
    AccountDetail,
    AccountList,
    AccountOut,
    FundRequest,
    PaperEquityOut,
    PaperSessionList,
    PaperStart,
    PaperStarted,
    PaperStatus,
    PaperStop,
    PaperTradesOut,
)
from farm.schemas import PageNumber, PageSize, errors

router = APIRouter(prefix="/api/accounts", tags=["paper-trading"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(400, 401, 409))
def create_account(
    accounts: AccountsDep,
    user: CurrentUser,
    request: Annotated[AccountCreate | None, Body()] = None,
) -> AccountOut:
    """Open a paper account: simulated (default: $100,000; every field has a default), or
    bound to an Alpaca paper key (409 when that key is already bound to an account).

    The host holds its cash and positions; an agent trading it only ever sees a mirror.
    """
    return accounts.create(user, request or AccountCreate())


@router.get("", responses=errors(400, 401))
def list_accounts(
    accounts: AccountsDep,
    user: CurrentUser,
    page: PageNumber = 1,
    limit: PageSize = 20,
) -> AccountList:
    """Your paper accounts, newest first, with cash and equity."""
    return accounts.list(user, page=page, limit=limit)


@router.get("/{account_id}", responses=errors(401, 403, 404))
def get_account(accounts: AccountsDep, user: CurrentUser, account_id: str) -> AccountDetail:
    """One of your accounts: cash, equity, positions marked at their last bar, open orders and
    the paper session trading it (if any)."""
    return accounts.show(user, account_id)


@router.post("/{account_id}/fund", responses=errors(400, 401, 403, 404, 409))
def fund_account(
    accounts: AccountsDep, user: CurrentUser, account_id: str, request: FundRequest
) -> AccountDetail:
    """Add cash (positive, whole cents, up to the account cap ``FARM_ACCOUNT_MAX_CASH``).

    Refused with 409 while a paper session trades the account.
    """
    return accounts.fund(user, account_id, request.amount)


@router.post("/{account_id}/reset", responses=errors(401, 403, 404, 409))
def reset_account(accounts: AccountsDep, user: CurrentUser, account_id: str) -> AccountDetail:
    """Back to the initial cash with no positions and no orders.

    Refused with 409 (naming the session) while a paper session trades the account.
    """
    return accounts.reset(user, account_id)


sessions_router = APIRouter(prefix="/api/paper-trading", tags=["paper-trading"])


@sessions_router.post(
    "/start", status_code=status.HTTP_202_ACCEPTED, responses=errors(400, 401, 403, 404, 409, 503)
)
def start_paper(paper: PaperDep, user: CurrentUser, request: PaperStart) -> PaperStarted:
    """Start an agent on the live feed with a paper account (a new $100,000 one by default).

    400 for unknown symbols or symbols the feed does not carry; 409 (with the ``sessionId``)
    when the agent or the account already runs a session. The session is ``starting`` until
    the agent has decided on its first live bar, then ``running``.
    """
    return paper.start(user, request)


@sessions_router.get("/status/{agent_id}", responses=errors(401, 403, 404))
def paper_status(paper: PaperDep, user: CurrentUser, agent_id: str) -> PaperStatus:
    """The agent's latest session: status, bars, account, positions, open orders, failure."""
    return paper.status(user, agent_id)


@sessions_router.post("/stop", responses=errors(400, 401, 403, 404))
def stop_paper(paper: PaperDep, user: CurrentUser, request: PaperStop) -> PaperStatus:
    """Stop the agent's session: open orders are cancelled (and, with ``liquidate``, the
    positions closed at the next bar), then the agent stops. Its numbers stay readable."""
    return paper.stop(user, request)


@sessions_router.get("/sessions", responses=errors(400, 401))
def list_paper_sessions(
    paper: PaperDep,
    user: CurrentUser,
    page: PageNumber = 1,
    limit: PageSize = 20,
) -> PaperSessionList:
    """Your paper sessions, newest first."""
    return paper.list(user, page=page, limit=limit)


@sessions_router.get("/{session_id}/equity", responses=errors(401, 403, 404))
def paper_equity(paper: PaperDep, user: CurrentUser, session_id: str) -> PaperEquityOut:
    """The session's account value at each live bar's close."""
    return paper.equity(user, session_id)


@sessions_router.get("/{session_id}/trades", responses=errors(401, 403, 404))
def paper_trades(paper: PaperDep, user: CurrentUser, session_id: str) -> PaperTradesOut:
    """The round trips the session closed."""
    return paper.trades(user, session_id)
