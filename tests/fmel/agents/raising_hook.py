"""Trades an SMA cross; its reasoning hook always raises, its confidence hook works."""

import backtrader as bt


class RaisingHook(bt.Strategy):
    def __init__(self):
        self.sma = bt.ind.SMA(self.data.close, period=5)

    def next(self):
        if not self.position and self.data.close[0] > self.sma[0]:
            self.buy(size=10)
        elif self.position and self.data.close[0] < self.sma[0]:
            self.close()

    def get_decision_reasoning(self):
        raise RuntimeError("reasoning is broken")

    def get_decision_confidence(self):
        return 0.7
