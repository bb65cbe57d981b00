"""Prints a first line, then numbered lines until the host kills it at the output cap."""

import backtrader as bt

print("FIRST LINE", flush=True)


class Flood(bt.Strategy):
    def next(self):
        for i in range(10**9):
            print(f"line {i:09d} " + "x" * 100)
