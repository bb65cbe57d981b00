"""Its params are computed, so they cannot be read from the source at submission."""

import backtrader as bt


def make_params():
    return (("size", 1),)


class ComputedParams(bt.Strategy):
    params = make_params()

    def next(self):
        pass
