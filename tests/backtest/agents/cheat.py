"""Buys when tomorrow's close is higher, if it can read tomorrow; sells otherwise."""

import backtrader as bt


class Cheat(bt.Strategy):
    def next(self):
        for d in self.datas:
            try:
                tomorrow = d.close[1]
            except IndexError:
                continue
            pos = self.getposition(d).size
            if tomorrow > d.close[0] and not pos:
                self.buy(data=d, size=int(self.broker.getcash() * 0.45 / d.close[0]))
            elif tomorrow < d.close[0] and pos:
                self.close(data=d)
