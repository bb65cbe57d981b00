"""A local Alpaca paper service for tests, faithful to Alpaca's documented wire format.

REST (``/v2/account``, ``/v2/orders`` incl. ``orders:by_client_order_id``, ``/v2/positions``,
``/v2/clock``, ``/v2/stocks/bars``) answers with string amounts and ``{code, message}`` errors
(401 bad key, 403 buying power, 422 refused order or duplicate client id, 404, 429 on demand).
Each key pair has its own book (cash, positions, orders), as each Alpaca paper account does.
``/v2/stocks/bars`` serves every bar the data stream carried (and those a test put in
``history``) in Alpaca's shape: ``{"bars": {symbol: [...]}, "next_page_token"}``, sorted by
symbol then time, ``limit`` bars a page (1000 by default, 10000 at most).
The trade stream ``/stream`` speaks JSON (``authenticate``, ``listen`` to ``trade_updates``);
the data stream ``/v2/{feed}`` speaks msgpack (``connected``, ``auth``, ``subscribe``) with bar
times as msgpack timestamps and refuses a second authenticated connection with 406.

Fills are driven by the test (:meth:`FakeAlpaca.fill`), or immediately for market orders with
``auto_fill``; every trade update's ``qty`` is that fill's quantity. Drive it through the real
alpaca-py clients only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgpack
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from support import serving

ERR_UNAUTHORIZED = 40110000
ERR_BUYING_POWER = 40310000
ERR_UNPROCESSABLE = 42210000
ERR_DUPLICATE = 40010001
ERR_NOT_FOUND = 40410000
ERR_RATE = 42910000
OPEN = ("new", "partially_filled")


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _num(value: Decimal) -> str:
    return format(value.normalize(), "f")


def _parse_time(text: str) -> datetime:
    """An RFC 3339 time (or a naive one, taken as UTC, as alpaca-py sends them)."""
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def _token(symbol: str, t: str) -> str:
    return base64.urlsafe_b64encode(f"{symbol}|{t}".encode()).decode()


def _untoken(token: str) -> tuple[str, datetime]:
    try:
        symbol, t = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("page_token") from exc
    return symbol, _parse_time(t)


def _error(status: int, code: int, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


@dataclass
class FakeOrder:
    """One order as the server holds it."""

    id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    type: str
    time_in_force: str
    limit_price: Decimal | None
    stop_price: Decimal | None
    created_at: datetime
    key_id: str  # the key (account) that placed it: its trade updates go to that key's streams
    status: str = "new"
    filled_qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)  # sum of fill qty * price

    def wire(self) -> dict[str, Any]:
        """The order as Alpaca's REST and trade stream render it (string amounts)."""
        avg = self.notional / self.filled_qty if self.filled_qty else None
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.created_at),
            "submitted_at": _iso(self.created_at),
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.symbol)),
            "symbol": self.symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(self.qty),
            "filled_qty": _num(self.filled_qty),
            "filled_avg_price": None if avg is None else _num(avg),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "time_in_force": self.time_in_force,
            "limit_price": None if self.limit_price is None else _num(self.limit_price),
            "stop_price": None if self.stop_price is None else _num(self.stop_price),
            "status": self.status,
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }


@dataclass
class Book:
    """One paper account: what one key pair owns."""

    cash: Decimal
    positions: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)  # qty, avg
    orders: dict[str, FakeOrder] = field(default_factory=dict)  # by client order id
    posted: list[str] = field(default_factory=list)  # every client id POSTed, duplicates too


class FakeAlpaca:
    """Alpaca's paper service for a few key pairs (one book each) and its market data.

    ``cash``, ``positions``, ``orders`` and ``posted`` are the book of the main key
    (``key_id``); :meth:`book` gives any key's. Every account starts with ``cash``.
    """

    def __init__(
        self,
        key_id: str = "PKTEST",
        secret_key: str = "s3cret-paper-key",
        cash: Decimal = Decimal("100000"),
        prices: dict[str, Decimal] | None = None,
        *,
        auto_fill: bool = False,  # market orders fill at once at the last price
        split_fills: bool = False,  # ... in two partial fills
        other_keys: dict[str, str] | None = None,  # more key pairs, one account each
    ) -> None:
        self.key_id = key_id
        self.secret_key = secret_key
        self.starting_cash = cash
        self.prices: dict[str, Decimal] = dict(prices or {})
        self.auto_fill = auto_fill
        self.split_fills = split_fills
        self.other_keys: dict[str, str] = dict(other_keys or {})
        self.books: dict[str, Book] = {key_id: Book(cash)}
        self.requests: list[tuple[float, str, str]] = []  # time, method, path
        self.fail_next: list[int] = []  # statuses for the next REST requests
        self.market_open = True
        self.history: dict[str, list[dict[str, Any]]] = {}  # wire bars by symbol, by time
        self.data_connections = 0  # data stream connections opened in all
        self.refused_406 = 0
        self.lock = threading.RLock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._trade_sockets: dict[WebSocket, str] = {}  # socket: its key id
        self._data_socket: WebSocket | None = None
        self._subscribed: set[str] = set()
        self.trade_stream_down = False  # refuse trade stream connections
        self.data_stream_down = False  # refuse data stream connections

    def book(self, key_id: str) -> Book:
        """The book of ``key_id`` (opened with the starting cash on first use)."""
        with self.lock:
            if key_id not in self.books:
                self.books[key_id] = Book(self.starting_cash)
            return self.books[key_id]

    @property
    def cash(self) -> Decimal:
        return self.books[self.key_id].cash

    @cash.setter
    def cash(self, value: Decimal) -> None:
        self.books[self.key_id].cash = value

    @property
    def positions(self) -> dict[str, tuple[Decimal, Decimal]]:
        return self.books[self.key_id].positions

    @property
    def orders(self) -> dict[str, FakeOrder]:
        return self.books[self.key_id].orders

    @property
    def posted(self) -> list[str]:
        return self.books[self.key_id].posted

    # -- what tests do ------------------------------------------------------------------------

    def fill(
        self, client_order_id: str, qty: float | str, price: float | str, key_id: str = ""
    ) -> None:
        """Execute ``qty`` of an open order of ``key_id`` (default the main key) at ``price``;
        its trade update goes out."""
        with self.lock:
            order = self.book(key_id or self.key_id).orders[client_order_id]
            event = self._execute(order, Decimal(str(qty)), Decimal(str(price)))
        self._broadcast(event, order.key_id)

    def cancel_from_broker(self, client_order_id: str, key_id: str = "") -> None:
        """The broker cancels an open order (e.g. at the day's end)."""
        with self.lock:
            order = self.book(key_id or self.key_id).orders[client_order_id]
            order.status = "canceled"
            event = self._update("canceled", order)
        self._broadcast(event, order.key_id)

    def drop_trade_streams(self, *, stay_down: bool = False) -> None:
        """Close every trade stream connection (``stay_down``: refuse new ones until
        :meth:`restore_trade_stream`)."""
        self.trade_stream_down = stay_down
        self._on_loop(self._close_all_trade())

    def restore_trade_stream(self) -> None:
        self.trade_stream_down = False

    def push_bar(self, symbol: str, ts: datetime, close: float, *, updated: bool = False) -> None:
        """A minute bar (``updated``: a corrected one): sent to the data connection if there is
        one, and kept in the historical bars (a correction replaces the bar there)."""
        price = Decimal(str(close))
        bar = {
            "T": "u" if updated else "b",
            "S": symbol,
            "o": close,
            "h": close,
            "l": close,
            "c": close,
            "v": 100,
            "t": msgpack.Timestamp.from_datetime(ts),
            "n": 3,
            "vw": close,
        }
        stored = {k: v for k, v in bar.items() if k not in ("T", "S")} | {"t": _iso(ts)}
        with self.lock:
            self.prices[symbol] = price
            bars = [b for b in self.history.get(symbol, []) if b["t"] != stored["t"]]
            self.history[symbol] = sorted([*bars, stored], key=lambda b: _parse_time(b["t"]))
        self._on_loop(self._send_data([bar]))

    def drop_data_stream(self, *, stay_down: bool = False) -> None:
        """Close the data connection (``stay_down``: refuse new ones until
        :meth:`restore_data_stream`)."""
        self.data_stream_down = stay_down
        self._on_loop(self._close_data())

    def restore_data_stream(self) -> None:
        self.data_stream_down = False

    @property
    def subscribed(self) -> set[str]:
        return set(self._subscribed)

    @property
    def data_connected(self) -> bool:
        return self._data_socket is not None

    @property
    def trade_connected(self) -> int:
        return len(self._trade_sockets)

    # -- the app ------------------------------------------------------------------------------

    def app(self) -> Starlette:
        routes = [
            Route("/v2/account", self._account),
            Route("/v2/orders", self._orders, methods=["GET", "POST", "DELETE"]),
            Route("/v2/orders:by_client_order_id", self._order_by_client_id),
            Route("/v2/orders/{order_id}", self._order, methods=["GET", "DELETE"]),
            Route("/v2/positions", self._positions),
            Route("/v2/clock", self._clock),
            Route("/v2/stocks/bars", self._bars),
            WebSocketRoute("/stream", self._trade_stream),
            WebSocketRoute("/v2/{feed}", self._data_stream),
        ]
        return Starlette(routes=routes)

    def _gate(self, request: Request) -> Response | None:
        """Authentication and the injected failures, for every REST request."""
        self.loop = asyncio.get_running_loop()
        with self.lock:
            self.requests.append((time.monotonic(), request.method, request.url.path))
            fail = self.fail_next.pop(0) if self.fail_next else None
        key = request.headers.get("apca-api-key-id", "")
        if not self._authorized(key, request.headers.get("apca-api-secret-key", "")):
            return _error(401, ERR_UNAUTHORIZED, "request is not authorized")
        if fail == 429:
            return _error(429, ERR_RATE, "rate limit exceeded")
        if fail is not None:
            return _error(fail, 50010000, "internal server error")
        return None

    def _authorized(self, key: str, secret: str) -> bool:
        return (key, secret) == (self.key_id, self.secret_key) or (
            key in self.other_keys and self.other_keys[key] == secret
        )

    async def _account(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        key = request.headers.get("apca-api-key-id", "")
        with self.lock:
            book = self.book(key)
            equity = book.cash + sum(
                (q * self.prices.get(s, avg) for s, (q, avg) in book.positions.items()),
                Decimal(0),
            )
            return JSONResponse(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_DNS, key)),
                    "account_number": f"PA3{key[-6:].upper()}",
                    "status": "ACTIVE",
                    "currency": "USD",
                    "cash": _num(book.cash),
                    "buying_power": _num(book.cash),
                    "equity": _num(equity),
                    "portfolio_value": _num(equity),
                    "pattern_day_trader": False,
                    "trading_blocked": False,
                    "account_blocked": False,
                    "multiplier": "1",
                }
            )

    async def _orders(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        if request.method == "GET":
            params = request.query_params
            status = params.get("status", "open")
            after = params.get("after")
            lo = datetime.fromisoformat(after.replace("Z", "+00:00")) if after else None
            with self.lock:
                orders = [
                    o
                    for o in self.book(request.headers.get("apca-api-key-id", "")).orders.values()
                    if (status == "all" or (status == "open") == (o.status in OPEN))
                    and (lo is None or o.created_at > lo)
                ]
            orders.sort(key=lambda o: o.created_at, reverse=params.get("direction") != "asc")
            limit = min(int(params.get("limit", 50)), 500)  # Alpaca's default page and maximum
            return JSONResponse([o.wire() for o in orders[:limit]])
        if request.method == "DELETE":
            return JSONResponse([], status_code=207)
        key = request.headers.get("apca-api-key-id", "")
        response, events = self._place(await request.json(), key)
        for event in events:
            await self._send_trade(json.dumps(event), key)
        return response

    def _place(self, body: dict[str, Any], key_id: str) -> tuple[Response, list[dict[str, Any]]]:
        """Take or refuse an order; the response and the trade updates it causes."""
        cid = str(body.get("client_order_id") or uuid.uuid4())
        with self.lock:
            book = self.book(key_id)
            book.posted.append(cid)
            if len(cid) > 48:
                return _error(422, ERR_UNPROCESSABLE, "client_order_id is too long"), []
            if cid in book.orders:
                return _error(422, ERR_DUPLICATE, "client_order_id must be unique"), []
            kind = body.get("type")
            tif = body.get("time_in_force")
            if kind not in ("market", "limit", "stop", "stop_limit"):
                return _error(422, ERR_UNPROCESSABLE, f"invalid order type {kind}"), []
            if tif not in ("day", "gtc", "opg", "cls", "ioc", "fok"):
                return _error(422, ERR_UNPROCESSABLE, "invalid time_in_force"), []
            try:
                qty = Decimal(str(body["qty"]))
            except (KeyError, ArithmeticError):
                return _error(422, ERR_UNPROCESSABLE, "qty is required"), []
            if qty <= 0 or qty != qty.to_integral_value():
                return _error(422, ERR_UNPROCESSABLE, "qty must be a positive whole number"), []
            symbol = str(body.get("symbol"))
            if symbol not in self.prices:
                return _error(422, ERR_UNPROCESSABLE, f"asset {symbol} is not active"), []
            limit = Decimal(str(body["limit_price"])) if body.get("limit_price") else None
            stop = Decimal(str(body["stop_price"])) if body.get("stop_price") else None
            price = limit or stop or self.prices[symbol]
            side = body.get("side")
            if side == "buy" and qty * price > book.cash:
                return _error(403, ERR_BUYING_POWER, "insufficient buying power"), []
            order = FakeOrder(
                str(uuid.uuid4()),
                cid,
                symbol,
                str(side),
                qty,
                kind,
                tif,
                limit,
                stop,
                datetime.now(UTC),
                key_id,
            )
            book.orders[cid] = order
            events = [self._update("new", order)]
            if self.auto_fill and kind == "market":
                last = self.prices[symbol]
                if self.split_fills and qty > 1:
                    half = (qty / 2).to_integral_value()
                    events.append(self._execute(order, half, last))
                    events.append(self._execute(order, qty - half, last))
                else:
                    events.append(self._execute(order, qty, last))
            wire = order.wire()
        return JSONResponse(wire), events

    async def _order_by_client_id(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        cid = request.query_params.get("client_order_id", "")
        with self.lock:
            order = self.book(request.headers.get("apca-api-key-id", "")).orders.get(cid)
            if order is None:
                return _error(404, ERR_NOT_FOUND, "order not found")
            return JSONResponse(order.wire())

    async def _order(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        oid = request.path_params["order_id"]
        with self.lock:
            orders = self.book(request.headers.get("apca-api-key-id", "")).orders
            order = next((o for o in orders.values() if o.id == oid), None)
            if order is None:
                return _error(404, ERR_NOT_FOUND, "order not found")
            if request.method == "GET":
                return JSONResponse(order.wire())
            if order.status not in ("new", "partially_filled", "accepted"):
                return _error(422, ERR_UNPROCESSABLE, "order is not cancelable")
            order.status = "canceled"
            event = self._update("canceled", order)
        await self._send_trade(json.dumps(event), order.key_id)
        return Response(status_code=204)

    async def _positions(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        with self.lock:
            rows = []
            for symbol, (qty, avg) in self.book(
                request.headers["apca-api-key-id"]
            ).positions.items():
                last = self.prices.get(symbol, avg)
                rows.append(
                    {
                        "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)),
                        "symbol": symbol,
                        "exchange": "NASDAQ",
                        "asset_class": "us_equity",
                        "avg_entry_price": _num(avg),
                        "qty": _num(qty),
                        "qty_available": _num(qty),
                        "side": "long" if qty > 0 else "short",
                        "market_value": _num(qty * last),
                        "cost_basis": _num(qty * avg),
                        "unrealized_pl": _num(qty * (last - avg)),
                        "current_price": _num(last),
                    }
                )
        return JSONResponse(rows)

    async def _clock(self, request: Request) -> Response:
        if (refused := self._gate(request)) is not None:
            return refused
        now = datetime.now(UTC).replace(microsecond=0)
        return JSONResponse(
            {
                "timestamp": _iso(now),
                "is_open": self.market_open,
                "next_open": _iso(now + timedelta(hours=16)),
                "next_close": _iso(now + timedelta(hours=6)),
            }
        )

    async def _bars(self, request: Request) -> Response:
        """Historical minute bars, paged as Alpaca pages them: ``limit`` bars in all symbols
        a page, sorted by symbol then time, and an opaque ``next_page_token`` (the key of the
        page's last bar) while more remain."""
        if (refused := self._gate(request)) is not None:
            return refused
        params = request.query_params
        symbols = sorted({s for s in params.get("symbols", "").split(",") if s})
        if not symbols:
            return _error(422, ERR_UNPROCESSABLE, "symbols is required")
        if params.get("timeframe") != "1Min":
            return _error(422, ERR_UNPROCESSABLE, "invalid timeframe (only 1Min is served)")
        try:
            limit = int(params.get("limit") or 1000)
            lo = _parse_time(params["start"]) if params.get("start") else None
            hi = _parse_time(params["end"]) if params.get("end") else None
            after = _untoken(params["page_token"]) if params.get("page_token") else None
        except ValueError as exc:
            return _error(422, ERR_UNPROCESSABLE, f"invalid parameter: {exc}")
        if not 1 <= limit <= 10_000:
            return _error(422, ERR_UNPROCESSABLE, "invalid limit: between 1 and 10000")
        with self.lock:
            rows = [
                (symbol, bar)
                for symbol in symbols
                for bar in self.history.get(symbol, [])
                if (lo is None or _parse_time(bar["t"]) >= lo)
                and (hi is None or _parse_time(bar["t"]) <= hi)
                and (after is None or (symbol, _parse_time(bar["t"])) > after)
            ]
        page, rest = rows[:limit], rows[limit:]
        out: dict[str, list[dict[str, Any]]] = {}
        for symbol, bar in page:
            out.setdefault(symbol, []).append(bar)
        token = _token(page[-1][0], page[-1][1]["t"]) if rest else None
        return JSONResponse({"bars": out, "next_page_token": token})

    # -- state changes ------------------------------------------------------------------------

    def _execute(self, order: FakeOrder, qty: Decimal, price: Decimal) -> dict[str, Any]:
        """Book a fill on the account; the trade update it causes."""
        book = self.book(order.key_id)
        qty = min(qty, order.qty - order.filled_qty)
        signed = qty if order.side == "buy" else -qty
        order.filled_qty += qty
        order.notional += qty * price
        order.status = "filled" if order.filled_qty == order.qty else "partially_filled"
        book.cash -= signed * price
        held, avg = book.positions.get(order.symbol, (Decimal(0), Decimal(0)))
        new = held + signed
        if not new:
            book.positions.pop(order.symbol, None)
        else:
            if held and (held > 0) == (signed > 0):
                avg = (held * avg + signed * price) / new
            elif not held or (held > 0) != (new > 0):
                avg = price
            book.positions[order.symbol] = (new, avg)
        event = self._update("fill" if order.status == "filled" else "partial_fill", order)
        event["data"].update(
            {
                "execution_id": str(uuid.uuid4()),
                "price": _num(price),
                "qty": _num(qty),
                "position_qty": _num(new),
            }
        )
        return event

    def _update(self, kind: str, order: FakeOrder) -> dict[str, Any]:
        return {
            "stream": "trade_updates",
            "data": {
                "event": kind,
                "timestamp": _iso(datetime.now(UTC)),
                "order": order.wire(),
            },
        }

    # -- the streams --------------------------------------------------------------------------

    def _on_loop(self, coro: Any) -> None:
        loop = self.loop
        if loop is None:
            coro.close()
            return
        asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    def _broadcast(self, event: dict[str, Any], key_id: str) -> None:
        self._on_loop(self._send_trade(json.dumps(event), key_id))

    async def _send_trade(self, text: str, key_id: str) -> None:
        for ws, key in list(self._trade_sockets.items()):
            if key != key_id:
                continue
            try:
                await ws.send_text(text)
            except Exception:
                self._trade_sockets.pop(ws, None)

    async def _close_all_trade(self) -> None:
        for ws in list(self._trade_sockets):
            self._trade_sockets.pop(ws, None)
            await ws.close()

    async def _trade_stream(self, ws: WebSocket) -> None:
        self.loop = asyncio.get_running_loop()
        if self.trade_stream_down:
            await ws.close(code=1013)
            return
        await ws.accept()
        try:
            msg = json.loads(await ws.receive_text())
            data = msg.get("data", {})
            ok = msg.get("action") == "authenticate" and self._authorized(
                str(data.get("key_id")), str(data.get("secret_key"))
            )
            status = "authorized" if ok else "unauthorized"
            auth = {"stream": "authorization", "data": {"action": "authenticate", "status": status}}
            await ws.send_text(json.dumps(auth))
            if not ok:
                await ws.close()
                return
            msg = json.loads(await ws.receive_text())
            streams = msg.get("data", {}).get("streams", [])
            await ws.send_text(json.dumps({"stream": "listening", "data": {"streams": streams}}))
            if "trade_updates" in streams:
                self._trade_sockets[ws] = str(data.get("key_id"))
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            self._trade_sockets.pop(ws, None)

    async def _send_data(self, msgs: list[dict[str, Any]]) -> None:
        ws = self._data_socket
        if ws is None:
            return
        msgs = [m for m in msgs if m.get("S") in self._subscribed]
        if msgs:
            await ws.send_bytes(msgpack.packb(msgs, datetime=False))

    async def _close_data(self) -> None:
        ws, self._data_socket = self._data_socket, None
        if ws is not None:
            await ws.close()

    async def _data_stream(self, ws: WebSocket) -> None:
        self.loop = asyncio.get_running_loop()
        if self.data_stream_down:
            await ws.close(code=1013)
            return
        await ws.accept()
        self.data_connections += 1
        pack = msgpack.packb
        await ws.send_bytes(pack([{"T": "success", "msg": "connected"}]))
        mine = False
        try:
            msg = msgpack.unpackb(await ws.receive_bytes())
            if msg.get("key") != self.key_id or msg.get("secret") != self.secret_key:
                await ws.send_bytes(pack([{"T": "error", "code": 402, "msg": "auth failed"}]))
                await ws.close()
                return
            if self._data_socket is not None:
                self.refused_406 += 1
                error = {"T": "error", "code": 406, "msg": "connection limit exceeded"}
                await ws.send_bytes(pack([error]))
                await ws.close()
                return
            self._data_socket, mine = ws, True
            await ws.send_bytes(pack([{"T": "success", "msg": "authenticated"}]))
            while True:
                raw = await ws.receive_bytes()
                msg = msgpack.unpackb(raw)
                if msg.get("action") == "subscribe":
                    self._subscribed |= set(msg.get("bars", [])) | set(msg.get("updatedBars", []))
                elif msg.get("action") == "unsubscribe":
                    self._subscribed -= set(msg.get("bars", []))
                ack = {
                    "T": "subscription",
                    "trades": [],
                    "quotes": [],
                    "bars": sorted(self._subscribed),
                    "updatedBars": sorted(self._subscribed),
                }
                await ws.send_bytes(pack([ack]))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if mine and self._data_socket is ws:
                self._data_socket = None


@contextmanager
def alpaca_server(fake: FakeAlpaca | None = None) -> Iterator[tuple[FakeAlpaca, str]]:
    """A :class:`FakeAlpaca` served on a free local port; yields it and its ``http://`` base."""
    fake = fake or FakeAlpaca()
    with serving(fake.app()) as url:
        yield fake, url
