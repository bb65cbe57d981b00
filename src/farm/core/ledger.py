"""The authoritative host ledger: a faithful re-implementation of Backtrader's ``BackBroker``.

The host fills every order itself; an honest agent gets exactly the numbers of a plain Backtrader
run with ``cerebro.broker.setcommission(commission=c)`` (stock-like, percentage commission, no
leverage), ``checksubmit=True``, no cheat-on-open/close and, optionally,
``broker.set_slippage_perc(bps / 10_000)`` with its default flags (slip_open, slip_limit and
slip_match on, slip_out off).

The timing model is Backtrader's: orders submitted while the agent handles step ``t`` are checked
for cash and matched when :meth:`Ledger.process` receives step ``t + 1``. Market orders fill at that
bar's open; limit, stop and stop-limit orders follow ``BackBroker._try_exec_*`` exactly, including
its quirks (a sell limit that gaps through is slipped against the limit, not the bar's low; a
reversal that cannot pay for its opening part closes the old position, then ends in MARGIN).

Deliberate differences: a symbol without a bar in a step keeps its orders pending (Backtrader would
try them again against the stale bar), and brackets, OCO groups, trailing stops, ``Close`` orders,
volume fillers and credit interest are not supported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from farm.core.bars import Bar, Step
from farm.core.orders import (
    ClosedTrade,
    Fill,
    OrderEvent,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
)

_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT
_STOP = OrderType.STOP
_STOP_LIMIT = OrderType.STOP_LIMIT


@dataclass(frozen=True, slots=True)
class OpenTrade:
    """A trade that is still open (Backtrader's ``Trade`` while ``isopen``)."""

    symbol: str
    size: float
    entry_ts: datetime
    entry_price: float
    pnl: float
    commission: float
    bars_held: int
    opened_by_seq: int


class _Order:
    """Mutable working state of one order inside the ledger."""

    __slots__ = (
        "buy",
        "created_price",
        "created_ts",
        "id",
        "limit_price",
        "price",
        "remaining",
        "seq",
        "symbol",
        "triggered",
        "type",
        "valid_until",
    )

    def __init__(self, req: OrderRequest) -> None:
        self.id = req.client_order_id
        self.symbol = req.symbol
        self.remaining = req.size
        self.buy = req.size > 0
        self.type = req.type
        self.created_ts = req.created_ts
        self.created_price = req.created_price
        self.price = req.price if req.price is not None else req.created_price
        self.limit_price = req.limit_price if req.limit_price is not None else self.price
        self.valid_until = req.valid_until
        self.seq = req.decision_seq
        self.triggered = False


class _Trade:
    """Mutable state of an open trade, updated exactly like ``backtrader.Trade.update``."""

    __slots__ = (
        "bars",
        "commission",
        "entry_ts",
        "exit_size",
        "exit_value",
        "opened_by",
        "peak",
        "pnl",
        "price",
        "size",
        "symbol",
    )

    def __init__(self, symbol: str, ts: datetime, seq: int) -> None:
        self.symbol = symbol
        self.entry_ts = ts
        self.opened_by = seq
        self.size = 0.0
        self.price = 0.0
        self.commission = 0.0
        self.pnl = 0.0
        self.bars = 0
        self.peak = 0.0
        self.exit_size = 0.0
        self.exit_value = 0.0


def _slip_up(slip: float, pmax: float, price: float) -> float:
    """``BackBroker._slip_up`` with slip_match on and slip_out off: never above ``pmax``."""
    if not slip:
        return price
    pslip = price * (1 + slip)
    return pslip if pslip <= pmax else pmax


def _slip_down(slip: float, pmin: float, price: float) -> float:
    """``BackBroker._slip_down`` with slip_match on and slip_out off: never below ``pmin``."""
    if not slip:
        return price
    pslip = price * (1 - slip)
    return pslip if pslip >= pmin else pmin


def _limit_fill(buy: bool, plimit: float, bar: Bar, slip: float) -> float | None:
    """``BackBroker._try_exec_limit``: the fill price of a limit order on ``bar``, if any."""
    if buy:
        if plimit >= bar.open:
            return _slip_up(slip, min(bar.high, plimit), bar.open)
        return plimit if plimit >= bar.low else None
    if plimit <= bar.open:
        # Backtrader caps the slipped price at the limit, not at max(low, limit).
        return _slip_down(slip, plimit, bar.open)
    return plimit if plimit <= bar.high else None


def _stop_fill(buy: bool, pstop: float, bar: Bar, slip: float) -> float | None:
    """``BackBroker._try_exec_stop``: gap through the stop fills at the open, else at the stop."""
    if buy:
        if bar.open >= pstop:
            return _slip_up(slip, bar.high, bar.open)
        return _slip_up(slip, bar.high, pstop) if bar.high >= pstop else None
    if bar.open <= pstop:
        return _slip_down(slip, bar.low, bar.open)
    return _slip_down(slip, bar.low, pstop) if bar.low <= pstop else None


def _stop_limit_fill(order: _Order, bar: Bar, slip: float) -> float | None:
    """``BackBroker._try_exec_stoplimit`` for an order whose stop has not triggered yet."""
    pstop, plimit = order.price, order.limit_price
    if order.buy:
        if bar.open >= pstop:
            order.triggered = True
            return _limit_fill(True, plimit, bar, slip)
        if bar.high < pstop:
            return None
        order.triggered = True
        if plimit >= pstop:
            return _slip_up(slip, bar.high, pstop)
        return plimit if bar.open > bar.close and plimit >= bar.close else None
    if bar.open <= pstop:
        order.triggered = True
        return _limit_fill(False, plimit, bar, slip)
    if bar.low > pstop:
        return None
    order.triggered = True
    if plimit <= pstop:
        return _slip_down(slip, bar.low, pstop)
    return plimit if bar.open <= bar.close and plimit <= bar.close else None


def _split(psize: float, size: float) -> tuple[float, float]:
    """``Position.update``: the (opened, closed) parts of ``size`` against a position ``psize``."""
    new = psize + size
    if not new:
        return 0.0, size
    if not psize:
        return size, 0.0
    if psize > 0:
        if size > 0:
            return size, 0.0
        return (0.0, size) if new > 0 else (new, -psize)
    if size < 0:
        return size, 0.0
    return (0.0, size) if new < 0 else (new, -psize)


def _avg_price(psize: float, pprice: float, size: float, price: float) -> float:
    """``Position.update``: the average price after adding ``size`` at ``price``."""
    new = psize + size
    if not new:
        return 0.0
    if not psize or (psize > 0) != (new > 0):
        return price
    if (psize > 0) == (size > 0):
        return (pprice * psize + size * price) / new
    return pprice


def _invalid(req: OrderRequest) -> str:
    """Why an order request cannot be accepted at all ("" when it is well-formed)."""
    if not math.isfinite(req.size) or req.size == 0:
        return "size must be a non-zero finite number"
    if not math.isfinite(req.created_price) or req.created_price < 0:
        return "created_price must be a finite non-negative number"
    prices = [req.price] if req.type is not _MARKET else []
    if req.type is _STOP_LIMIT:
        prices.append(req.limit_price)
    for p in prices:
        if p is None or not math.isfinite(p) or p <= 0:
            return f"{req.type} orders need finite positive prices"
    return ""


class Ledger:
    """Cash, positions, fills, trades and equity of one account, filled like ``BackBroker``.

    ``commission`` is a fraction of traded value (0.001 = 0.1%), ``slippage_bps`` a percentage
    slippage in basis points. Call :meth:`process` when a step's bars arrive, :meth:`mark` to
    record the value at its closes, and :meth:`submit`/:meth:`cancel` while the agent handles it.
    """

    __slots__ = (
        "_closes",
        "_commission",
        "_known",
        "_notifs",
        "_open",
        "_pending",
        "_positions",
        "_rank",
        "_slip",
        "_submitted",
        "_ts",
        "cash",
        "equity",
        "fills",
        "trades",
    )

    def __init__(self, cash: float, commission: float = 0.001, slippage_bps: float = 0.0) -> None:
        self.cash = float(cash)
        self._commission = commission
        self._slip = slippage_bps / 10_000
        self._known: set[str] = set()
        self._submitted: list[_Order] = []
        self._pending: list[_Order] = []
        self._notifs: list[OrderEvent] = []
        self._positions: dict[str, Position] = {}
        self._rank: dict[str, int] = {}
        self._closes: dict[str, float] = {}
        self._open: dict[str, _Trade] = {}
        self._ts: datetime | None = None
        self.fills: list[Fill] = []
        self.trades: list[ClosedTrade] = []
        self.equity: list[tuple[datetime, float]] = []

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open positions by symbol (read-only view)."""
        return MappingProxyType(self._positions)

    @property
    def value(self) -> float:
        """Cash plus positions at their last known closes (``BackBroker.getvalue``).

        Positions are summed in the order Backtrader keeps them (first order per symbol), so the
        value is bit-identical, not just close.
        """
        held = 0.0
        positions = self._positions
        for sym in sorted(positions, key=self._rank.__getitem__):
            pos = positions[sym]
            close = self._closes[sym]
            dvalue = pos.size * close
            if dvalue > 0:  # Backtrader "unlevers" long values; same float operations
                unrealized = pos.size * (close - pos.price)
                held += dvalue - unrealized
                held += unrealized
            else:
                held += dvalue
        return self.cash + held

    @property
    def open_trades(self) -> Mapping[str, OpenTrade]:
        """Trades still open, by symbol, with bars held so far (``Trade.barlen``)."""
        return {
            t.symbol: OpenTrade(
                t.symbol, t.size, t.entry_ts, t.price, t.pnl, t.commission, t.bars, t.opened_by
            )
            for t in self._open.values()
        }

    @property
    def open_orders(self) -> list[str]:
        """Client ids of orders that are submitted or accepted and not yet done."""
        return [o.id for o in self._submitted] + [o.id for o in self._pending]

    def submit(self, order: OrderRequest) -> None:
        """Queue an order (Backtrader ``transmit``); a client_order_id seen before is ignored."""
        if order.client_order_id in self._known:
            return
        self._known.add(order.client_order_id)
        reason = _invalid(order)
        if reason:
            self._event(
                order.client_order_id, OrderStatus.REJECTED, order.created_ts, reason=reason
            )
            return
        self._submitted.append(_Order(order))
        self._rank.setdefault(order.symbol, len(self._rank))
        self._event(order.client_order_id, OrderStatus.SUBMITTED, order.created_ts)

    def cancel(self, client_order_id: str) -> None:
        """Cancel an accepted, pending order (like ``BackBroker.cancel``).

        As in Backtrader, an order not yet accepted (submitted in the same step) or already done
        cannot be cancelled and the call does nothing.
        """
        for i, o in enumerate(self._pending):
            if o.id == client_order_id:
                del self._pending[i]
                self._event(o.id, OrderStatus.CANCELLED, self._ts or o.created_ts)
                return

    def process(self, step: Step) -> list[OrderEvent]:
        """Run ``BackBroker.next`` for ``step``: accept or reject submitted orders, then match.

        Returns every order event since the previous call in Backtrader's notification order.
        """
        self._ts = ts = step.ts
        bars = step.bars
        for trade in self._open.values():
            if trade.symbol in bars:
                trade.bars += 1
        if self._submitted:
            self._check_submitted(ts)
        if self._pending:
            keep: list[_Order] = []
            for order in self._pending:
                bar = bars.get(order.symbol)
                if bar is None:
                    keep.append(order)
                elif (
                    order.valid_until is not None
                    and order.type is not _MARKET
                    and ts > order.valid_until
                ):
                    self._event(order.id, OrderStatus.EXPIRED, ts)
                elif self._try_exec(order, bar, ts):
                    keep.append(order)
            self._pending = keep
        for sym in self._positions:
            bar = bars.get(sym)
            if bar is not None:
                self._closes[sym] = bar.close
        events, self._notifs = self._notifs, []
        return events

    def mark(self, step: Step) -> float:
        """Value the account at ``step``'s closes (last known close otherwise); append to equity."""
        bars = step.bars
        for sym in self._positions:
            bar = bars.get(sym)
            if bar is not None:
                self._closes[sym] = bar.close
        value = self.value
        self.equity.append((step.ts, value))
        return value

    def _event(
        self,
        oid: str,
        status: OrderStatus,
        ts: datetime,
        fill: Fill | None = None,
        reason: str = "",
    ) -> None:
        if fill is None:
            self._notifs.append(OrderEvent(oid, status, ts, reason=reason))
        else:
            self._notifs.append(
                OrderEvent(oid, status, ts, fill.size, fill.price, fill.commission, reason)
            )

    def _check_submitted(self, ts: datetime) -> None:
        """``BackBroker.check_submitted``: pseudo-execute at the created price, cumulatively.

        As in Backtrader, the running cash is not restored after a rejected order, so one
        rejection makes later opening orders of the same batch fail too.
        """
        comm = self._commission
        cash = self.cash
        clones: dict[str, list[float]] = {}
        for order in self._submitted:
            pos = clones.get(order.symbol)
            if pos is None:
                held = self._positions.get(order.symbol)
                pos = clones[order.symbol] = [held.size, held.price] if held else [0.0, 0.0]
            price = order.created_price
            size = order.remaining
            opened, closed = _split(pos[0], size)
            pos[1] = _avg_price(pos[0], pos[1], size, price)
            pos[0] += size
            if closed:
                cash += -closed * price
                cash -= abs(closed) * comm * price
            if opened:
                cash -= opened * price
                cash -= abs(opened) * comm * price
            if cash >= 0.0:
                self._pending.append(order)
                self._event(order.id, OrderStatus.ACCEPTED, ts)
            else:
                self._event(order.id, OrderStatus.MARGIN, ts, reason="insufficient cash")
        self._submitted = []

    def _try_exec(self, order: _Order, bar: Bar, ts: datetime) -> bool:
        """Match ``order`` against ``bar``; execute if it fills. Returns True while still alive."""
        kind = order.type
        slip = self._slip
        price: float | None
        if kind is _MARKET:
            if ts <= order.created_ts:
                return True
            if order.buy:
                price = _slip_up(slip, bar.high, bar.open)
            else:
                price = _slip_down(slip, bar.low, bar.open)
        elif kind is _LIMIT:
            price = _limit_fill(order.buy, order.price, bar, slip)
        elif kind is _STOP:
            price = _stop_fill(order.buy, order.price, bar, slip)
        elif order.triggered:
            price = _limit_fill(order.buy, order.limit_price, bar, slip)
        else:
            price = _stop_limit_fill(order, bar, slip)
        if price is None:
            return True
        return self._execute(order, price, bar, ts)

    def _execute(self, order: _Order, price: float, bar: Bar, ts: datetime) -> bool:
        """``BackBroker._execute`` for a real execution. Returns True while the order is alive."""
        sym = order.symbol
        comm = self._commission
        size = order.remaining
        held = self._positions.get(sym)
        psize, pprice = (held.size, held.price) if held else (0.0, 0.0)
        opened, closed = _split(psize, size)
        cash = self.cash
        closedcomm = openedcomm = 0.0
        if closed:
            pnl = -closed * (price - pprice)
            cash += -closed * pprice + pnl
            closedcomm = abs(closed) * comm * price
            cash -= closedcomm
            self.cash = cash
        wanted = opened
        if opened:
            cash -= opened * price
            openedcomm = abs(opened) * comm * price
            cash -= openedcomm
            if cash < 0.0:
                opened = 0.0
                openedcomm = 0.0
            else:
                self.cash = cash
        execsize = closed + opened
        if execsize:
            newsize = psize + execsize
            if newsize:
                self._positions[sym] = Position(newsize, _avg_price(psize, pprice, execsize, price))
            else:
                del self._positions[sym]
            self._closes[sym] = bar.close
            order.remaining -= execsize
            fill = Fill(order.id, sym, ts, execsize, price, closedcomm + openedcomm, order.seq)
            self.fills.append(fill)
            status = OrderStatus.PARTIAL if order.remaining else OrderStatus.COMPLETED
            self._event(order.id, status, ts, fill)
            self._book_trade(order, ts, price, closed, closedcomm, opened, openedcomm)
        if wanted and not opened:
            self._event(order.id, OrderStatus.MARGIN, ts, reason="insufficient cash")
            return False
        return bool(order.remaining)

    def _book_trade(
        self,
        order: _Order,
        ts: datetime,
        price: float,
        closed: float,
        closedcomm: float,
        opened: float,
        openedcomm: float,
    ) -> None:
        """``Strategy._addnotification``: close bit then open bit, as ``Trade.update`` does."""
        sym = order.symbol
        if closed:
            trade = self._open[sym]
            trade.commission += closedcomm
            trade.size += closed
            trade.pnl += -closed * (price - trade.price)
            trade.exit_size += closed
            trade.exit_value += closed * price
            if not trade.size:
                del self._open[sym]
                self.trades.append(
                    ClosedTrade(
                        symbol=sym,
                        size=trade.peak,
                        entry_ts=trade.entry_ts,
                        exit_ts=ts,
                        entry_price=trade.price,
                        exit_price=trade.exit_value / trade.exit_size,
                        pnl=trade.pnl,
                        pnl_net=trade.pnl - trade.commission,
                        commission=trade.commission,
                        bars_held=trade.bars,
                        opened_by_seq=trade.opened_by,
                        closed_by_seq=order.seq,
                    )
                )
        if opened:
            current = self._open.get(sym)
            if current is None:
                current = self._open[sym] = _Trade(sym, ts, order.seq)
            current.commission += openedcomm
            old = current.size
            current.size += opened
            current.price = (old * current.price + opened * price) / current.size
            if abs(current.size) > abs(current.peak):
                current.peak = current.size
