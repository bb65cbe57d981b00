"""Fits a line to its last closes with PyTorch (autograd and an optimiser) each step, buys once
the fit is done, and says what it fitted, how long ``import torch`` took and its peak memory."""

import resource
import time

_started = time.perf_counter()
import torch  # noqa: E402 - timed on purpose

IMPORT_S = time.perf_counter() - _started

import backtrader as bt  # noqa: E402


class TorchTrend(bt.Strategy):
    params = (("window", 20),)

    def __init__(self):
        self.said = "warming up"
        torch.manual_seed(0)

    def next(self):
        n = self.p.window
        if len(self) < n:
            return
        closes = torch.tensor(self.data.close.get(size=n), dtype=torch.float64)
        y = (closes - closes.mean()) / closes.std()
        x = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
        weight = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        optimiser = torch.optim.SGD([weight], lr=0.2)
        for _ in range(100):
            optimiser.zero_grad()
            loss = ((weight[0] * x + weight[1] - y) ** 2).mean()
            loss.backward()
            optimiser.step()
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.said = (
            f"torch={torch.__version__} slope={weight[0].item():.4f} loss={loss.item():.4f} "
            f"import_s={IMPORT_S:.2f} peak_mb={peak_mb:.0f}"
        )
        if not self.position:
            self.buy(size=1)

    def get_decision_reasoning(self):
        return self.said
