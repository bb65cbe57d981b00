"""Raises from a helper on its 7th bar."""

import backtrader as bt


def explode(n):
    raise ValueError(f"boom at bar {n}")


class Broken(bt.Strategy):
    def next(self):
        if len(self) == 7:
            self.helper()

    def helper(self):
        explode(len(self))
