"""HTTP routes of the paper-trading service: accounts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from farm.deps import CurrentUser
from farm.papertrading.dependencies import AccountsDep
from farm.papertrading.schemas import (
    AccountCreate,
    AccountDetail,
    AccountList,
    AccountOut,
    FundRequest,
)
from farm.schemas import errors

MAX_PAGE_SIZE = 100

router = APIRouter(prefix="/api/accounts", tags=["paper-trading"])


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(400, 401))
def create_account(
    accounts: AccountsDep,
    user: CurrentUser,
    request: Annotated[AccountCreate | None, Body()] = None,
) -> AccountOut:
    """Open a simulated paper account (default: $100,000; every field has a default).

    The host holds its cash and positions; an agent trading it only ever sees a mirror.
    """
    return accounts.create(user, request or AccountCreate())


@router.get("", responses=errors(400, 401))
def list_accounts(
    accounts: AccountsDep,
    user: CurrentUser,
    page: Annotated[int, Query(ge=1)] = 1,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
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
