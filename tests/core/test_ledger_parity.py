"""Parity of the host ledger with a plain Backtrader run on real daily bars.

A Backtrader strategy records every order it creates and cancels, every notification, every
execution bit, every closed trade and the broker value at each ``next()``. The same orders are then
fed to :class:`Ledger` at the same steps, and everything must agree to 1e-6.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest

from farm.core.bars import Bar, Step
from farm.core.ledger import Ledger
from farm.core.orders import OrderRequest, OrderStatus, OrderType

TOL = 1e-6
CASH = 100_000.0
COMMISSION = 0.001

# Symbols sharing one calendar (no gaps between them) and a mix of two calendars (gaps).
ALIGNED = [
    "AAPL", "ACMR", "AEP", "ALRM", "AMED", "AMZN", "ANDE", "APPF", "ARGX", "BCRX",
    "BKLN", "BYND", "CELH", "CENX", "CHRW", "CLOV", "COLB", "CPRX", "CQP", "CSX",
]  # fmt: skip
MIXED = ["AAPL", "AMZN", "CSX", "CELH", "AEP", "AGCO", "AMT", "AON", "AZO", "BMY"]

EXECTYPES = {
    bt.Order.Market: OrderType.MARKET,
    bt.Order.Limit: OrderType.LIMIT,
    bt.Order.Stop: OrderType.STOP,
    bt.Order.StopLimit: OrderType.STOP_LIMIT,
}
STATUSES = {
    "Submitted": OrderStatus.SUBMITTED,
    "Accepted": OrderStatus.ACCEPTED,
    "Partial": OrderStatus.PARTIAL,
    "Completed": OrderStatus.COMPLETED,
    "Canceled": OrderStatus.CANCELLED,
    "Expired": OrderStatus.EXPIRED,
    "Margin": OrderStatus.MARGIN,
    "Rejected": OrderStatus.REJECTED,
}


def utc(dt: datetime) -> datetime:
    """Backtrader's float datetimes, back to whole-minute aware UTC."""
    return (dt + timedelta(seconds=30)).replace(second=0, microsecond=0, tzinfo=UTC)


@dataclass
class Recording:
    actions: dict[datetime, list[tuple[str, Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    notes: dict[datetime, list[tuple[str, OrderStatus]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    fills: list[tuple[str, float, float, float]] = field(default_factory=list)
    trades: list[tuple[str, float, float, float, int]] = field(default_factory=list)
    values: dict[datetime, float] = field(default_factory=dict)
    final_value: float = 0.0


class Recorder(bt.Strategy):  # type: ignore[misc]
    """Base strategy: records orders, cancels, notifications, executions, trades, values."""

    params = (("rec", None),)

    def __init__(self) -> None:
        self.rec: Recording = self.p.rec
        self.alive: dict[int, Any] = {}

    def now(self) -> datetime:
        return utc(self.datetime.datetime(0))

    def _record(self, order: Any) -> Any:
        if order is not None:
            c = order.created
            kind = EXECTYPES[order.exectype]
            req = OrderRequest(
                client_order_id=str(order.ref),
                symbol=order.data._name,
                size=float(c.size),
                type=kind,
                created_ts=self.now(),
                created_price=c.price,
                decision_seq=len(self),
                price=None if kind is OrderType.MARKET else c.price,
                limit_price=c.pricelimit if kind is OrderType.STOP_LIMIT else None,
                valid_until=getattr(order, "valid_dt", None),
            )
            self.rec.actions[self.now()].append(("submit", req))
            self.alive[order.ref] = order
        return order

    def buy(self, *args: Any, **kwargs: Any) -> Any:
        valid = kwargs.get("valid")
        order = super().buy(*args, **kwargs)
        if order is not None and valid is not None:
            order.valid_dt = valid.replace(tzinfo=UTC)
        return self._record(order)

    def sell(self, *args: Any, **kwargs: Any) -> Any:
        valid = kwargs.get("valid")
        order = super().sell(*args, **kwargs)
        if order is not None and valid is not None:
            order.valid_dt = valid.replace(tzinfo=UTC)
        return self._record(order)

    def cancel(self, order: Any) -> None:
        self.rec.actions[self.now()].append(("cancel", str(order.ref)))
        super().cancel(order)

    def notify_order(self, order: Any) -> None:
        self.rec.notes[self.now()].append((str(order.ref), STATUSES[order.getstatusname()]))
        for bit in order.executed.iterpending():
            self.rec.fills.append((str(order.ref), bit.size, bit.price, bit.comm))
        if not order.alive():
            self.alive.pop(order.ref, None)

    def notify_trade(self, trade: Any) -> None:
        if trade.isclosed:
            self.rec.trades.append(
                (trade.data._name, trade.pnl, trade.pnlcomm, trade.commission, trade.barlen)
            )

    def next(self) -> None:
        self.rec.values[self.now()] = self.broker.getvalue()
        self.decide()

    def stop(self) -> None:
        self.rec.final_value = self.broker.getvalue()

    def decide(self) -> None:
        raise NotImplementedError


class SmaCross(Recorder):
    """Long 25% on a 10/30 SMA cross up, short 10% on a cross down (over-allocates on purpose)."""

    def __init__(self) -> None:
        super().__init__()
        self.cross = {
            d._name: bt.ind.CrossOver(bt.ind.SMA(d, period=10), bt.ind.SMA(d, period=30))
            for d in self.datas
        }

    def decide(self) -> None:
        for d in self.datas:
            x = self.cross[d._name][0]
            if x > 0:
                self.order_target_percent(d, target=0.25)
            elif x < 0:
                self.order_target_percent(d, target=-0.10)


class RandomOrders(Recorder):
    """Seeded random market/limit/stop/stop-limit orders, validity, cancels and reversals."""

    params = (("seed", 7),)

    def __init__(self) -> None:
        super().__init__()
        self.rng = random.Random(self.p.seed)

    def decide(self) -> None:
        rng = self.rng
        for d in self.datas:
            if rng.random() > 0.12:
                continue
            close = d.close[0]
            size = rng.randint(1, 60)
            side = self.buy if rng.random() < 0.55 else self.sell
            valid = None
            if rng.random() < 0.5:
                valid = self.datetime.datetime(0) + timedelta(days=rng.randint(0, 6), hours=12)
            kind = rng.random()
            if kind < 0.3:
                side(data=d, size=size)
            elif kind < 0.55:
                side(data=d, size=size, exectype=bt.Order.Limit,
                     price=round(close * rng.uniform(0.95, 1.05), 2), valid=valid)  # fmt: skip
            elif kind < 0.8:
                side(data=d, size=size, exectype=bt.Order.Stop,
                     price=round(close * rng.uniform(0.95, 1.05), 2), valid=valid)  # fmt: skip
            else:
                stop = round(close * rng.uniform(0.96, 1.04), 2)
                side(data=d, size=size, exectype=bt.Order.StopLimit, price=stop,
                     plimit=round(stop * rng.uniform(0.97, 1.03), 2), valid=valid)  # fmt: skip
        if self.alive and rng.random() < 0.3:
            ref = rng.choice(sorted(self.alive))
            self.cancel(self.alive[ref])


def load(shared_data: Path, symbols: list[str]) -> dict[str, pd.DataFrame]:
    frames = {}
    for sym in symbols:
        df = pd.read_csv(shared_data / "daily" / f"{sym}.csv")
        df.index = pd.to_datetime(df.pop("Date"), utc=True).dt.tz_convert(None)
        df = df.rename(columns=str.lower)[["open", "high", "low", "close", "volume"]]
        frames[sym] = df
    return frames


def run_backtrader(
    frames: dict[str, pd.DataFrame], strategy: type[Recorder], slip_bps: float, **kw: Any
) -> Recording:
    rec = Recording()
    cerebro = bt.Cerebro(preload=False, runonce=False, stdstats=False)
    for sym, df in frames.items():
        cerebro.adddata(bt.feeds.PandasData(dataname=df, openinterest=None), name=sym)
    cerebro.broker.setcash(CASH)
    cerebro.broker.setcommission(commission=COMMISSION)
    if slip_bps:
        cerebro.broker.set_slippage_perc(slip_bps / 10_000)
    cerebro.addstrategy(strategy, rec=rec, **kw)
    cerebro.run()
    return rec


def steps(frames: dict[str, pd.DataFrame]) -> list[Step]:
    by_ts: dict[datetime, dict[str, Bar]] = defaultdict(dict)
    for sym, df in frames.items():
        for ts, o, h, lo, c, v in zip(
            df.index, df.open, df.high, df.low, df.close, df.volume, strict=True
        ):
            by_ts[ts.to_pydatetime().replace(tzinfo=UTC)][sym] = Bar(o, h, lo, c, v)
    return [Step(ts, by_ts[ts]) for ts in sorted(by_ts)]


def replay(frames: dict[str, pd.DataFrame], rec: Recording, slip_bps: float) -> dict[str, int]:
    """Drive the ledger with the recorded actions; assert parity; return counts."""
    ledger = Ledger(CASH, COMMISSION, slip_bps)
    orders = compared_values = 0
    diff = 0.0
    for step in steps(frames):
        events = ledger.process(step)
        value = ledger.mark(step)
        if step.ts in rec.values:
            assert value == pytest.approx(rec.values[step.ts], abs=TOL), step.ts
            diff = max(diff, abs(value - rec.values[step.ts]))
            compared_values += 1
        assert [(e.client_order_id, e.status) for e in events] == rec.notes.get(step.ts, [])
        for action, arg in rec.actions.get(step.ts, []):
            if action == "submit":
                ledger.submit(arg)
                orders += 1
            else:
                ledger.cancel(arg)

    ours = [(f.client_order_id, f.size, f.price, f.commission) for f in ledger.fills]
    assert len(ours) == len(rec.fills)
    for a, b in zip(ours, rec.fills, strict=True):
        assert a[0] == b[0]
        assert a[1:] == pytest.approx(b[1:], abs=TOL)
        diff = max(diff, *(abs(x - y) for x, y in zip(a[1:], b[1:], strict=True)))
    trades = [(t.symbol, t.pnl, t.pnl_net, t.commission, t.bars_held) for t in ledger.trades]
    assert len(trades) == len(rec.trades)
    for a, b in zip(trades, rec.trades, strict=True):
        assert a[0] == b[0]
        assert a[4] == b[4]
        assert a[1:4] == pytest.approx(b[1:4], abs=TOL)
        diff = max(diff, *(abs(x - y) for x, y in zip(a[1:4], b[1:4], strict=True)))
    assert ledger.value == pytest.approx(rec.final_value, abs=TOL)
    statuses = [s for notes in rec.notes.values() for _, s in notes]
    return {
        "max_diff_e12": round(diff * 1e12),
        "orders": orders,
        "fills": len(ours),
        "trades": len(trades),
        "values": compared_values,
        "margin": statuses.count(OrderStatus.MARGIN),
        "partial": statuses.count(OrderStatus.PARTIAL),
        "expired": statuses.count(OrderStatus.EXPIRED),
        "cancelled": statuses.count(OrderStatus.CANCELLED),
    }


@pytest.mark.parametrize("slip_bps", [0.0, 25.0])
def test_sma_cross_target_percent_parity(shared_data: Path, slip_bps: float) -> None:
    frames = load(shared_data, MIXED)
    counts = replay(frames, run_backtrader(frames, SmaCross, slip_bps), slip_bps)
    assert counts["orders"] > 200
    assert counts["margin"] > 0
    assert counts["trades"] > 50


@pytest.mark.parametrize(("seed", "slip_bps"), [(7, 0.0), (11, 10.0), (12, 0.0)])
def test_random_orders_parity(shared_data: Path, seed: int, slip_bps: float) -> None:
    frames = load(shared_data, ALIGNED)
    counts = replay(frames, run_backtrader(frames, RandomOrders, slip_bps, seed=seed), slip_bps)
    assert counts["orders"] > 2000
    for key in ("margin", "expired", "cancelled", "trades"):
        assert counts[key] > 0, key
