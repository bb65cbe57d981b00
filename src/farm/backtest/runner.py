"""Run one backtest: steps in, a sandboxed agent deciding, the host ledger filling (DESIGN §4).

Pure orchestration: the caller builds the steps (from the bar store), this module drives the
:class:`~farm.sandbox.host.AgentSession` and the :class:`~farm.core.ledger.Ledger`, and returns
the results. No database, no HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from farm.config import SandboxMode
from farm.core.bars import Step
from farm.core.ledger import FILL_LIMIT, MARGIN_LEVERAGE, OPEN_ORDER_LIMIT, Ledger
from farm.core.orders import ClosedTrade, Fill, Position
from farm.sandbox.host import AgentFailure, AgentSession, DecisionRecord, SessionConfig
from farm.sandbox.launcher import NO_OUTPUT, AgentOutput, SandboxLimits
from farm.sandbox.protocol import ParamValue


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """The account, its risk rules and caps, the universe and the sandbox of one backtest.

    ``max_leverage`` None turns the margin rule off (plain Backtrader).
    """

    symbols: tuple[str, ...]
    initial_cash: float = 100_000.0
    commission: float = 0.001
    slippage_bps: float = 0.0
    max_leverage: float | None = MARGIN_LEVERAGE
    max_open_orders: int = OPEN_ORDER_LIMIT
    max_fills: int = FILL_LIMIT
    record_decisions: bool = False
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    sandbox: SandboxMode = "bwrap"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    uid: int = 65534
    step_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class RunStopped:
    """Why the host ended a run early: the account is bankrupt, or it made too many fills."""

    reason: Literal["bankrupt", "fill_limit"]
    message: str


@dataclass(frozen=True, slots=True)
class BacktestOutcome:
    """What the host ledger recorded; ``failure`` is set when the agent stopped early,
    ``stopped`` when the host ended the run (the records stop at that step)."""

    equity: list[tuple[datetime, float]]
    fills: list[Fill]
    trades: list[ClosedTrade]
    cash: float
    value: float
    positions: dict[str, Position]
    steps: int
    failure: AgentFailure | None = None
    stopped: RunStopped | None = None
    output: AgentOutput = NO_OUTPUT  # what the agent printed (head and tail)


def run_backtest(
    steps: Iterable[Step],
    agent_file: Path,
    config: BacktestConfig,
    on_step: Callable[[DecisionRecord], None] | None = None,
    on_start: Callable[[AgentSession], None] | None = None,
) -> BacktestOutcome:
    """Backtest ``agent_file`` over ``steps`` (strictly increasing times).

    Per step: the ledger fills earlier orders at this step's bars, the agent sees the bars and
    the account and decides, its orders go to the ledger, and the account is marked at the
    closes. Bars of symbols outside ``config.symbols`` are dropped; steps left empty are skipped.
    ``on_step`` receives every :class:`DecisionRecord` (progress and FMEL). The run ends after
    the step at which equity is no longer positive and finite, or fills exceed
    ``config.max_fills`` (see :class:`RunStopped`). ``on_start`` receives the started agent
    session (e.g. to kill it from another thread).
    """
    ledger = Ledger(
        config.initial_cash,
        config.commission,
        config.slippage_bps,
        max_leverage=config.max_leverage,
        max_open_orders=config.max_open_orders,
    )
    session_config = SessionConfig(
        symbols=config.symbols,
        cash=config.initial_cash,
        commission=config.commission,
        record_decisions=config.record_decisions,
        params=config.params,
        mode=config.sandbox,
        limits=config.limits,
        uid=config.uid,
        step_timeout_s=config.step_timeout_s,
    )
    symbols = frozenset(config.symbols)
    done = 0
    failure: AgentFailure | None = None
    stopped: RunStopped | None = None
    last: datetime | None = None
    session = AgentSession(agent_file, session_config)
    try:
        with session:
            if on_start is not None:
                on_start(session)
            for step in steps:
                if not symbols.issuperset(step.bars):
                    step = Step(step.ts, {s: b for s, b in step.bars.items() if s in symbols})
                if not step.bars:
                    continue
                if last is not None and step.ts <= last:
                    raise ValueError(f"steps must be in increasing time order: {step.ts} <= {last}")
                last = step.ts
                nfills = len(ledger.fills)
                events = ledger.process(step)
                record = session.step(
                    done,
                    step,
                    events=events,
                    fills=ledger.fills[nfills:],
                    cash=ledger.cash,
                    value=ledger.value,
                    positions=ledger.positions,
                )
                for cid in record.cancels:
                    ledger.cancel(cid)
                for order in record.orders:
                    ledger.submit(order)
                value = ledger.mark(step)
                done += 1
                if on_step is not None:
                    on_step(record)
                stopped = _stop(value, len(ledger.fills), config.max_fills, step.ts)
                if stopped is not None:
                    break  # leaving the session kills the agent
            else:
                session.finish()
    except AgentFailure as exc:
        failure = exc
    return BacktestOutcome(
        equity=list(ledger.equity),
        fills=list(ledger.fills),
        trades=list(ledger.trades),
        cash=ledger.cash,
        value=ledger.value,
        positions=dict(ledger.positions),
        steps=done,
        failure=failure,
        stopped=stopped,
        output=session.output,
    )


def _stop(value: float, fills: int, max_fills: int, ts: datetime) -> RunStopped | None:
    """Why the run must end after a step valued at ``value`` with ``fills`` so far, if it must."""
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
