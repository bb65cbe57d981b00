"""Reports its params in its reasoning; buys `size` shares on its first bar. Its base class is
its own (one concrete strategy): the params of both are merged."""

import backtrader as bt


class Sized(bt.Strategy):
    params = (("size", 1),)

    def next(self):
        if len(self) == 1:
            self.buy(size=self.p.size)


class ParamEcho(Sized):
    params = (("label", "default"), ("ratio", 0.5))

    def get_decision_reasoning(self):
        return f"size={self.p.size} label={self.p.label} ratio={self.p.ratio}"
