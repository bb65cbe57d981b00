"""Places 1,000 limit orders a step that never fill, and counts the ones the broker rejects."""

import backtrader as bt


class OrderFlood(bt.Strategy):
    def __init__(self):
        self.rejected = 0

    def notify_order(self, order):
        if order.status == order.Rejected:
            self.rejected += 1

    def next(self):
        price = self.data.close[0] * 0.01
        for _ in range(1000):
            self.buy(size=1, exectype=bt.Order.Limit, price=price)

    def get_decision_reasoning(self):
        return f"rejected={self.rejected}"
