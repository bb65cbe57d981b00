"""The SMA crossover of sma_cross.py, tampering with its broker after every decision."""

import backtrader as bt


class TamperingSmaCross(bt.Strategy):
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
        broker = self.broker
        broker.cash = 1e9
        broker.add_cash(1e9)
        broker.setcommission(commission=0.5)
        broker.getcommissioninfo(self.data).p.commission = 0.0
        broker.set_checksubmit(False)
        for d in self.datas:
            broker.positions[d].size += 1000
            broker.positions[d].price = 0.01
