"""The simulated broker: Backtrader's ``BackBroker`` matching, re-implemented on the host.

The first implementation of :class:`~farm.brokers.base.Broker`, used by backtests and paper
sessions alike. It matches orders and books each execution on the session's
:class:`~farm.core.account.Account`; an honest agent gets exactly the numbers of a plain
Backtrader run with ``cerebro.broker.setcommission(commission=c)`` (stock-like, percentage
commission, no leverage), ``checksubmit=True``, no cheat-on-open/close and, optionally,
``broker.set_slippage_perc(bps / 10_000)`` with its default flags (slip_open, slip_limit and
slip_match on, slip_out off).

The timing model is Backtrader's: orders submitted while the agent handles step ``t`` are checked
for cash and matched when :meth:`SimulatedBroker.process` receives step ``t + 1``. Market orders
fill at that bar's open; limit, stop and stop-limit orders follow ``BackBroker._try_exec_*``
exactly, including its quirks (a sell limit that gaps through is slipped against the limit, not
the bar's low; a reversal that cannot pay for its opening part closes the old position, then ends
in MARGIN).

Deliberate differences: a symbol without a bar in a step keeps its orders pending (Backtrader would
try them again against the stale bar), and brackets, OCO groups, trailing stops, ``Close`` orders,
volume fillers and credit interest are not supported.

Risk rules Backtrader does not have (DESIGN section 4): an order with a size above
``MAX_ORDER_SIZE`` shares or a price above ``MAX_PRICE`` is REJECTED. When set (the platform
sets both, see ``MARGIN_LEVERAGE`` and ``OPEN_ORDER_LIMIT``), an execution whose opening part
would take gross exposure (the sum of ``|size * price|`` over symbols, this symbol at its
execution price) above ``max_leverage`` times equity ends in MARGIN, as an unaffordable one
does, and an order past ``max_open_orders`` orders not yet done is REJECTED. Without them the
broker is plain ``BackBroker``.

Resting orders are indexed per symbol by the price that triggers them and by expiry, so a step
only touches the orders its bars can fill or expire; those run in submission order, as
Backtrader's pending queue runs them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from datetime import datetime

from farm.brokers.base import Correction
from farm.core.account import Account, avg_price, split
from farm.core.bars import Bar, Step
from farm.core.orders import Fill, OrderEvent, OrderRequest, OrderStatus, OrderType

_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT
_STOP = OrderType.STOP
_STOP_LIMIT = OrderType.STOP_LIMIT

MAX_ORDER_SIZE = 1e12
"""Largest order size (shares) the broker accepts; with ``MAX_PRICE`` no notional overflows."""
MAX_PRICE = 1e12
"""Largest order price the broker accepts."""
MARGIN_LEVERAGE = 2.0
"""The platform's default cap on gross exposure, a multiple of equity (Reg T's initial margin)."""
OPEN_ORDER_LIMIT = 1000
"""The platform's default cap on orders submitted or accepted and not yet done, per account."""
FILL_LIMIT = 100_000
"""The platform's default cap on fills per session (the session loop ends a session past it)."""
_COMPACT_MIN = 1024


class _Order:
    """Mutable working state of one order inside the ledger."""

    __slots__ = (
        "buy",
        "created_price",
        "created_ts",
        "done",
        "heaped",
        "id",
        "limit_price",
        "n",
        "price",
        "remaining",
        "seq",
        "symbol",
        "triggered",
        "type",
        "valid_until",
    )

    def __init__(self, req: OrderRequest, n: int) -> None:
        self.n = n  # submission number: resting orders run in this order
        self.done = False
        self.heaped = 0  # entries of this order in its book's heaps
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


_Entry = tuple[float, int, _Order]


class _Book:
    """The resting orders of one symbol, indexed by what makes them fill or expire.

    ``rising`` (a min-heap on the level) holds orders a bar can fill once its high (or open)
    reaches their level: buy stops, untriggered buy stop-limits, sell limits. ``falling`` (a
    max-heap, levels negated) holds those filled once the low (or open) reaches theirs: sell
    stops, untriggered sell stop-limits, buy limits; a triggered stop-limit rests at its limit.
    ``expiry`` is a min-heap on ``valid_until``; ``market`` holds market orders, every bar's
    candidates. Entries of orders that are done are dropped when met (or compacted).
    """

    __slots__ = ("expiry", "falling", "market", "rising")

    def __init__(self) -> None:
        self.rising: list[_Entry] = []
        self.falling: list[_Entry] = []
        self.expiry: list[tuple[datetime, int, _Order]] = []
        self.market: list[_Order] = []

    def rest(self, order: _Order) -> None:
        """Index ``order`` by the price that can fill or trigger it."""
        kind = order.type
        if kind is _MARKET:
            self.market.append(order)
            return
        if kind is _LIMIT or order.triggered:
            level = order.price if kind is _LIMIT else order.limit_price
            rising = not order.buy
        else:
            level, rising = order.price, order.buy
        order.heaped += 1
        if rising:
            heapq.heappush(self.rising, (level, order.n, order))
        else:
            heapq.heappush(self.falling, (-level, order.n, order))

    def watch_expiry(self, order: _Order) -> None:
        """Index a priced order with a ``valid_until`` by it."""
        if order.valid_until is not None and order.type is not _MARKET:
            order.heaped += 1
            heapq.heappush(self.expiry, (order.valid_until, order.n, order))

    def due(self, bar: Bar, ts: datetime, found: dict[int, tuple[_Order, bool]]) -> int:
        """Move the orders ``bar`` can expire (flagged True) or fill out of the book into
        ``found`` (by submission number). Returns how many stale entries it dropped."""
        stale = 0
        expiry = self.expiry
        while expiry and expiry[0][0] < ts:
            order = heapq.heappop(expiry)[2]
            order.heaped -= 1
            if order.done:
                stale += 1
            else:
                found[order.n] = (order, True)
        for order in self.market:
            if not order.done:
                found.setdefault(order.n, (order, False))
        self.market = []
        high = max(bar.open, bar.high)
        rising = self.rising
        while rising and rising[0][0] <= high:
            stale += _take(heapq.heappop(rising)[2], found)
        low = min(bar.open, bar.low)
        falling = self.falling
        while falling and -falling[0][0] >= low:
            stale += _take(heapq.heappop(falling)[2], found)
        return stale


def _take(order: _Order, found: dict[int, tuple[_Order, bool]]) -> int:
    """Record a popped heap entry's order as a fill candidate; 1 if the entry was stale."""
    order.heaped -= 1
    if order.done:
        return 1
    found.setdefault(order.n, (order, False))
    return 0


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


def _invalid(req: OrderRequest) -> str:
    """Why an order request cannot be accepted at all ("" when it is well-formed)."""
    if not math.isfinite(req.size) or req.size == 0:
        return "size must be a non-zero finite number"
    if abs(req.size) > MAX_ORDER_SIZE:
        return f"size must be at most {MAX_ORDER_SIZE:g} shares"
    if not 0 <= req.created_price <= MAX_PRICE:  # NaN fails too
        return f"created_price must be a number from 0 to {MAX_PRICE:g}"
    prices = [req.price] if req.type is not _MARKET else []
    if req.type is _STOP_LIMIT:
        prices.append(req.limit_price)
    for p in prices:
        if p is None or not 0 < p <= MAX_PRICE:
            return f"{req.type} orders need prices above 0 and at most {MAX_PRICE:g}"
    return ""


class SimulatedBroker:
    """The simulated matcher trading one :class:`~farm.core.account.Account`.

    ``commission`` is a fraction of traded value (0.001 = 0.1%), ``slippage_bps`` a percentage
    slippage in basis points, ``max_leverage`` the gross exposure allowed as a multiple of
    equity and ``max_open_orders`` how many orders may be submitted or accepted and not yet done
    (None: no such rule). Call :meth:`process` when a step's bars arrive and
    :meth:`submit`/:meth:`cancel` while the agent handles it; mark the account at the closes.
    """

    __slots__ = (
        "_books",
        "_commission",
        "_known",
        "_leverage",
        "_max_open",
        "_notifs",
        "_pending",
        "_slip",
        "_stale",
        "_submitted",
        "_ts",
        "account",
    )

    def __init__(
        self,
        account: Account,
        commission: float = 0.001,
        slippage_bps: float = 0.0,
        *,
        max_leverage: float | None = None,
        max_open_orders: int | None = None,
    ) -> None:
        self.account = account
        self._commission = commission
        self._slip = slippage_bps / 10_000
        self._leverage = max_leverage
        self._max_open = max_open_orders
        self._known: set[str] = set()
        self._submitted: list[_Order] = []
        self._pending: dict[str, _Order] = {}  # accepted, not done; in submission order
        self._books: dict[str, _Book] = {}
        self._stale = 0  # heap entries of orders that are done
        self._notifs: list[OrderEvent] = []
        self._ts: datetime | None = None

    @property
    def open_orders(self) -> list[str]:
        """Client ids of orders that are submitted or accepted and not yet done."""
        return [o.id for o in self._submitted] + list(self._pending)

    @property
    def triggered(self) -> list[str]:
        """Client ids of the pending stop-limit orders whose stop has triggered (they rest at
        their limit)."""
        return [o.id for o in self._pending.values() if o.triggered]

    def restore(self, orders: Iterable[tuple[OrderRequest, float, bool, bool]]) -> None:
        """Put back persisted open orders, in submission order, without events: each as
        ``(request, remaining size, accepted, triggered)``. An order not accepted yet is
        checked at the next :meth:`process`, as if submitted in the previous step."""
        for req, remaining, accepted, triggered in orders:
            self._known.add(req.client_order_id)
            order = _Order(req, len(self._known))
            order.remaining = remaining
            order.triggered = triggered
            self.account.track(req.symbol)
            if accepted:
                self._pending[order.id] = order
                self._index(order)
            else:
                self._submitted.append(order)

    def submit(self, order: OrderRequest) -> None:
        """Queue an order (Backtrader ``transmit``); a client_order_id seen before is ignored."""
        if order.client_order_id in self._known:
            return
        self._known.add(order.client_order_id)
        reason = _invalid(order)
        limit = self._max_open
        if not reason and limit is not None and len(self._submitted) + len(self._pending) >= limit:
            reason = f"open order limit reached ({limit} orders not yet done)"
        if reason:
            self._event(
                order.client_order_id, OrderStatus.REJECTED, order.created_ts, reason=reason
            )
            return
        self._submitted.append(_Order(order, len(self._known)))
        self.account.track(order.symbol)
        self._event(order.client_order_id, OrderStatus.SUBMITTED, order.created_ts)

    def cancel(self, client_order_id: str) -> None:
        """Cancel an accepted, pending order (like ``BackBroker.cancel``).

        As in Backtrader, an order not yet accepted (submitted in the same step) or already done
        cannot be cancelled and the call does nothing.
        """
        order = self._pending.get(client_order_id)
        if order is not None:
            self._retire(order)
            self._event(order.id, OrderStatus.CANCELLED, self._ts or order.created_ts)

    def cancel_all(self, ts: datetime) -> list[OrderEvent]:
        """Cancel every order not yet done, those submitted in the last step too (a session
        stopping); returns their CANCELLED events."""
        for order in self._submitted:
            self._event(order.id, OrderStatus.CANCELLED, ts)
        self._submitted = []
        for order in list(self._pending.values()):
            self._retire(order)
            self._event(order.id, OrderStatus.CANCELLED, ts)
        events, self._notifs = self._notifs, []
        return events

    def status(self) -> None:
        """Nothing to show beyond the account (a real broker reports its reconciliation)."""
        return None

    def corrections(self) -> list[Correction]:
        """None: the simulated broker is the account's truth."""
        return []

    def close(self) -> None:
        """Nothing to release."""

    def process(self, step: Step) -> list[OrderEvent]:
        """Run ``BackBroker.next`` for ``step``: accept or reject submitted orders, then match.

        Returns every order event since the previous call in Backtrader's notification order.
        """
        self._ts = ts = step.ts
        self.account.begin_step(step)
        if self._submitted:
            self._check_submitted(ts)
        if self._pending:
            self._match(step)
        self.account.update_closes(step.bars)
        events, self._notifs = self._notifs, []
        return events

    def _match(self, step: Step) -> None:
        """Expire or try the orders this step's bars can expire or fill, in submission order;
        every other resting order is left untouched (as trying it would change nothing)."""
        ts, bars, books = step.ts, step.bars, self._books
        found: dict[int, tuple[_Order, bool]] = {}
        pairs: Iterable[tuple[Bar | None, _Book | None]]
        if len(bars) <= len(books):
            pairs = ((bar, books.get(sym)) for sym, bar in bars.items())
        else:
            pairs = ((bars.get(sym), book) for sym, book in books.items())
        for bar, book in pairs:
            if bar is not None and book is not None:
                self._stale -= book.due(bar, ts, found)
        for n in sorted(found):
            order, expired = found[n]
            if expired:
                self._retire(order)
                self._event(order.id, OrderStatus.EXPIRED, ts)
            elif self._try_exec(order, bars[order.symbol], ts):
                books[order.symbol].rest(order)
            else:
                self._retire(order)
        if self._stale > max(_COMPACT_MIN, len(self._pending)):
            self._compact()

    def _accept(self, order: _Order, ts: datetime) -> None:
        """Make a submitted order pending (Backtrader's ACCEPTED) and index it."""
        self._pending[order.id] = order
        self._index(order)
        self._event(order.id, OrderStatus.ACCEPTED, ts)

    def _index(self, order: _Order) -> None:
        """Put a pending order in its symbol's book."""
        book = self._books.get(order.symbol)
        if book is None:
            book = self._books[order.symbol] = _Book()
        book.rest(order)
        book.watch_expiry(order)

    def _retire(self, order: _Order) -> None:
        """An order is done (filled, cancelled, expired, margin): it leaves the pending set."""
        del self._pending[order.id]
        order.done = True
        self._stale += order.heaped

    def _compact(self) -> None:
        """Rebuild the books from the pending orders, dropping every stale entry."""
        self._books = {}
        for order in self._pending.values():
            order.heaped = 0
            self._index(order)
        self._stale = 0

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
        account = self.account
        cash = account.cash
        clones: dict[str, list[float]] = {}
        for order in self._submitted:
            pos = clones.get(order.symbol)
            if pos is None:
                held = account.positions.get(order.symbol)
                pos = clones[order.symbol] = [held.size, held.price] if held else [0.0, 0.0]
            price = order.created_price
            size = order.remaining
            opened, closed = split(pos[0], size)
            pos[1] = avg_price(pos[0], pos[1], size, price)
            pos[0] += size
            if closed:
                cash += -closed * price
                cash -= abs(closed) * comm * price
            if opened:
                cash -= opened * price
                cash -= abs(opened) * comm * price
            if cash >= 0.0:
                self._accept(order, ts)
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
        """Book the execution on the account; returns True while the order is alive."""
        fill, refused = self.account.execute(
            order.id,
            order.symbol,
            ts,
            order.remaining,
            price,
            bar.close,
            order.seq,
            commission=self._commission,
            max_leverage=self._leverage,
        )
        if fill is not None:
            order.remaining -= fill.size
            status = OrderStatus.PARTIAL if order.remaining else OrderStatus.COMPLETED
            self._event(order.id, status, ts, fill)
        if refused:
            self._event(order.id, OrderStatus.MARGIN, ts, reason=refused)
            return False
        return bool(order.remaining)
