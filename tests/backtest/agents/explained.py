"""Exercises the FMEL capture: reasoning, confidence (raising on some bars), indicators, reads."""

import backtrader as bt


class Gappy(bt.Indicator):
    lines = ("nan", "one")

    def next(self):
        self.lines.nan[0] = float("nan")
        self.lines.one[0] = 1.0


class Explained(bt.Strategy):
    def __init__(self):
        self.sma = bt.ind.SMA(self.data.close, period=5)
        self.gappy = Gappy(self.data)
        self.rsis = [bt.ind.RSI(d.close, period=3) for d in self.datas]
        self.highs = {d: bt.ind.Highest(d.high, period=2) for d in self.datas}

    def next(self):
        close = self.data.close[0]
        previous = self.data.close[-1]
        high = self.datas[1].high[0]
        self.note = f"close={close} previous={previous} high={high}"
        if len(self) == 8:
            self.buy(size=1)

    def get_decision_reasoning(self):
        return self.note + " read-after=" + str(self.data.open[0])

    def get_decision_confidence(self):
        if len(self) % 3 == 0:
            raise ValueError("no confidence today")
        return 0.25
