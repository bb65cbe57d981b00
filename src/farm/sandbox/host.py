"""The host side of one agent session, shared by backtests and paper trading (DESIGN §4, §5).

An :class:`AgentSession` launches the sandboxed runtime, performs the handshake, then for each
timestep sends the step's bars, the order events and the authoritative account, and returns the
agent's validated decision as a :class:`DecisionRecord`. Anything that goes wrong with the agent
becomes an :class:`AgentFailure`; the child is always killed and its pipes closed on exit.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

from farm.config import SandboxMode
from farm.core.bars import Bar, Step
from farm.core.orders import Fill, OrderEvent, OrderRequest, OrderType, Position
from farm.sandbox.launcher import (
    NO_OUTPUT,
    AgentOutput,
    AgentProcess,
    SandboxLimits,
    Termination,
    launch,
)
from farm.sandbox.protocol import (
    MAX_AGENT_FRAME,
    PROTOCOL_VERSION,
    AgentMessage,
    Channel,
    ChannelClosed,
    ChannelTimeout,
    Decision,
    Done,
    End,
    Error,
    Failed,
    HostMessage,
    ParamValue,
    ProtocolError,
    Ready,
    Start,
    StepMsg,
    WireBar,
    WireEvent,
    WireOrder,
    WirePosition,
)

AGENT_PATH = "/agent/agent.py"
FailureReason = Literal["agent_error", "timeout", "memory", "killed", "invalid_agent", "output"]
_TERMINATION_REASONS: dict[str, tuple[FailureReason, str]] = {
    "timeout": ("timeout", "the agent exceeded its wall-time limit"),
    "cpu": ("timeout", "the agent exceeded its CPU-time limit"),
    "memory": ("memory", "the agent exceeded its memory limit"),
    "killed": ("killed", "the agent process was killed"),
    "output": ("output", "the agent printed more output than allowed"),
}


class AgentFailure(Exception):
    """Why an agent session ended early; ``message`` says what the author should fix."""

    def __init__(
        self, reason: FailureReason, message: str, traceback: str = "", output: str = ""
    ) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: FailureReason = reason
        self.message = message
        self.traceback = traceback
        self.output = output


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How to run one agent: its universe, the host broker's terms and the sandbox."""

    symbols: tuple[str, ...]
    cash: float
    commission: float
    record_decisions: bool = False
    params: Mapping[str, ParamValue] = field(default_factory=dict)
    mode: SandboxMode = "bwrap"
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    uid: int = 65534
    start_timeout_s: float = 60.0
    step_timeout_s: float = 60.0


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """Everything known about one decision point (one step), for FMEL.

    ``events`` and ``fills`` happened at this step's bars (results of earlier decisions); ``cash``,
    ``value`` and ``positions`` are the account the agent saw; ``orders`` and ``cancels`` are
    what it decided. The agent-reported fields are empty unless decisions are recorded.
    """

    seq: int
    ts: datetime
    bars: Mapping[str, Bar]
    events: Sequence[OrderEvent]
    fills: Sequence[Fill]
    cash: float
    value: float
    positions: Mapping[str, Position]
    orders: Sequence[OrderRequest]
    cancels: Sequence[str]
    next_called: bool = False
    reasoning: str | None = None
    confidence: float | None = None
    indicators: Mapping[str, float | list[float | None] | None] = field(default_factory=dict)
    data_accesses: Sequence[tuple[str, str, int]] = ()
    accesses_dropped: int = 0
    hook_errors: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class _Sent:
    """The step sent to the agent, waiting for its decision."""

    seq: int
    step: Step
    events: Sequence[OrderEvent]
    fills: Sequence[Fill]
    cash: float
    value: float
    positions: Mapping[str, Position]


class AgentSession:
    """One sandboxed agent process driven step by step. Use as a context manager."""

    def __init__(self, agent_file: Path, config: SessionConfig) -> None:
        self._file = Path(agent_file).resolve()
        self._config = config
        self._symbols = frozenset(config.symbols)
        self._closes: dict[str, float] = {}
        self._ids: set[str] = set()
        self._proc: AgentProcess | None = None
        self._channel: Channel | None = None
        self.output: AgentOutput = NO_OUTPUT  # what the agent printed, once closed
        self._sent: _Sent | None = None

    def __enter__(self) -> AgentSession:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Launch the runtime and wait for its Ready (or an AgentFailure)."""
        cfg = self._config
        self._proc = launch(
            [sys.executable, "-B", "-m", "farm.sandbox.runtime", AGENT_PATH],
            readonly_binds={self._file: AGENT_PATH},
            limits=cfg.limits,
            mode=cfg.mode,
            uid=cfg.uid,
        )
        self._channel = Channel(
            self._proc.from_agent.fileno(),
            self._proc.to_agent.fileno(),
            AgentMessage,
            MAX_AGENT_FRAME,
        )
        self._send(
            Start(
                version=PROTOCOL_VERSION,
                symbols=list(cfg.symbols),
                cash=cfg.cash,
                commission=cfg.commission,
                record_decisions=cfg.record_decisions,
                params=dict(cfg.params),
            ),
            cfg.start_timeout_s,
        )
        reply = self._recv(cfg.start_timeout_s, "starting")
        if not isinstance(reply, Ready) or reply.version != PROTOCOL_VERSION:
            raise self._violation(f"expected Ready, got {type(reply).__name__}")

    def step(
        self,
        seq: int,
        step: Step,
        *,
        events: Sequence[OrderEvent],
        fills: Sequence[Fill],
        cash: float,
        value: float,
        positions: Mapping[str, Position],
    ) -> DecisionRecord:
        """Send one timestep and return the agent's validated decision for it.

        ``step`` must hold bars of the session's symbols only, and at least one.
        """
        self.send_step(
            seq, step, events=events, fills=fills, cash=cash, value=value, positions=positions
        )
        return self.receive_decision(self._config.step_timeout_s)

    def send_step(
        self,
        seq: int,
        step: Step,
        *,
        events: Sequence[OrderEvent],
        fills: Sequence[Fill],
        cash: float,
        value: float,
        positions: Mapping[str, Position],
        live: bool = True,
    ) -> None:
        """Send one timestep (the first half of :meth:`step`); collect the decision with
        :meth:`receive_decision`. ``live`` False marks a warm-up bar; the agent's strategy gets
        ``notify_data(data, LIVE)`` before the first live bar that follows warm-up bars."""
        bars = step.bars
        if not bars or not self._symbols.issuperset(bars):
            raise ValueError(f"step {seq} must hold bars of the session's symbols (and some)")
        held = {s: p for s, p in positions.items() if p.size}
        self._send(
            StepMsg(
                seq=seq,
                ts=step.ts,
                bars={
                    s: WireBar(b.open, b.high, b.low, b.close, b.volume) for s, b in bars.items()
                },
                cash=cash,
                value=value,
                events=[
                    WireEvent(
                        e.client_order_id,
                        e.status.value,
                        e.fill_size,
                        e.fill_price,
                        e.commission,
                    )
                    for e in events
                ],
                positions={s: WirePosition(p.size, p.price) for s, p in held.items()},
                live=live,
            ),
            self._config.step_timeout_s,
        )
        closes = self._closes
        for symbol, bar in bars.items():
            closes[symbol] = bar.close
        self._sent = _Sent(seq, step, events, fills, cash, value, held)

    @property
    def step_timeout_s(self) -> float:
        """The configured time allowed per step."""
        return self._config.step_timeout_s

    def fileno(self) -> int:
        """The pipe the agent's replies arrive on (for ``selectors``)."""
        assert self._proc is not None
        return self._proc.from_agent.fileno()

    def receive_decision(self, timeout: float) -> DecisionRecord:
        """Wait up to ``timeout`` seconds for the decision on the step last sent and validate it
        (an overrun fails the session as ``timeout``)."""
        sent = self._sent
        if sent is None:
            raise RuntimeError("receive_decision() without a step sent")
        self._sent = None
        seq = sent.seq
        reply = self._recv(timeout, f"deciding step {seq}")
        if not isinstance(reply, Decision) or reply.seq != seq:
            raise self._violation(f"expected the decision for step {seq}, got {reply!r:.200}")
        orders = [self._order(o, seq, sent.step.ts) for o in reply.orders]
        for cid in reply.cancels:
            if cid not in self._ids:
                raise self._violation(f"cancel of unknown order {cid!r}")
        return DecisionRecord(
            seq=seq,
            ts=sent.step.ts,
            bars=sent.step.bars,
            events=sent.events,
            fills=sent.fills,
            cash=sent.cash,
            value=sent.value,
            positions=sent.positions,
            orders=orders,
            cancels=reply.cancels,
            next_called=reply.next_called,
            reasoning=reply.reasoning,
            confidence=reply.confidence,
            indicators=reply.indicators,
            data_accesses=[(a.symbol, a.field, a.index) for a in reply.accesses],
            accesses_dropped=reply.accesses_dropped,
            hook_errors=reply.hook_errors,
        )

    def finish(self) -> None:
        """Tell the agent there are no more steps and wait for it to end cleanly."""
        self._send(End(), self._config.step_timeout_s)
        reply = self._recv(self._config.step_timeout_s, "stopping")
        if not isinstance(reply, Done):
            raise self._violation(f"expected Done, got {type(reply).__name__}")
        assert self._proc is not None
        self._proc.wait(self._config.step_timeout_s)

    def restart_output_window(self) -> None:
        """Count the agent's output afresh from now (a live session, once it is warmed up)."""
        if self._proc is not None:
            self._proc.restart_output_window()

    def kill(self) -> None:
        """Kill the agent now, from any thread: the step in progress fails as ``killed``."""
        proc = self._proc
        if proc is not None:
            proc.kill()

    def close(self) -> None:
        """Kill the child if it is still running and close both pipes (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()
            self.output = proc.output()

    def _order(self, order: WireOrder, seq: int, ts: datetime) -> OrderRequest:
        """Validate one new order and price it from host data only."""
        if order.id in self._ids:
            raise self._violation(f"duplicate order id {order.id!r}")
        if order.symbol not in self._symbols:
            raise self._violation(f"order for unknown symbol {order.symbol!r}")
        if not math.isfinite(order.size) or order.size == 0:
            raise self._violation(f"order size must be finite and non-zero: {order.size}")
        kind = OrderType(order.type)
        needed = {
            OrderType.MARKET: (),
            OrderType.LIMIT: (order.price,),
            OrderType.STOP: (order.price,),
            OrderType.STOP_LIMIT: (order.price, order.limit_price),
        }[kind]
        for price in needed:
            if price is None or not math.isfinite(price) or price <= 0:
                raise self._violation(f"{kind} order needs positive prices, got {price}")
        if kind is OrderType.MARKET:
            created = self._closes.get(order.symbol)
            if created is None:
                raise self._violation(f"market order for {order.symbol} before its first bar")
        else:
            created = cast(float, order.price)
        self._ids.add(order.id)
        return OrderRequest(
            client_order_id=order.id,
            symbol=order.symbol,
            size=order.size,
            type=kind,
            created_ts=ts,
            created_price=created,
            decision_seq=seq,
            price=None if kind is OrderType.MARKET else order.price,
            limit_price=order.limit_price if kind is OrderType.STOP_LIMIT else None,
            valid_until=order.valid_until,
        )

    def _send(self, msg: HostMessage, timeout: float) -> None:
        assert self._channel is not None
        try:
            self._channel.send(msg, timeout)
        except ChannelTimeout:
            raise self._kill("timeout", "the agent stopped reading its input") from None
        except ChannelClosed:
            raise self._died() from None

    def _recv(self, timeout: float, doing: str) -> AgentMessage:
        assert self._channel is not None
        try:
            msg = self._channel.recv(timeout)
        except ChannelTimeout:
            raise self._kill("timeout", f"no answer within {timeout:g} s while {doing}") from None
        except ChannelClosed:
            raise self._died() from None
        except ProtocolError as exc:
            raise self._violation(str(exc)) from None
        reported = self._reported(msg)
        if reported is not None:
            raise reported
        return cast(AgentMessage, msg)

    def _reported(self, msg: object) -> AgentFailure | None:
        """The failure an agent reported itself (Failed, or Error at start), if ``msg`` is one."""
        if isinstance(msg, Failed):
            text = f"{msg.type}: {msg.message}" if msg.message else msg.type
            return self._kill("agent_error", text, msg.traceback)
        if isinstance(msg, Error):
            invalid = msg.kind == "invalid_agent"
            return self._kill(
                "invalid_agent" if invalid else "agent_error", msg.message, msg.traceback
            )
        return None

    def _violation(self, detail: str) -> AgentFailure:
        return self._kill("agent_error", f"protocol violation: {detail}")

    def _kill(self, reason: FailureReason, message: str, traceback: str = "") -> AgentFailure:
        """Kill the child and describe the failure."""
        assert self._proc is not None
        self._proc.kill()
        return AgentFailure(reason, message, traceback, self._proc.output_tail())

    def _died(self) -> AgentFailure:
        """A pipe closed: use the failure the agent reported before exiting, or find out how the
        child ended."""
        assert self._proc is not None
        assert self._channel is not None
        try:
            reported = self._reported(self._channel.recv(1.0))
        except ProtocolError:
            reported = None
        if reported is not None:
            return reported
        try:
            term: Termination = self._proc.wait(5.0)
        except Exception:
            term = self._proc.kill()
        output = self._proc.output_tail()
        mapped = _TERMINATION_REASONS.get(term.reason)
        if mapped is not None:
            reason, message = mapped
            return AgentFailure(reason, f"{message} {term.detail}".strip(), output=output)
        return AgentFailure(
            "agent_error",
            f"the agent process ended unexpectedly (exit code {term.returncode})",
            output=output,
        )
