"""``Ledger``: one account trading through the simulated broker, as a single object.

The unit the ledger's parity tests drive: a :class:`~farm.brokers.simulated.SimulatedBroker`
over its own :class:`~farm.core.account.Account`, with the account's numbers at hand. Sessions
use the two separately (:mod:`farm.engine.session`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from farm.brokers.simulated import SimulatedBroker
from farm.core.account import Account, OpenTrade
from farm.core.bars import Step
from farm.core.orders import ClosedTrade, Fill, Position


class Ledger(SimulatedBroker):
    """A :class:`SimulatedBroker` over a new account holding ``cash``."""

    __slots__ = ()

    def __init__(
        self,
        cash: float,
        commission: float = 0.001,
        slippage_bps: float = 0.0,
        *,
        max_leverage: float | None = None,
        max_open_orders: int | None = None,
    ) -> None:
        super().__init__(
            Account(cash),
            commission,
            slippage_bps,
            max_leverage=max_leverage,
            max_open_orders=max_open_orders,
        )

    @property
    def cash(self) -> float:
        """The account's cash."""
        return self.account.cash

    @property
    def value(self) -> float:
        """The account's value at the last known closes."""
        return self.account.value

    @property
    def positions(self) -> Mapping[str, Position]:
        """The account's open positions."""
        return self.account.positions

    @property
    def open_trades(self) -> Mapping[str, OpenTrade]:
        """The account's open trades."""
        return self.account.open_trades

    @property
    def fills(self) -> list[Fill]:
        """The account's fills."""
        return self.account.fills

    @property
    def trades(self) -> list[ClosedTrade]:
        """The account's closed trades."""
        return self.account.trades

    @property
    def equity(self) -> list[tuple[datetime, float]]:
        """The account's equity curve."""
        return self.account.equity

    def mark(self, step: Step) -> float:
        """Value the account at ``step``'s closes and record it."""
        return self.account.mark(step)
