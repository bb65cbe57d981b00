"""The host's risk rules and caps on real sandboxed agents (issue 8): margin on gross exposure,
absurd orders, bankruptcy, the open-order cap and the fill cap."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from backtest_support import AGENTS, Market

from farm.backtest.runner import BacktestConfig, BacktestOutcome, run_backtest
from farm.core.orders import OrderStatus
from farm.sandbox.host import DecisionRecord

pytestmark = pytest.mark.sandbox

CASH = 100_000.0
SINCE = datetime(2023, 1, 1, tzinfo=UTC)


def run(
    market: Market,
    agent: Path,
    symbols: tuple[str, ...],
    steps: int,
    records: list[DecisionRecord] | None = None,
    **config: Any,
) -> BacktestOutcome:
    recent = [s for s in market.steps(symbols) if s.ts >= SINCE]  # every symbol trades
    return run_backtest(
        recent[:steps],
        agent,
        BacktestConfig(symbols=symbols, initial_cash=CASH, **config),
        on_step=None if records is None else records.append,
    )


def events(records: list[DecisionRecord], status: OrderStatus) -> list[str]:
    return [e.client_order_id for r in records for e in r.events if e.status is status]


def test_short_proceeds_cannot_fund_leverage_beyond_the_margin_multiple(market: Market) -> None:
    records: list[DecisionRecord] = []
    outcome = run(market, AGENTS / "leveraged.py", ("SPY", "AAPL"), 10, records)
    assert outcome.failure is None
    assert outcome.stopped is None
    assert set(outcome.positions) == {"SPY"}  # the short filled, the 2.5x buy did not
    assert outcome.positions["SPY"].size < 0
    (refused,) = [e for r in records for e in r.events if e.status is OrderStatus.MARGIN]
    assert "2x equity" in refused.reason
    assert len(outcome.fills) == 1


@pytest.mark.parametrize(
    ("agent", "status"),
    [("absurd_short.py", OrderStatus.MARGIN), ("overflow_short.py", OrderStatus.REJECTED)],
)
def test_absurd_shorts_are_refused_and_the_account_stays_whole(
    market: Market, agent: str, status: OrderStatus
) -> None:
    records: list[DecisionRecord] = []
    outcome = run(market, AGENTS / agent, ("SPY",), 20, records)
    assert (outcome.failure, outcome.stopped) == (None, None)
    assert len(events(records, status)) == 1
    assert outcome.fills == []
    assert outcome.value == CASH
    assert all(v == CASH for _, v in outcome.equity)


def test_a_bankrupt_account_ends_the_session_keeping_the_records(market: Market) -> None:
    records: list[DecisionRecord] = []
    outcome = run(  # without the margin rule, the billion-share short fills
        market, AGENTS / "absurd_short.py", ("SPY",), 20, records, max_leverage=None
    )
    assert outcome.failure is None
    assert outcome.stopped is not None
    assert outcome.stopped.reason == "bankrupt"
    assert outcome.stopped.message.startswith("bankrupt: equity fell to -")
    assert outcome.steps == len(records) == len(outcome.equity) < 20  # kept up to that step
    assert outcome.equity[-1][1] < 0 < min(v for _, v in outcome.equity[:-1])
    assert [f.size for f in outcome.fills] == [-1e9]


def test_orders_past_the_open_order_cap_are_rejected_and_the_run_completes(
    market: Market,
) -> None:
    records: list[DecisionRecord] = []
    outcome = run(market, AGENTS / "order_flood.py", ("SPY",), 12, records, record_decisions=True)
    assert (outcome.failure, outcome.stopped) == (None, None)
    assert outcome.steps == 12
    accepted = events(records, OrderStatus.ACCEPTED)
    rejected = events(records, OrderStatus.REJECTED)
    assert len(accepted) == 1000  # the first step's orders; every later one is past the cap
    assert len(rejected) == 10 * 1000
    assert all("open order limit" in e.reason for r in records for e in r.events if e.status
               is OrderStatus.REJECTED)  # fmt: skip
    assert records[-1].reasoning == f"rejected={len(rejected)}"  # the agent saw every one


BUY_EVERY_BAR = """import backtrader as bt


class Buyer(bt.Strategy):
    def next(self):
        self.buy(size=1)
"""


def test_the_fill_cap_ends_the_session(market: Market, tmp_path: Path) -> None:
    agent = tmp_path / "buyer.py"
    agent.write_text(BUY_EVERY_BAR)
    outcome = run(market, agent, ("SPY",), 30, max_fills=5)
    assert outcome.failure is None
    assert outcome.stopped is not None
    assert outcome.stopped.reason == "fill_limit"
    assert "more than the 5 allowed" in outcome.stopped.message
    assert len(outcome.fills) == 6
    assert outcome.steps == 7  # an order a bar, each filled at the next bar's open
