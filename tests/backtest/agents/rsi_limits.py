"""RSI mean reversion: expiring limit entries, stop-loss exits, stop-limit take-profits, cancels."""

import datetime

import backtrader as bt


class RsiLimits(bt.Strategy):
    params = (("period", 14), ("oversold", 35), ("overbought", 60))

    def __init__(self):
        self.rsi = {d: bt.ind.RSI(d.close, period=self.p.period) for d in self.datas}
        self.entries = {}
        self.stops = {}
        self.exits = {}

    def notify_order(self, order):
        if order.status != order.Completed:
            return
        d = order.data
        if order.isbuy():
            self.stops[d] = self.sell(
                data=d,
                size=order.executed.size,
                exectype=bt.Order.Stop,
                price=order.executed.price * 0.93,
            )
        else:
            for other in (self.stops.pop(d, None), self.exits.pop(d, None)):
                if other is not None and other.alive() and other.ref != order.ref:
                    self.cancel(other)

    def next(self):
        budget = self.broker.getvalue() * 0.08
        for d, rsi in self.rsi.items():
            pos = self.getposition(d)
            live = lambda o: o is not None and o.alive()  # noqa: E731
            if not pos and rsi[0] < self.p.oversold and not live(self.entries.get(d)):
                price = d.close[0] * 0.995
                self.entries[d] = self.buy(
                    data=d,
                    size=int(budget / price),
                    exectype=bt.Order.Limit,
                    price=price,
                    valid=datetime.timedelta(days=3),
                )
            elif pos and rsi[0] > self.p.overbought and not live(self.exits.get(d)):
                self.exits[d] = self.sell(
                    data=d,
                    size=pos.size,
                    exectype=bt.Order.StopLimit,
                    price=d.close[0] * 0.99,
                    plimit=d.close[0] * 0.98,
                    valid=datetime.timedelta(days=5),
                )
