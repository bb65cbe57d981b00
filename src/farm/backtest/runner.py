"""Run one backtest: the session loop over stored bars with the simulated broker (DESIGN §4).

Pure orchestration: the caller builds the steps (from the bar store), this module wires the
:mod:`farm.engine.session` loop (the one paper sessions run too) with a fresh account, the
simulated broker and the sandboxed agent, and returns the results. No database, no HTTP.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from farm.brokers.simulated import FILL_LIMIT, MARGIN_LEVERAGE, OPEN_ORDER_LIMIT, SimulatedBroker
from farm.config import SandboxMode
from farm.core.account import Account
from farm.core.bars import Step
from farm.core.orders import ClosedTrade, Fill, Position
from farm.engine.session import RunStopped, SessionEngine, run_session
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

    Per step: the simulated broker fills earlier orders at this step's bars, the agent sees the
    bars and the account and decides, its orders go to the broker, and the account is marked at
    the closes. Bars of symbols outside ``config.symbols`` are dropped; steps left empty are
    skipped.
    ``on_step`` receives every :class:`DecisionRecord` (progress and FMEL). The run ends after
    the step at which equity is no longer positive and finite, or fills exceed
    ``config.max_fills`` (see :class:`RunStopped`). ``on_start`` receives the started agent
    session (e.g. to kill it from another thread).
    """
    account = Account(config.initial_cash)
    broker = SimulatedBroker(
        account,
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
    failure: AgentFailure | None = None
    stopped: RunStopped | None = None
    done = 0
    session = AgentSession(agent_file, session_config)
    try:
        with session:
            if on_start is not None:
                on_start(session)
            engine = SessionEngine(session, broker, config.symbols, config.max_fills)
            sinks = [] if on_step is None else [on_step]
            failure, stopped = run_session(engine, steps, sinks)
            done = engine.steps
    except AgentFailure as exc:
        failure = exc
    return BacktestOutcome(
        equity=list(account.equity),
        fills=list(account.fills),
        trades=list(account.trades),
        cash=account.cash,
        value=account.value,
        positions=dict(account.positions),
        steps=done,
        failure=failure,
        stopped=stopped,
        output=session.output,
    )
