"""The agent-side runtime: runs one Backtrader strategy inside the sandbox (DESIGN §4, §5).

``python -m farm.sandbox.runtime /agent/agent.py`` reads host messages on fd 3 and answers on
fd 4 (see :mod:`farm.sandbox.protocol`). Each data feed holds only the bars the host has sent,
one timestep at a time, so nothing in the process can reveal a future bar. The strategy's broker
is a mirror: the host decides every acceptance, fill, cancellation and expiry, and overwrites
cash and positions each step, so tampering with it changes nothing the host reports.

Imports only the standard library, backtrader, msgspec and :mod:`farm.sandbox.protocol`.
"""

from __future__ import annotations

import importlib.util
import math
import numbers
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import backtrader as bt
from backtrader.linebuffer import LineBuffer
from backtrader.utils.dateintern import date2num

from farm.sandbox.protocol import (
    MAX_ACCESSES,
    MAX_HOOK_ERRORS,
    MAX_HOST_FRAME,
    MAX_INDICATORS,
    MAX_MESSAGE,
    MAX_REASONING,
    MAX_TRACEBACK,
    PROTOCOL_VERSION,
    Access,
    Channel,
    Decision,
    Done,
    End,
    Error,
    Failed,
    HostMessage,
    ProtocolError,
    Ready,
    Start,
    StepMsg,
    WireBar,
    WireEvent,
    WireOrder,
    WirePosition,
)

HOST_READ_FD = 3
HOST_WRITE_FD = 4
AGENT_MODULE = "agent"

_ORDER_TYPES = {
    bt.Order.Market: "market",
    bt.Order.Limit: "limit",
    bt.Order.Stop: "stop",
    bt.Order.StopLimit: "stop_limit",
}
_DAY0 = datetime(1, 1, 1, tzinfo=UTC)
_TERMINAL = frozenset({"cancelled", "expired", "margin", "rejected"})


class InvalidAgent(Exception):
    """The agent file cannot be used: it does not load or has not exactly one strategy."""


class UnsupportedOrderError(Exception):
    """The strategy used an order feature the platform's broker does not support."""


def load_strategy(path: Path) -> type[Any]:
    """Import the agent file and return its one ``bt.Strategy`` subclass."""
    spec = importlib.util.spec_from_file_location(AGENT_MODULE, path)
    if spec is None or spec.loader is None:
        raise InvalidAgent(f"cannot load {path.name} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[AGENT_MODULE] = module  # Backtrader's metaclasses look strategies up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise InvalidAgent(f"the agent file failed to import: {_describe(exc)}") from exc
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, bt.Strategy) and v.__module__ == AGENT_MODULE
    ]
    leaves = [c for c in found if not any(o is not c and issubclass(o, c) for o in found)]
    if len(leaves) != 1:
        names = ", ".join(sorted(c.__name__ for c in leaves)) or "none"
        raise InvalidAgent(
            f"the agent file must define exactly one backtrader.Strategy subclass (found: {names})"
        )
    return leaves[0]


class _Clock:
    """The current timestep, pulled from the host when a feed needs the next bar.

    Before reading step ``n + 1`` it sends the decision for step ``n``: the host never sends a
    step before the agent has committed its orders for the previous one.
    """

    def __init__(self, channel: Channel, record: bool) -> None:
        self.channel = channel
        self.record = record
        self.seq = -1
        self.dtnum = 0.0
        self.step: StepMsg | None = None
        self.bars: dict[str, WireBar] = {}
        self.ended = False
        self.broker: MirrorBroker | None = None
        self.cerebro: Any = None
        self.recorder: _Recorder | None = None

    def advance(self) -> bool:
        """Answer the current step, then read the next one; False once the host sent End."""
        if self.ended:
            return False
        if self.step is None:
            self._first()
        else:
            self.channel.send(self._decision())
        msg = self.channel.recv()
        if isinstance(msg, End):
            self.ended = True
            return False
        if not isinstance(msg, StepMsg) or msg.seq <= self.seq:
            raise ProtocolError(f"expected a step after {self.seq}, got {type(msg).__name__}")
        self.step = msg
        self.seq = msg.seq
        self.dtnum = date2num(msg.ts)
        self.bars = msg.bars
        return True

    def _first(self) -> None:
        if self.record:
            feeds = {d._farm_symbol: d for d in self.cerebro.datas if isinstance(d, StepFeed)}
            self.recorder = _Recorder(self.cerebro.runningstrats[0], feeds)

    def _decision(self) -> Decision:
        assert self.broker is not None
        orders = self.broker.drain_orders()
        cancels = self.broker.drain_cancels()
        if self.recorder is None:
            return Decision(seq=self.seq, orders=orders, cancels=cancels)
        return self.recorder.decision(self.seq, orders, cancels)


class StepFeed(bt.feed.DataBase):  # type: ignore[misc]
    """A data feed whose only source is the host's Step messages: one bar per step at most.

    :meth:`next` replaces Backtrader's generic load path (bar stacks, filters, date bounds): it
    appends this symbol's bar of the current step, if the step has one, and nothing else.
    """

    _farm_symbol = ""
    _farm_clock: _Clock | None = None
    _farm_seen = -1
    _farm_bar: WireBar | None = None
    _farm_lines: tuple[Any, ...] = ()
    _farm_warming = False  # warm-up bars came; the first live one is notified as LIVE

    def start(self) -> None:
        """Remember the line buffers the bars are appended to."""
        super().start()
        lines = self.lines
        self._farm_lines = (
            lines.datetime,
            lines.open,
            lines.high,
            lines.low,
            lines.close,
            lines.volume,
            lines.openinterest,
        )

    def next(self, datamaster: Any = None, ticks: bool = True) -> bool:
        """Deliver this symbol's bar of the next step, if it has one.

        Cerebro retries a feed without a bar against a master feed within the same round; every
        bar of the step was already delivered, so the retry must not advance the clock.
        """
        clock = self._farm_clock
        if datamaster is not None or clock is None:
            return False
        if self._farm_seen == clock.seq and not clock.advance():
            return False
        self._farm_seen = clock.seq
        step = clock.step
        if step is not None and not step.live:
            self._farm_warming = True
        elif self._farm_warming:
            self._farm_warming = False
            self.put_notification(self.LIVE)  # the strategy's notify_data(data, LIVE)
        bar = clock.bars.get(self._farm_symbol)
        if bar is None:
            return False
        self._farm_bar = bar
        dt, open_, high, low, close, volume, openinterest = self._farm_lines
        dt.forward(clock.dtnum)
        open_.forward(bar.open)
        high.forward(bar.high)
        low.forward(bar.low)
        close.forward(bar.close)
        volume.forward(bar.volume)
        openinterest.forward()
        if ticks:
            self._tick_fill()
        return True

    def _tick_fill(self, force: bool = False) -> None:
        """Backtrader's ``tick_*`` attributes, straight from the bar."""
        bar = self._farm_bar
        if bar is not None and (force or getattr(self, "tick_close", None) is None):
            self.tick_open = bar.open
            self.tick_high = bar.high
            self.tick_low = bar.low
            self.tick_close = self.tick_last = bar.close
            self.tick_volume = bar.volume
            self.tick_openinterest = math.nan


class _FixedFill:
    """A Backtrader volume filler that returns the size the host filled."""

    def __init__(self) -> None:
        self.size = 0.0

    def __call__(self, order: Any, price: float, ago: int) -> float:
        return self.size


class MirrorBroker(bt.brokers.BackBroker):  # type: ignore[misc]
    """``BackBroker`` whose decisions all come from the host.

    New orders are queued for the step's Decision. At each step the host's order events are
    applied through Backtrader's own bookkeeping (``submit_accept``, ``_execute``, ``notify``),
    so ``notify_order``, ``notify_trade`` and ``self.position`` behave as in plain Backtrader;
    then cash, positions and value are overwritten with the host's.
    """

    def __init__(self) -> None:
        super().__init__()
        self._farm_clock: _Clock | None = None
        self._farm_comm: Any = None
        self._farm_feeds: dict[str, StepFeed] = {}
        self._farm_live: dict[str, Any] = {}
        self._farm_cancels: list[str] = []
        self._farm_fill = _FixedFill()
        self._farm_applied = -1

    def configure(self, clock: _Clock, start: Start, feeds: dict[str, StepFeed]) -> None:
        """Set the host's cash and commission; later changes by the strategy have no effect."""
        self._farm_clock = clock
        self._farm_feeds = feeds
        self.set_cash(start.cash)
        self.setcommission(commission=start.commission)
        self._farm_comm = self.comminfo[None]
        self.p.filler = self._farm_fill

    def getcommissioninfo(self, data: Any) -> Any:
        """Always the host's commission scheme."""
        return self._farm_comm

    def set_coc(self, coc: bool) -> None:
        """Cheat-on-close is not supported."""
        raise UnsupportedOrderError("cheat-on-close (set_coc) is not supported")

    def set_coo(self, coo: bool) -> None:
        """Cheat-on-open is not supported."""
        raise UnsupportedOrderError("cheat-on-open (set_coo) is not supported")

    def submit(self, order: Any, check: bool = True) -> Any:
        """Reject unsupported features before Backtrader queues the order."""
        self._check_supported(order)
        return super().submit(order, check)

    def transmit(self, order: Any, check: bool = True) -> Any:
        """Queue the order for the host (Backtrader's ``checksubmit`` path, always)."""
        order.submit()
        self.submitted.append(order)
        self.orders.append(order)
        self.notify(order)
        return order

    def cancel(self, order: Any, bracket: bool = False) -> bool:
        """Cancel locally as Backtrader does, and ask the host to cancel too."""
        done = bool(super().cancel(order, bracket))
        if done:
            self._farm_cancels.append(str(order.ref))
        return done

    def next(self) -> None:
        """Apply the host's events of the current step, then its account."""
        clock = self._farm_clock
        assert clock is not None
        step = clock.step
        if step is None or step.seq == self._farm_applied:
            return
        self._farm_applied = step.seq
        if step.events:
            self.cash = math.inf  # the host already checked cash; never nullify its fills
            for event in step.events:
                self._apply(event)
        self._mirror(step.cash, step.value, step.positions)

    def drain_orders(self) -> list[WireOrder]:
        """The orders created since the last call, in creation order."""
        out: list[WireOrder] = []
        submitted = self.submitted
        while submitted:
            order = submitted.popleft()
            oid = str(order.ref)
            self._farm_live[oid] = order
            out.append(self._wire(oid, order))
        return out

    def drain_cancels(self) -> list[str]:
        """Ids of the orders cancelled since the last call."""
        out, self._farm_cancels = self._farm_cancels, []
        return out

    def _check_supported(self, order: Any) -> None:
        kind = order.exectype
        if kind not in _ORDER_TYPES:
            name = bt.Order.ExecTypes[kind] if 0 <= kind < len(bt.Order.ExecTypes) else kind
            raise UnsupportedOrderError(
                f"{name} orders are not supported; use Market, Limit, Stop or StopLimit"
            )
        if order.parent is not None or not order.transmit:
            raise UnsupportedOrderError("bracket orders (parent/transmit) are not supported")
        if self._ocos.get(order.ref, order.ref) != order.ref:
            raise UnsupportedOrderError("OCO orders are not supported")
        if getattr(order.data, "_farm_symbol", None) not in self._farm_feeds:
            raise UnsupportedOrderError("orders can only be placed on the backtest's data feeds")
        if not _finite(order.created.size):
            raise UnsupportedOrderError(
                f"order size must be a finite non-zero number: {order.created.size!r}"
            )
        prices = [order.created.price] if kind != bt.Order.Market else []
        if kind == bt.Order.StopLimit:
            prices.append(order.created.pricelimit)
        for price in prices:
            if (_finite(price) or 0.0) <= 0.0:
                raise UnsupportedOrderError(f"order price must be a positive number: {price!r}")

    def _wire(self, oid: str, order: Any) -> WireOrder:
        kind = order.exectype
        valid = order.valid
        return WireOrder(
            id=oid,
            symbol=order.data._farm_symbol,
            size=float(order.created.size),
            type=_ORDER_TYPES[kind],  # type: ignore[arg-type]
            price=None if kind == bt.Order.Market else float(order.created.price),
            limit_price=float(order.created.pricelimit) if kind == bt.Order.StopLimit else None,
            valid_until=_num2utc(valid) if valid else None,
        )

    def _apply(self, event: WireEvent) -> None:
        order = self._farm_live.get(event.id)
        if order is None:
            return
        status = event.status
        if status == "accepted":
            self.submit_accept(order)
        elif status in ("completed", "partial"):
            self._farm_fill.size = abs(event.size)
            self._execute(order, ago=0, price=event.price)
            if not order.alive():
                self._unpend(order)
                del self._farm_live[event.id]
                self._bracketize(order)
        elif status in _TERMINAL:
            del self._farm_live[event.id]
            if order.status == bt.Order.Cancelled:  # cancelled locally already
                return
            self._unpend(order)
            if status == "cancelled":
                order.cancel()
            elif status == "expired":
                order.status = bt.Order.Expired
                order.executed.dt = order.data.datetime[0]
            elif status == "margin":
                order.margin()
            else:
                order.reject()
            self.notify(order)
            self._ococheck(order)
            self._bracketize(order, cancel=True)

    def _unpend(self, order: Any) -> None:
        try:
            self.pending.remove(order)
        except ValueError:
            pass

    def _mirror(self, cash: float, value: float, positions: dict[str, WirePosition]) -> None:
        self.cash = cash
        self._value = self._valuelever = value
        self._valuemkt = self._valuemktlever = value - cash
        feeds = self._farm_feeds
        mine = self.positions
        for data, pos in list(mine.items()):
            host = positions.get(getattr(data, "_farm_symbol", ""))
            if host is None:
                if pos.size or pos.price:
                    pos.size, pos.price = 0.0, 0.0
            elif pos.size != host.size or pos.price != host.price:
                pos.size, pos.price = host.size, host.price
        for symbol, host in positions.items():
            data = feeds.get(symbol)
            if data is not None and data not in mine:
                pos = mine[data]
                pos.size, pos.price = host.size, host.price


class _TrackedLine(LineBuffer):  # type: ignore[misc]
    """A feed line that reports reads while the strategy's ``next()`` runs."""

    _farm_recorder: _Recorder
    _farm_symbol: str
    _farm_field: str

    def __getitem__(self, ago: int) -> float:
        recorder = self._farm_recorder
        if recorder.on:
            recorder.read(self._farm_symbol, self._farm_field, ago)
        return self.array[self.idx + ago]  # type: ignore[no-any-return]


class _Recorder:
    """FMEL capture for one strategy, installed only when decisions are recorded.

    Records indexed reads (``line[ago]``) of feed lines while ``next()`` runs, including those
    Backtrader makes on its behalf (creating an order reads the current bar); indicators'
    own reads happen before ``next()`` and are not recorded. After ``next()`` it reads the
    current value of every indicator held in a public attribute and calls the optional
    ``get_decision_reasoning``/``get_decision_confidence`` hooks; a failing hook is recorded as
    a hook error and does not stop the run.
    """

    def __init__(self, strategy: Any, feeds: dict[str, StepFeed]) -> None:
        self.on = False
        self._strategy = strategy
        self._reset()
        for symbol, feed in feeds.items():
            for alias in feed.getlinealiases():
                line = getattr(feed.lines, alias)
                if type(line) is LineBuffer:
                    line.__class__ = _TrackedLine
                    line._farm_recorder = self
                    line._farm_symbol = symbol
                    line._farm_field = alias
        self._indicators = _find_indicators(strategy)
        inner: Callable[[], None] = strategy.next

        def next_() -> None:
            self.on = True
            try:
                inner()
            finally:
                self.on = False
            self._capture()

        strategy.next = next_

    def read(self, symbol: str, field: str, ago: int) -> None:
        """Record one read (bounded per step)."""
        if len(self._accesses) < MAX_ACCESSES:
            self._accesses.append(Access(symbol, field, ago))  # type: ignore[arg-type]
        else:
            self._dropped += 1

    def decision(self, seq: int, orders: list[WireOrder], cancels: list[str]) -> Decision:
        """The step's Decision with everything captured; resets for the next step."""
        msg = Decision(
            seq=seq,
            orders=orders,
            cancels=cancels,
            next_called=self._called,
            reasoning=self._reasoning,
            confidence=self._confidence,
            indicators=self._values,
            accesses=self._accesses,
            accesses_dropped=self._dropped,
            hook_errors=self._errors,
        )
        self._reset()
        return msg

    def _reset(self) -> None:
        self._called = False
        self._reasoning: str | None = None
        self._confidence: float | None = None
        self._values: dict[str, float | list[float | None] | None] = {}
        self._accesses: list[Access] = []
        self._dropped = 0
        self._errors: list[str] = []

    def _capture(self) -> None:
        self._called = True
        reasoning = self._hook("get_decision_reasoning")
        if isinstance(reasoning, str):
            self._reasoning = reasoning[:MAX_REASONING]
        elif reasoning is not None:
            self._error(f"get_decision_reasoning must return a str, not {type(reasoning).__name__}")
        confidence = self._hook("get_decision_confidence")
        number = _finite(confidence)
        if number is not None and 0.0 <= number <= 1.0:
            self._confidence = number
        elif confidence is not None:
            self._error(f"get_decision_confidence must return a number in [0, 1]: {confidence!r}")
        values = self._values
        for name, lines in self._indicators:
            if len(lines) == 1:
                values[name] = _current(lines[0])
            else:
                values[name] = [_current(line) for line in lines]

    def _hook(self, name: str) -> Any:
        hook = getattr(self._strategy, name, None)
        if hook is None:
            return None
        try:
            return hook()
        except Exception as exc:
            self._error(f"{name} raised {_describe(exc)}")
            return None

    def _error(self, text: str) -> None:
        if len(self._errors) < MAX_HOOK_ERRORS:
            self._errors.append(text[:MAX_MESSAGE])


def _find_indicators(strategy: Any) -> list[tuple[str, list[Any]]]:
    """Indicators held by the strategy's attributes, directly or in a list, tuple or dict."""
    found: list[tuple[str, list[Any]]] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, bt.Indicator) and len(found) < MAX_INDICATORS:
            lines = value.lines
            found.append((name[:128], [lines[i] for i in range(lines.size())]))

    for attr, value in vars(strategy).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                label = key._farm_symbol if isinstance(key, StepFeed) else str(key)
                add(f"{attr}[{label}]", item)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                add(f"{attr}[{i}]", item)
        else:
            add(attr, value)
    return found


def _finite(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool), else None."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number):
            return number
    return None


def _current(line: Any) -> float | None:
    try:
        value = float(line.array[line.idx])
    except (IndexError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _num2utc(num: float) -> datetime:
    """A Backtrader date number as an aware UTC datetime, rounded to the millisecond."""
    return _DAY0 + timedelta(milliseconds=round((num - 1.0) * 86_400_000))


def _describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _agent_traceback(exc: BaseException, agent_file: str) -> str:
    """The traceback of ``exc`` restricted to frames in the agent file."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == agent_file]
    head = "Traceback (most recent call last, agent frames only):\n" if frames else ""
    text = head + "".join(traceback.format_list(frames)) + _describe(exc) + "\n"
    return text[-MAX_TRACEBACK:]


def _failed(exc: BaseException, agent_file: str) -> Failed:
    message = _describe(exc).partition(": ")[2]
    return Failed(
        type=type(exc).__name__[:200],
        message=message[:MAX_MESSAGE],
        traceback=_agent_traceback(exc, agent_file),
    )


def run(channel: Channel, start: Start, strategy: type[Any]) -> None:
    """Run ``strategy`` on feeds that the host drives step by step until it sends End."""
    clock = _Clock(channel, start.record_decisions)
    cerebro = bt.Cerebro(preload=False, runonce=False, stdstats=False)
    feeds: dict[str, StepFeed] = {}
    for symbol in start.symbols:
        feed = StepFeed(dataname=symbol)
        feed._farm_symbol = symbol
        feed._farm_clock = clock
        feeds[symbol] = feed
        cerebro.adddata(feed, name=symbol)
    broker = MirrorBroker()
    broker.configure(clock, start, feeds)
    cerebro.setbroker(broker)
    declared = strategy.params._getkeys()
    unknown = sorted(set(start.params) - set(declared))
    if unknown:
        raise InvalidAgent(
            f"unknown strategy params: {', '.join(unknown)}; "
            f"the strategy declares: {', '.join(sorted(declared)) or 'none'}"
        )
    cerebro.addstrategy(strategy, **start.params)
    clock.broker = broker
    clock.cerebro = cerebro
    cerebro.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point inside the sandbox; returns the process exit code."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m farm.sandbox.runtime AGENT_FILE", file=sys.stderr)
        return 2
    agent_file = args[0]
    channel = Channel(HOST_READ_FD, HOST_WRITE_FD, HostMessage, MAX_HOST_FRAME)
    first = channel.recv()
    if not isinstance(first, Start) or first.version != PROTOCOL_VERSION:
        channel.send(Error(kind="protocol", message=f"expected Start v{PROTOCOL_VERSION}"))
        return 2
    try:
        strategy = load_strategy(Path(agent_file))
    except InvalidAgent as exc:
        cause = exc.__cause__ or exc
        channel.send(
            Error(
                kind="invalid_agent",
                message=str(exc)[:MAX_MESSAGE],
                traceback=_agent_traceback(cause, agent_file),
            )
        )
        return 2
    channel.send(Ready(version=PROTOCOL_VERSION, strategy=strategy.__name__[:200]))
    try:
        run(channel, first, strategy)
    except ProtocolError:
        raise
    except BaseException as exc:
        channel.send(_failed(exc, agent_file))
        return 1
    channel.send(Done())
    return 0


if __name__ == "__main__":
    sys.exit(main())
