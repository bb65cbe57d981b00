"""Pretends to be rich: sets its broker cash to 1e9, then buys far more than it can pay for."""

import backtrader as bt


class Greedy(bt.Strategy):
    def next(self):
        self.broker.cash = 1e9
        self.broker.set_cash(1e9)
        if len(self) == 5:
            self.buy(size=int(self.broker.getcash() / self.data.close[0]))

    def notify_order(self, order):
        if order.status == order.Completed:
            raise RuntimeError("a tampered order was filled")
