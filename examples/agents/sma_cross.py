"""SMA crossover: hold a symbol while its fast average is above its slow average.

Capital is split equally across the symbols it trades.
"""

import backtrader as bt


class SmaCross(bt.Strategy):
    params = (("fast", 10), ("slow", 30))

    def __init__(self):
        self.crosses = {
            data: bt.ind.CrossOver(
                bt.ind.SMA(data.close, period=self.p.fast),
                bt.ind.SMA(data.close, period=self.p.slow),
            )
            for data in self.datas
        }

    def next(self):
        weight = 0.95 / len(self.datas)
        for data, cross in self.crosses.items():
            if cross[0] > 0 and not self.getposition(data):
                self.order_target_percent(data, target=weight)
            elif cross[0] < 0 and self.getposition(data):
                self.close(data)
