"""The session loop shared by backtests and paper trading (DESIGN §4, as NautilusTrader does it).

A session is a bar source (stored bars for a backtest, the live feed for paper), a broker with
its account (the simulated one, or Alpaca's paper service), the sandboxed agent and sinks that
see every decision (FMEL, progress, metrics, snapshots). Backtest and paper differ only in the
source, the broker and the clock, so their numbers agree by construction.

:class:`SessionEngine` runs one step in two halves (:meth:`~SessionEngine.send`, then
:meth:`~SessionEngine.receive`) so one host thread can drive many sessions at once: send the
step to every agent, then collect the decisions as they come. :func:`run_session` is the whole
loop over a finite source, as a backtest runs it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from farm.brokers.base import Broker
from farm.core.bars import Step
from farm.sandbox.host import AgentFailure, AgentSession, DecisionRecord

Sink = Callable[[DecisionRecord], None]
"""Sees every decision after the broker took its orders (FMEL, progress, snapshots)."""


@dataclass(frozen=True, slots=True)
class RunStopped:
    """Why the host ended a run early: the account is bankrupt, or it made too many fills."""

    reason: Literal["bankrupt", "fill_limit"]
    message: str


class SessionEngine:
    """One agent trading through one broker, a step at a time.

    Bars of symbols outside ``symbols`` are dropped and steps left empty are skipped; steps
    must come in increasing time order. A warm-up step (``live`` False) reaches the agent
    only: the broker neither matches nor marks on it and its orders are dropped.
    """

    def __init__(
        self, agent: AgentSession, broker: Broker, symbols: Iterable[str], max_fills: int
    ) -> None:
        self.agent = agent
        self.broker = broker
        self.symbols = frozenset(symbols)
        self.max_fills = max_fills
        self.steps = 0
        self.last_ts: datetime | None = None
        self._sent: tuple[Step, bool] | None = None

    def send(self, step: Step, *, live: bool = True) -> bool:
        """Let the broker process ``step`` (when live) and send it to the agent; False (and
        nothing sent) when it holds no bar of the session's symbols."""
        if not self.symbols.issuperset(step.bars):
            step = Step(step.ts, {s: b for s, b in step.bars.items() if s in self.symbols})
        if not step.bars:
            return False
        last = self.last_ts
        if last is not None and step.ts <= last:
            raise ValueError(f"steps must be in increasing time order: {step.ts} <= {last}")
        self.last_ts = step.ts
        account = self.broker.account
        nfills = len(account.fills)
        events = self.broker.process(step) if live else []
        self.agent.send_step(
            self.steps,
            step,
            events=events,
            fills=account.fills[nfills:],
            cash=account.cash,
            value=account.value,
            positions=account.positions,
            live=live,
        )
        self._sent = (step, live)
        return True

    def receive(self, timeout: float) -> DecisionRecord:
        """The agent's decision on the step sent (an :class:`AgentFailure` when it fails or
        overruns ``timeout``); on a live step its cancels and orders go to the broker and the
        account is marked at the step's closes."""
        sent = self._sent
        if sent is None:
            raise RuntimeError("receive() without a step sent")
        self._sent = None
        step, live = sent
        record = self.agent.receive_decision(timeout)
        if live:
            broker = self.broker
            for cid in record.cancels:
                broker.cancel(cid)
            for order in record.orders:
                broker.submit(order)
            broker.account.mark(step)
        self.steps += 1
        return record

    def stopped(self) -> RunStopped | None:
        """Why the session must end after the step just marked, if it must."""
        account = self.broker.account
        value, ts = account.equity[-1][1], account.equity[-1][0]
        return run_stopped(value, account.fill_count, self.max_fills, ts)


def run_stopped(value: float, fills: int, max_fills: int, ts: datetime) -> RunStopped | None:
    """Why a session must end after a step valued at ``value`` with ``fills`` so far, if it must."""
    if not math.isfinite(value):
        return RunStopped("bankrupt", f"bankrupt: equity is not a finite number ({value}) at {ts}")
    if value <= 0:
        return RunStopped("bankrupt", f"bankrupt: equity fell to {value:,.2f} at {ts}")
    if fills > max_fills:
        return RunStopped(
            "fill_limit",
            f"fill limit exceeded: {fills} fills, more than the {max_fills} allowed per session",
        )
    return None


def run_session(
    engine: SessionEngine, source: Iterable[Step], sinks: Sequence[Sink] = ()
) -> tuple[AgentFailure | None, RunStopped | None]:
    """Drive ``engine`` over every step of a finite ``source`` (a backtest's stored bars), then
    end the agent cleanly. Returns the agent's failure or the host's reason to stop, if any."""
    timeout = engine.agent.step_timeout_s
    try:
        for step in source:
            if not engine.send(step):
                continue
            record = engine.receive(timeout)
            for sink in sinks:
                sink(record)
            stopped = engine.stopped()
            if stopped is not None:
                return None, stopped  # leaving the agent session kills the agent
        engine.agent.finish()
    except AgentFailure as exc:
        return exc, None
    return None, None
