"""Alpaca's paper service as a broker (issue 10), behind :class:`~farm.brokers.base.Broker`.

The session loop never waits for Alpaca: :meth:`AlpacaBroker.submit` and ``cancel`` queue work
for the key's :class:`AlpacaLink`, whose REST thread sends it through alpaca-py's
``TradingClient`` under a client-side budget (``REQUESTS_PER_MINUTE``, below Alpaca's 200) with
backoff on 429 and 5xx, and whose stream thread listens to ``trade_updates`` (``TradingStream``).
What comes back (acceptances, refusals, fills, partial ones included, and reconciliations) waits
in an inbox that :meth:`AlpacaBroker.process` applies to the host :class:`Account` when the next
step arrives, as the simulated broker applies its matches.

Idempotence: every order goes out under a deterministic Alpaca ``client_order_id``
(:func:`alpaca_client_id`, at most 48 characters). At start the broker lists the orders the key
placed since the session began; an order whose id is among them is re-attached, never sent again
(a restarted server replays its steps and meets its old orders there). A POST that ends in a 5xx
is looked up by client id before it is retried.

Reconciliation, at start, after every trade stream (re)connection and every
``reconcile_every_s``: the orders this session tracks are read by client id (fills the stream
missed are booked), then positions and cash are read and the account is brought to them. Every
difference is kept in :attr:`AlpacaBroker.differences` (the session status shows it) and every
recovered fill is booked like a streamed one (FMEL records it).

What Alpaca cannot take (fractional or oversized quantities, expiries other than the day or
good-till-cancelled) is refused at once with a REJECTED event whose reason says why; an order the
budget and retries could not deliver is REJECTED too, never dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from alpaca.common.enums import Sort
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order as AlpacaOrder
from alpaca.trading.models import Position as AlpacaPosition
from alpaca.trading.models import TradeAccount, TradeUpdate
from alpaca.trading.requests import (
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
    StopLimitOrderRequest,
    StopOrderRequest,
)
from alpaca.trading.requests import OrderRequest as AlpacaOrderRequest
from alpaca.trading.stream import TradingStream

from farm.brokers.base import Correction
from farm.core.account import Account
from farm.core.bars import Step
from farm.core.orders import OrderEvent, OrderRequest, OrderStatus, OrderType, Position

log = logging.getLogger("farm.alpaca")

REQUESTS_PER_MINUTE = 190
"""The client-side budget per key (Alpaca allows 200 a minute)."""
MAX_CLIENT_ID = 48
MAX_ATTEMPTS = 6
"""Tries of one request on 429/5xx before the order is rejected to the agent."""
BACKOFF_S = 0.25
BACKOFF_MAX_S = 4.0
PAGE = 500
"""Orders per page when listing (Alpaca's maximum; its default is 50)."""
CASH_TOLERANCE = 0.01
"""A cash difference below a cent is rounding, not a difference."""
NEW_YORK = ZoneInfo("America/New_York")
TERMINAL = {
    "canceled": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "rejected": OrderStatus.REJECTED,
    "done_for_day": OrderStatus.EXPIRED,
}


def alpaca_client_id(client_order_id: str) -> str:
    """The Alpaca ``client_order_id`` of a host order: itself when short enough, otherwise a
    stable hash of it (48 characters at most either way)."""
    if len(client_order_id) <= MAX_CLIENT_ID:
        return client_order_id
    return "farm-" + hashlib.sha256(client_order_id.encode()).hexdigest()[: MAX_CLIENT_ID - 5]


def trade_stream_url(trading_url: str) -> str:
    """The trade stream of a trading REST base: the same host's ``/stream`` over ws/wss."""
    base = trading_url.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base.removeprefix("https://") + "/stream"
    return "ws://" + base.removeprefix("http://") + "/stream"


class Refused(Exception):
    """An order Alpaca cannot take; the message says why."""


def _price(value: float) -> float:
    """Alpaca's price increments: cents from $1, hundredths of cents below."""
    return round(value, 2 if value >= 1 else 4)


def _time_in_force(order: OrderRequest) -> TimeInForce:
    """Good till cancelled without an expiry; day when it expires within the day it was
    placed (New York time); anything else cannot be expressed at Alpaca."""
    if order.valid_until is None:
        return TimeInForce.DAY if order.type is OrderType.MARKET else TimeInForce.GTC
    placed = order.created_ts.astimezone(NEW_YORK).date()
    if order.valid_until.astimezone(NEW_YORK).date() == placed:
        return TimeInForce.DAY
    raise Refused(
        f"Alpaca cannot expire an order at {order.valid_until:%Y-%m-%d %H:%M}: only the day "
        "it was placed (day) or good till cancelled (no expiry)"
    )


def order_request(order: OrderRequest, client_id: str) -> AlpacaOrderRequest:
    """The Alpaca request for a host order, or :class:`Refused`."""
    size = order.size
    if not math.isfinite(size) or size == 0 or size != int(size):
        raise Refused(f"Alpaca takes whole, non-zero share quantities here, not {size}")
    if abs(size) > 1e9:
        raise Refused("size must be at most 1e9 shares at Alpaca")
    side = OrderSide.BUY if size > 0 else OrderSide.SELL
    common: dict[str, Any] = {
        "symbol": order.symbol,
        "qty": abs(int(size)),
        "side": side,
        "time_in_force": _time_in_force(order),
        "client_order_id": client_id,
    }
    prices = [p for p in (order.price, order.limit_price) if p is not None]
    if any(not math.isfinite(p) or p <= 0 for p in prices):
        raise Refused(f"{order.type} orders need finite prices above 0")
    if order.type is OrderType.MARKET:
        return MarketOrderRequest(**common)
    if order.price is None:
        raise Refused(f"{order.type} orders need a price")
    if order.type is OrderType.LIMIT:
        return LimitOrderRequest(**common, limit_price=_price(order.price))
    if order.type is OrderType.STOP:
        return StopOrderRequest(**common, stop_price=_price(order.price))
    limit = order.limit_price if order.limit_price is not None else order.price
    return StopLimitOrderRequest(
        **common, stop_price=_price(order.price), limit_price=_price(limit)
    )


class RateBudget:
    """At most ``per_minute`` requests in any sliding minute (thread-safe)."""

    def __init__(self, per_minute: int = REQUESTS_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for room for one request; False when ``stop`` is set first."""
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - 60.0:
                    self._sent.popleft()
                if len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return True
                wait = self._sent[0] + 60.0 - now
            if stop.wait(wait):
                return False


class SendFailed(Exception):
    """A request that 429s and 5xx kept from going through."""


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, APIError):
        status = exc.status_code
        return status is None or status == 429 or status >= 500
    return isinstance(exc, OSError | ConnectionError) or "Connection" in type(exc).__name__


def _describe(exc: Exception) -> str:
    if isinstance(exc, APIError):
        try:
            return f"{exc.message} (HTTP {exc.status_code}, code {exc.code})"
        except (ValueError, KeyError, TypeError):
            return f"{exc} (HTTP {exc.status_code})"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True, slots=True)
class AlpacaKey:
    """One Alpaca paper key pair and where its service lives."""

    key_id: str
    secret_key: str = field(repr=False)
    trading_url: str

    def client(self) -> TradingClient:
        """alpaca-py's REST client; its own retries are off (the link retries)."""
        client = TradingClient(
            self.key_id, self.secret_key, paper=True, url_override=self.trading_url
        )
        client._retry_codes = []  # 429/5xx come back to the link, which backs off
        return client


def verify_key(key: AlpacaKey) -> TradeAccount:
    """``GET /v2/account`` with the key: the account, or the :class:`APIError` refusing it."""
    account = key.client().get_account()
    assert isinstance(account, TradeAccount)
    return account


class _Stream(TradingStream):
    """``TradingStream`` telling its owner each time it (re)connects."""

    def __init__(self, key: AlpacaKey, on_connect: Callable[[], None]) -> None:
        super().__init__(
            key.key_id, key.secret_key, paper=True, url_override=trade_stream_url(key.trading_url)
        )
        self._on_connect = on_connect

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]
        self._on_connect()


_Work = tuple[Literal["submit", "cancel", "reconcile"], Any]


class AlpacaLink:
    """The threads of one key: REST work in order under the budget, and the trade stream."""

    def __init__(
        self,
        key: AlpacaKey,
        on_update: Callable[[TradeUpdate], None],
        on_connect: Callable[[], None],
        budget: RateBudget | None = None,
    ) -> None:
        self.key = key
        self.client = key.client()
        self.budget = budget or RateBudget()
        self.work: queue.Queue[_Work] = queue.Queue()
        self.stop = threading.Event()
        self._stream = _Stream(key, on_connect)
        self._on_update = on_update
        self._stream_thread: threading.Thread | None = None
        self.retries = 0  # requests retried after a 429 or 5xx

    def start(self, worker: Callable[[], None]) -> None:
        async def handler(update: TradeUpdate) -> None:
            self._on_update(update)

        self._stream.subscribe_trade_updates(handler)
        self._stream_thread = threading.Thread(
            target=self._stream.run, name=f"alpaca-stream-{self.key.key_id[:6]}", daemon=True
        )
        self._stream_thread.start()
        threading.Thread(
            target=worker, name=f"alpaca-rest-{self.key.key_id[:6]}", daemon=True
        ).start()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` under the budget, retried with backoff on 429/5xx and connection
        errors; :class:`SendFailed` when it never got through, the :class:`APIError` of a
        refusal (4xx) as is."""
        last: Exception | None = None
        for attempt in range(MAX_ATTEMPTS):
            if not self.budget.acquire(self.stop):
                raise SendFailed("the server is stopping")
            try:
                return fn(*args)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                last = exc
                self.retries += 1
                log.warning("alpaca request failed (%s); retrying", _describe(exc))
                if self.stop.wait(min(BACKOFF_S * 2**attempt, BACKOFF_MAX_S)):
                    break
        raise SendFailed(_describe(last) if last else "stopped")

    async def _stop_stream(self) -> None:
        """Stop the stream and close its socket: alpaca-py alone only notices the stop after
        its 5 s receive timeout, which a runtime closing many sessions in turn adds up."""
        await self._stream.stop_ws()
        await self._stream.close()

    def close(self) -> None:
        self.stop.set()
        self.work.put(("reconcile", None))  # wakes the worker
        loop = self._stream._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stop_stream(), loop).result(10)
        if self._stream_thread is not None:
            self._stream_thread.join(10)


@dataclass
class _Tracked:
    """One order of the session at Alpaca."""

    cid: str  # the host's client order id
    remote: str  # the Alpaca client_order_id
    symbol: str
    size: float  # signed
    seq: int
    request: AlpacaOrderRequest | None  # None for an order restored after a restart
    booked: float = 0.0  # shares booked on the account
    notional: float = 0.0  # their value at the fill prices
    accepted: bool = False
    done: bool = False


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What a REST read says of one order (cumulative)."""

    filled: float
    average: float
    status: str


@dataclass(frozen=True, slots=True)
class _Truth:
    """The broker's cash and positions, read over REST."""

    cash: float
    positions: dict[str, Position]


_Inbox = tuple[str, str, Any]  # kind, Alpaca client id, payload


class AlpacaBroker:
    """A session's orders at Alpaca, booked on its :class:`Account` (see the module doc).

    ``since`` is when the session began: orders the key placed since then are this session's.
    ``refused`` maps the client ids Alpaca refused before a restart (a replay meets them again)
    to the reasons it gave.
    """

    def __init__(
        self,
        account: Account,
        key: AlpacaKey,
        *,
        since: datetime,
        reconcile_every_s: float = 60.0,
        budget: RateBudget | None = None,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        self.account = account
        self._refused = dict(refused or {})  # refused before a restart: never sent again
        self._since = since
        self._every = reconcile_every_s
        self._orders: dict[str, _Tracked] = {}  # by Alpaca client id
        self._by_cid: dict[str, _Tracked] = {}
        self._remote: dict[str, AlpacaOrder] | None = None  # placed before: re-attach
        self._inbox: deque[_Inbox] = deque()
        self._events: list[OrderEvent] = []
        self._lock = threading.Lock()
        self.differences: list[str] = []
        self._corrections: list[Correction] = []  # not yet taken for FMEL
        self.reconciled_at: datetime | None = None
        self.reconciliations = 0
        self._ts: datetime | None = None
        self.link = AlpacaLink(key, self._on_update, self._on_connect, budget)
        self.link.work.put(("reconcile", "start"))
        self.link.start(self._worker)

    # -- the Broker protocol (the session loop's thread) ----------------------------------------

    @property
    def open_orders(self) -> list[str]:
        """Client ids of orders not yet done."""
        return [t.cid for t in self._by_cid.values() if not t.done]

    def submit(self, order: OrderRequest) -> None:
        """Queue ``order`` for Alpaca (a client id seen before is ignored); refused at once
        when Alpaca cannot take it."""
        cid = order.client_order_id
        if cid in self._by_cid:
            return
        remote = alpaca_client_id(cid)
        ts = order.created_ts
        try:
            if cid in self._refused:
                raise Refused(self._refused[cid] or "Alpaca refused it before a restart")
            request = order_request(order, remote)
        except Refused as exc:
            self._events.append(OrderEvent(cid, OrderStatus.REJECTED, ts, reason=str(exc)))
            return
        tracked = _Tracked(cid, remote, order.symbol, order.size, order.decision_seq, request)
        with self._lock:
            self._orders[remote] = tracked
        self._by_cid[cid] = tracked
        self.account.track(order.symbol)
        self._events.append(OrderEvent(cid, OrderStatus.SUBMITTED, ts))
        self.link.work.put(("submit", tracked))

    def cancel(self, client_order_id: str) -> None:
        """Ask Alpaca to cancel an open order; its cancellation arrives on the stream."""
        tracked = self._by_cid.get(client_order_id)
        if tracked is not None and not tracked.done:
            self.link.work.put(("cancel", tracked))

    def cancel_all(self, ts: datetime) -> list[OrderEvent]:
        """Cancel every open order (a session stopping); their CANCELLED events."""
        events = []
        for tracked in self._by_cid.values():
            if not tracked.done:
                tracked.done = True
                self.link.work.put(("cancel", tracked))
                events.append(OrderEvent(tracked.cid, OrderStatus.CANCELLED, ts))
        return events

    def process(self, step: Step) -> list[OrderEvent]:
        """Book what Alpaca reported since the previous step; the order events."""
        self._ts = step.ts
        account = self.account
        account.begin_step(step)
        while True:
            with self._lock:
                if not self._inbox:
                    break
                kind, remote, payload = self._inbox.popleft()
            self._apply(kind, remote, payload, step)
        account.update_closes(step.bars)
        events, self._events = self._events, []
        return events

    def reconcile(self, reason: str = "asked") -> None:
        """Queue a reconciliation (orders, positions, cash over REST)."""
        self.link.work.put(("reconcile", reason))

    def corrections(self) -> list[Correction]:
        """The reconciliation corrections booked since the last call (for FMEL)."""
        taken, self._corrections = self._corrections, []
        return taken

    def close(self) -> None:
        """Stop the key's threads (the orders at Alpaca stay as they are)."""
        self.link.close()

    def status(self) -> dict[str, Any]:
        """What the session status shows of the broker."""
        return {
            "broker": "alpaca",
            "reconciledAt": self.reconciled_at.isoformat() if self.reconciled_at else None,
            "reconciliations": self.reconciliations,
            "differences": list(self.differences[-20:]),
            "retries": self.link.retries,
        }

    # -- applying the inbox -------------------------------------------------------------------

    def _apply(self, kind: str, remote: str, payload: Any, step: Step) -> None:
        if kind == "truth":
            self._align(payload, step)
            return
        if kind == "restore":
            self._restore(payload, step)
            return
        tracked = self._orders.get(remote)
        if tracked is None:
            return
        ts = step.ts
        if kind == "accepted":
            self._accepted(tracked, ts)
        elif kind == "rejected":
            if not tracked.done:
                tracked.done = True
                self._events.append(
                    OrderEvent(tracked.cid, OrderStatus.REJECTED, ts, reason=str(payload))
                )
        elif kind == "fill":
            cumulative, qty, price = payload
            self._book(tracked, min(qty, cumulative - tracked.booked), price, step)
        elif kind in ("snapshot", "attached"):
            self._catch_up(tracked, payload, step, recovered=kind == "snapshot")
        elif kind in TERMINAL and not tracked.done:
            tracked.done = True
            self._events.append(OrderEvent(tracked.cid, TERMINAL[kind], ts))

    def _restore(self, order: AlpacaOrder, step: Step) -> None:
        """An order this session placed before a restart: tracked again and its fills booked
        (once: a replay submitting it again meets it here and sends nothing)."""
        remote = order.client_order_id
        tracked = self._orders.get(remote)
        if tracked is None:
            qty = float(order.qty or 0)
            size = qty if order.side == OrderSide.BUY else -qty
            tail = remote.rsplit("-", 2)
            seq = int(tail[1]) if len(tail) == 3 and tail[1].isdigit() else -1
            tracked = _Tracked(remote, remote, order.symbol or "", size, seq, None)
            with self._lock:
                self._orders[remote] = tracked
            self._by_cid[remote] = tracked
            self.account.track(tracked.symbol)
        self._catch_up(tracked, _snapshot(order), step, recovered=False)

    def _accepted(self, tracked: _Tracked, ts: datetime) -> None:
        """ACCEPTED once, before any fill (the stream can beat the POST's response)."""
        if not tracked.accepted and not tracked.done:
            tracked.accepted = True
            self._events.append(OrderEvent(tracked.cid, OrderStatus.ACCEPTED, ts))

    def _catch_up(self, tracked: _Tracked, snap: _Snapshot, step: Step, *, recovered: bool) -> None:
        """Book the fills a REST read shows and the stream did not deliver (``recovered``: a
        difference; otherwise an order re-attached after a restart)."""
        missing = snap.filled - tracked.booked
        if missing > 1e-9:
            price = (snap.average * snap.filled - tracked.notional) / missing
            if recovered:
                self.differences.append(
                    f"{step.ts.isoformat()}: recovered {missing:g} {tracked.symbol} of order "
                    f"{tracked.cid} missed by the trade stream"
                )
            self._book(tracked, missing, price, step)
        status = TERMINAL.get(snap.status)
        if status is not None and not tracked.done:
            tracked.done = True
            self._events.append(OrderEvent(tracked.cid, status, step.ts))

    def _book(self, tracked: _Tracked, qty: float, price: float, step: Step) -> None:
        if qty <= 1e-9:
            return
        self._accepted(tracked, step.ts)
        sign = 1.0 if tracked.size > 0 else -1.0
        bar = step.bars.get(tracked.symbol)
        fill, _ = self.account.execute(
            tracked.cid,
            tracked.symbol,
            step.ts,
            sign * qty,
            price,
            bar.close if bar is not None else price,
            tracked.seq,
            commission=0.0,
            enforce=False,
        )
        tracked.booked += qty
        tracked.notional += qty * price
        if fill is None:
            return
        complete = tracked.booked >= abs(tracked.size) - 1e-9
        if complete:
            tracked.done = True
        status = OrderStatus.COMPLETED if complete else OrderStatus.PARTIAL
        self._events.append(
            OrderEvent(tracked.cid, status, step.ts, fill.size, fill.price, fill.commission)
        )

    def _align(self, truth: _Truth, step: Step) -> None:
        found = self.account.align(step.ts, truth.cash, truth.positions, CASH_TOLERANCE)
        self.differences += [f"{step.ts.isoformat()}: {d}" for _, d in found]
        self._corrections += [Correction(symbol, d, step.ts) for symbol, d in found]
        for _, difference in found:
            log.warning("alpaca reconciliation: %s", difference)

    # -- the threads --------------------------------------------------------------------------

    def _post(self, kind: str, remote: str, payload: Any = None) -> None:
        with self._lock:
            self._inbox.append((kind, remote, payload))

    def _on_update(self, update: TradeUpdate) -> None:
        """A trade update (the stream's thread)."""
        order = update.order
        remote = order.client_order_id
        event = str(getattr(update.event, "value", update.event))
        if event in ("fill", "partial_fill") and update.qty is not None:
            cumulative = float(order.filled_qty or 0)
            self._post("fill", remote, (cumulative, float(update.qty), float(update.price or 0)))
        elif event in TERMINAL:
            self._post(event, remote)

    def _on_connect(self) -> None:
        """The trade stream (re)connected: updates may have been missed."""
        self.link.work.put(("reconcile", "stream connected"))

    def _worker(self) -> None:
        """The REST thread: the queued work in order, and the periodic reconciliation."""
        link = self.link
        next_due = time.monotonic() + self._every
        while not link.stop.is_set():
            try:
                kind, item = link.work.get(timeout=max(next_due - time.monotonic(), 0.0))
            except queue.Empty:
                kind, item = "reconcile", "periodic"
            if link.stop.is_set():
                return
            try:
                if kind == "submit":
                    self._send(item)
                elif kind == "cancel":
                    self._cancel(item)
                else:
                    self._reconcile_now()
                    next_due = time.monotonic() + self._every
            except Exception:
                log.exception("alpaca %s failed", kind)

    def _send(self, tracked: _Tracked) -> None:
        """POST one order, once: re-attached when Alpaca already has its client id."""
        remote = tracked.remote
        known = (self._remote or {}).get(remote)
        if known is not None:
            self._post("accepted", remote)
            self._post("attached", remote, _snapshot(known))
            return
        link = self.link
        try:
            assert tracked.request is not None
            for _ in range(MAX_ATTEMPTS):
                try:
                    link.call(link.client.submit_order, tracked.request)
                    self._post("accepted", remote)
                    return
                except SendFailed:
                    raise
                except APIError as exc:
                    if exc.status_code is not None and exc.status_code < 500:
                        if "unique" in _describe(exc):  # it was placed after all
                            self._attach(tracked)
                            return
                        self._post("rejected", remote, f"Alpaca refused it: {_describe(exc)}")
                        return
                    if self._attach(tracked):  # a 5xx after the order was taken
                        return
            raise SendFailed("Alpaca kept failing")
        except SendFailed as exc:
            self._post("rejected", remote, f"could not be sent to Alpaca: {exc}")

    def _attach(self, tracked: _Tracked) -> bool:
        """Look an order up by client id; True (and its state queued) when Alpaca has it."""
        link = self.link
        try:
            order = link.call(link.client.get_order_by_client_id, tracked.remote)
        except APIError as exc:
            if exc.status_code == 404:
                return False
            raise
        self._post("accepted", tracked.remote)
        self._post("attached", tracked.remote, _snapshot(order))
        return True

    def _cancel(self, tracked: _Tracked) -> None:
        link = self.link
        try:
            order = link.call(link.client.get_order_by_client_id, tracked.remote)
            link.call(link.client.cancel_order_by_id, order.id)
        except APIError as exc:
            log.info("cancel of %s not done: %s", tracked.cid, _describe(exc))
        except SendFailed as exc:
            log.warning("cancel of %s could not be sent: %s", tracked.cid, exc)

    def _orders_since(self, since: datetime) -> list[AlpacaOrder]:
        """Every order the key placed after ``since``, oldest first (pages of ``PAGE``)."""
        link = self.link
        orders: list[AlpacaOrder] = []
        while True:
            request = GetOrdersRequest(
                status=QueryOrderStatus.ALL, after=since, limit=PAGE, direction=Sort.ASC
            )
            page: list[AlpacaOrder] = link.call(link.client.get_orders, request)
            orders += page
            if len(page) < PAGE:
                return orders
            since = page[-1].submitted_at

    def _reconcile_now(self) -> None:
        """Orders by client id, then positions and cash; queued for the loop to apply."""
        link = self.link
        client = link.client
        listed = self._orders_since(self._since)
        remote = {o.client_order_id: o for o in listed}
        if self._remote is None:  # at start: the orders placed before a restart come back
            self._remote = remote
            for placed in listed:
                self._post("restore", placed.client_order_id, placed)
        with self._lock:
            tracked = [t for t in self._orders.values() if not t.done]
        for order in tracked:
            found = remote.get(order.remote)
            if found is None:
                try:
                    found = link.call(client.get_order_by_client_id, order.remote)
                except APIError:
                    continue  # not placed yet (still queued) or refused
            self._post("snapshot", order.remote, _snapshot(found))
        positions: list[AlpacaPosition] = link.call(client.get_all_positions)
        account: TradeAccount = link.call(client.get_account)
        cash = float(Decimal(account.cash or "0"))
        held = {
            p.symbol: (float(Decimal(p.qty)), float(Decimal(p.avg_entry_price))) for p in positions
        }
        truth = _Truth(cash, {s: Position(q, p) for s, (q, p) in held.items() if abs(q) > 1e-9})
        self._post("truth", "", truth)
        self.reconciled_at = datetime.now().astimezone()
        self.reconciliations += 1


def _snapshot(order: AlpacaOrder) -> _Snapshot:
    status = str(getattr(order.status, "value", order.status))
    return _Snapshot(float(order.filled_qty or 0), float(order.filled_avg_price or 0), status)
