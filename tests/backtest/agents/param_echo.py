"""Reports its params in its reasoning; buys `size` shares on its first bar."""

import backtrader as bt


class ParamEcho(bt.Strategy):
    params = (("size", 1), ("label", "default"), ("ratio", 0.5))

    def next(self):
        if len(self) == 1:
            self.buy(size=self.p.size)

    def get_decision_reasoning(self):
        return f"size={self.p.size} label={self.p.label} ratio={self.p.ratio}"
