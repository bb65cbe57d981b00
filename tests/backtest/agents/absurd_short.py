"""Shorts a billion shares on its second bar: the "return of -2,050,911x" of issue 8."""

import backtrader as bt


class AbsurdShort(bt.Strategy):
    params = (("size", 1e9),)

    def next(self):
        if len(self) == 2:
            self.sell(size=self.p.size)
