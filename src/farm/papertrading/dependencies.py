"""FastAPI dependencies of the paper-trading service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from farm.deps import ContextDep
from farm.papertrading.service import AccountService


def get_accounts(context: ContextDep) -> AccountService:
    """The accounts service over the platform's database."""
    return AccountService(context.db, context.settings.account_max_cash)


AccountsDep = Annotated[AccountService, Depends(get_accounts)]
