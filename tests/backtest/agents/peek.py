"""Tries every known way to read past the current bar and reports what it saw as reasoning."""

import json
import os

import backtrader as bt


class Peek(bt.Strategy):
    params = (("data_dir", ""),)

    def __init__(self):
        self.seen = {}

    def _probe(self, d):
        out = {"len": len(d), "buflen": d.buflen(), "dataname": repr(d.p.dataname)}
        out["array"] = len(d.close.array)
        out["dt_array"] = len(d.datetime.array)
        out["last_close"] = d.close.array[-1] if len(d.close.array) else None
        out["close0"] = d.close[0] if len(d) else None
        try:
            out["close1"] = d.close[1]
        except IndexError:
            out["close1"] = "IndexError"
        try:
            out["get"] = list(d.close.get(ago=1, size=1))
        except IndexError:
            out["get"] = "IndexError"
        return out

    def next(self):
        self.seen = {d._name: self._probe(d) for d in self.datas}
        try:
            self.seen["listdir"] = sorted(os.listdir(self.p.data_dir))[:3]
        except OSError as exc:
            self.seen["listdir"] = type(exc).__name__
        try:
            with open(os.path.join(self.p.data_dir, self.datas[0]._name + ".csv")) as fh:
                self.seen["file"] = fh.read(100)
        except OSError as exc:
            self.seen["file"] = type(exc).__name__

    def get_decision_reasoning(self):
        return json.dumps(self.seen)
