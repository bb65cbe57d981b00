"""An account and its broker's open orders, restored from what a paper step persists, go on
exactly as the originals: same fills, trades, equity and cash to the last bit."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from farm.brokers.simulated import SimulatedBroker
from farm.core.account import Account
from farm.core.bars import Bar, Step
from farm.core.orders import OrderRequest, OrderType

SYMBOLS = ("SPY", "AAPL", "MSFT")
START = datetime(2024, 1, 2, tzinfo=UTC)


def steps(n: int) -> list[Step]:
    rng = random.Random(7)
    prices = dict.fromkeys(SYMBOLS, 100.0)
    out = []
    for i in range(n):
        bars = {}
        for symbol in SYMBOLS:
            if rng.random() < 0.1:
                continue  # a symbol without a bar at this step
            open_ = prices[symbol] * (1 + rng.uniform(-0.02, 0.02))
            close = open_ * (1 + rng.uniform(-0.03, 0.03))
            high, low = max(open_, close) * 1.01, min(open_, close) * 0.99
            prices[symbol] = close
            bars[symbol] = Bar(open_, high, low, close, 1000.0)
        out.append(Step(START + timedelta(days=i), bars))
    return out


def orders(seq: int, step: Step, rng: random.Random) -> list[OrderRequest]:
    out = []
    for n, (symbol, bar) in enumerate(sorted(step.bars.items()), 1):
        roll = rng.random()
        kind, price, limit = OrderType.MARKET, None, None
        if roll < 0.2:
            kind, price = OrderType.LIMIT, bar.close * 0.97
        elif roll < 0.3:
            kind, price, limit = OrderType.STOP_LIMIT, bar.close * 1.01, bar.close * 1.02
        elif roll < 0.4:
            kind, price = OrderType.STOP, bar.close * 0.96
        size = float(rng.choice([-30, -10, 5, 10, 20]))
        created = bar.close if price is None else price
        out.append(
            OrderRequest(f"s-{seq}-{n}", symbol, size, kind, step.ts, created, seq, price, limit)
        )
    return out


def run(
    broker: SimulatedBroker,
    span: list[Step],
    first: int,
    rng: random.Random,
    sent: dict[str, OrderRequest],
) -> None:
    for seq, step in enumerate(span, first):
        broker.process(step)
        for order in orders(seq, step, rng):
            sent[order.client_order_id] = order
            broker.submit(order)
        broker.account.mark(step)


def test_a_restored_account_and_its_open_orders_go_on_bit_identically() -> None:
    bars = steps(120)
    original = SimulatedBroker(Account(100_000.0), 0.001, max_leverage=2.0)
    sent: dict[str, OrderRequest] = {}
    run(original, bars[:60], 0, random.Random(1), sent)
    account = original.account
    assert account.open_trades, "the snapshot must hold open trades"
    assert original.open_orders, "and open orders"
    assert original.triggered, "and a stop-limit order triggered, resting at its limit"

    # What the rows and the books JSON hold, through JSON as the database stores it.
    internals = json.loads(json.dumps(account.internals()))
    triggered = set(json.loads(json.dumps(original.triggered)))
    filled = {f.client_order_id: 0.0 for f in account.fills}
    for f in account.fills:
        filled[f.client_order_id] += f.size
    before = len(account.fills)
    accepted = {c for c in original.open_orders if sent[c].decision_seq < 59}
    restored = SimulatedBroker(
        Account.restore(
            account.cash,
            {s: (p, account.closes[s]) for s, p in account.positions.items()},
            list(account.trades),
            list(account.equity),
            internals,
        ),
        0.001,
        max_leverage=2.0,
    )
    restored.restore(
        (
            sent[cid],
            sent[cid].size - filled.get(cid, 0.0),
            cid in accepted,
            cid in triggered,
        )
        for cid in original.open_orders
    )
    assert restored.open_orders == original.open_orders
    assert restored.account.fill_count == account.fill_count
    assert restored.account.value == account.value

    run(original, bars[60:], 60, random.Random(2), {})
    run(restored, bars[60:], 60, random.Random(2), {})
    mine, theirs = restored.account, original.account
    assert mine.fills == theirs.fills[before:]
    assert len(mine.fills) > 0
    assert mine.equity == theirs.equity
    assert mine.trades == theirs.trades
    assert mine.cash == theirs.cash
    assert dict(mine.positions) == dict(theirs.positions)
    assert mine.fill_count == theirs.fill_count
    assert restored.open_orders == original.open_orders
