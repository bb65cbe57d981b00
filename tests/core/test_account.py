"""The account applies fills from any broker, partial and asynchronous ones included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from farm.core.account import Account
from farm.core.bars import Bar, Step

T1 = datetime(2024, 1, 2, tzinfo=UTC)
T2 = datetime(2024, 1, 3, tzinfo=UTC)


def test_partial_fills_of_one_order_build_one_position_and_one_trade() -> None:
    account = Account(10_000.0)
    account.execute("o1", "SPY", T1, 10, 100.0, 101.0, 0, commission=0.0, enforce=False)
    account.execute("o1", "SPY", T1, 30, 102.0, 101.0, 0, commission=0.0, enforce=False)
    assert account.positions["SPY"].size == 40
    assert account.positions["SPY"].price == pytest.approx(101.5)
    assert account.cash == pytest.approx(10_000 - 1_000 - 3_060)
    assert account.value == pytest.approx(account.cash + 40 * 101.0)
    account.begin_step(Step(T2, {"SPY": Bar(103, 104, 102, 103, 1)}))
    account.execute("o2", "SPY", T2, -40, 103.0, 103.0, 1, commission=0.001, enforce=False)
    assert not account.positions
    (trade,) = account.trades
    assert trade.size == 40
    assert trade.pnl == pytest.approx(40 * 1.5)
    assert trade.commission == pytest.approx(40 * 103 * 0.001)
    assert trade.bars_held == 1
    assert [f.client_order_id for f in account.fills] == ["o1", "o1", "o2"]


def test_a_real_brokers_fill_is_booked_even_past_the_cash_rule() -> None:
    account = Account(100.0)
    fill, refused = account.execute("o1", "SPY", T1, 10, 100.0, 100.0, 0, commission=0.0)
    assert fill is None
    assert refused == "insufficient cash"
    fill, refused = account.execute(
        "o1", "SPY", T1, 10, 100.0, 100.0, 0, commission=0.0, enforce=False
    )
    assert fill is not None
    assert refused == ""
    assert account.cash == -900.0
