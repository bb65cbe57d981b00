"""Shorts SPY for 1.5x its equity, then spends the proceeds on AAPL: 2.5x gross exposure."""

import backtrader as bt


class Leveraged(bt.Strategy):
    def next(self):
        spy, aapl = self.getdatabyname("SPY"), self.getdatabyname("AAPL")
        if len(self) == 1:
            self.sell(data=spy, size=int(1.5 * self.broker.getvalue() / spy.close[0]))
        elif len(self) == 3:
            self.buy(data=aapl, size=int(self.broker.getcash() * 0.9 / aapl.close[0]))
