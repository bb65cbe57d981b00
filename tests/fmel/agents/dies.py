"""Buys on its 3rd bar, sells on its 10th, and kills its own process on its 40th."""

import os
import signal

import backtrader as bt


class Dies(bt.Strategy):
    def next(self):
        if len(self) == 3:
            self.buy(size=5)
        elif len(self) == 10:
            self.close()
        elif len(self) == 40:
            os.kill(os.getpid(), signal.SIGKILL)

    def get_decision_reasoning(self):
        return f"bar {len(self)}"
