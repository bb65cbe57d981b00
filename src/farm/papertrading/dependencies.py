"""FastAPI dependencies of the paper-trading service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from farm.deps import ContextDep
from farm.papertrading.service import AccountService, AlpacaBinding
from farm.papertrading.sessions import PaperService


def get_accounts(context: ContextDep) -> AccountService:
    """The accounts service over the platform's database (the secret box built at start)."""
    settings = context.settings
    alpaca = AlpacaBinding(settings.alpaca_trading_url, context.secrets)
    return AccountService(context.db, settings.account_max_cash, alpaca)


AccountsDep = Annotated[AccountService, Depends(get_accounts)]


def get_paper(context: ContextDep) -> PaperService:
    """The paper sessions service (requests for the runtime process, and reports)."""
    return PaperService(context.db, context.bars, context.settings)


PaperDep = Annotated[PaperService, Depends(get_paper)]
