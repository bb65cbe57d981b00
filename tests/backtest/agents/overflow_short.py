"""Shorts 1e308 shares on its second bar: the NaN equity of issue 8."""

import backtrader as bt


class OverflowShort(bt.Strategy):
    def next(self):
        if len(self) == 2:
            self.sell(size=1e308)
