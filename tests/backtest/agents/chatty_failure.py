"""Prints on stdout and stderr, then fails on its 3rd bar."""

import sys

import backtrader as bt


class ChattyFailure(bt.Strategy):
    def next(self):
        print(f"bar {len(self)} close {self.data.close[0]}")
        print("a warning on stderr", file=sys.stderr)
        if len(self) == 3:
            raise RuntimeError("the model diverged")
