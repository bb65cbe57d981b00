"""SMA crossover on every symbol: market orders sized from cash, closes on the cross down."""

import backtrader as bt


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30))

    def __init__(self):
        self.cross = {
            d: bt.ind.CrossOver(
                bt.ind.SMA(d.close, period=self.p.fast), bt.ind.SMA(d.close, period=self.p.slow)
            )
            for d in self.datas
        }

    def next(self):
        for d, cross in self.cross.items():
            if cross[0] > 0 and not self.getposition(d):
                size = int(self.broker.getcash() * 0.3 / d.close[0])
                if size > 0:
                    self.buy(data=d, size=size)
            elif cross[0] < 0 and self.getposition(d):
                self.close(data=d)
