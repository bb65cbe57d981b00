"""Momentum with explanations: FMEL records why it acted and how sure it was."""

import backtrader as bt


class ExplainedMomentum(bt.Strategy):
    params = (("lookback", 20), ("threshold", 0.03))

    def __init__(self):
        self.momentum = {
            data: bt.ind.RateOfChange(data.close, period=self.p.lookback) for data in self.datas
        }
        self.reason = "warming up"
        self.confidence = 0.0

    def next(self):
        weight = 0.95 / len(self.datas)
        notes = []
        strengths = []
        for data, roc in self.momentum.items():
            change = roc[0]
            strengths.append(min(abs(change) / (2 * self.p.threshold), 1.0))
            if change > self.p.threshold and not self.getposition(data):
                self.order_target_percent(data, target=weight)
                notes.append(f"buy {data._name}: {change:+.1%} over {self.p.lookback} bars")
            elif change < -self.p.threshold and self.getposition(data):
                self.close(data)
                notes.append(f"sell {data._name}: momentum turned {change:+.1%}")
        self.reason = "; ".join(notes) or "hold: no momentum beyond the threshold"
        self.confidence = sum(strengths) / len(strengths)

    def get_decision_reasoning(self):
        return self.reason

    def get_decision_confidence(self):
        return self.confidence
