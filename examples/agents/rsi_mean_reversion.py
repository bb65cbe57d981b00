"""RSI mean reversion: buy oversold symbols, sell once they recover."""

import backtrader as bt


class RsiMeanReversion(bt.Strategy):
    params = (("period", 14), ("oversold", 30), ("recovered", 55))

    def __init__(self):
        self.rsi = {data: bt.ind.RSI(data.close, period=self.p.period) for data in self.datas}

    def next(self):
        budget = self.broker.getvalue() * 0.9 / len(self.datas)
        for data, rsi in self.rsi.items():
            position = self.getposition(data)
            if not position and rsi[0] < self.p.oversold:
                size = int(budget / data.close[0])
                if size > 0:
                    self.buy(data, size=size)
            elif position and rsi[0] > self.p.recovered:
                self.close(data)
