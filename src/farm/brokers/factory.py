"""The broker of a paper session, chosen by its account's broker (issue 10)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from farm.brokers.alpaca import AlpacaBroker, AlpacaKey, verify_key
from farm.brokers.base import SessionBroker
from farm.brokers.simulated import SimulatedBroker
from farm.config import Settings
from farm.core.account import Account
from farm.secretbox import SecretBox
from farm.storage.models import PaperAccount


def alpaca_key(account: PaperAccount, settings: Settings) -> AlpacaKey:
    """The key pair an Alpaca account is bound to, its secret unsealed (host memory only)."""
    if account.broker_key_id is None or account.broker_secret is None:
        raise ValueError(f"account {account.id} has no Alpaca key")
    secret = SecretBox.from_settings(settings).open(account.broker_secret)
    return AlpacaKey(account.broker_key_id, secret, settings.alpaca_trading_url)


def session_broker(
    account: PaperAccount,
    cash: float | None,
    commission: float,
    since: datetime,
    settings: Settings,
    refused: Mapping[str, str] | None = None,
) -> SessionBroker:
    """The broker trading ``account`` for a session that began at ``since``. ``cash`` is the
    session's starting cash when it resumes; a new Alpaca session starts from Alpaca's.
    ``refused``: the session's orders rejected before a restart, with the reasons (never sent
    again)."""
    if account.broker == "alpaca":
        key = alpaca_key(account, settings)
        start = float(verify_key(key).cash or 0) if cash is None else cash
        return AlpacaBroker(
            Account(start),
            key,
            since=since,
            reconcile_every_s=settings.alpaca_reconcile_s,
            refused=refused or {},
        )
    return SimulatedBroker(
        Account(float(account.cash) if cash is None else cash),
        commission,
        max_leverage=settings.max_leverage,
        max_open_orders=settings.max_open_orders,
    )
