"""Alpaca's live minute bars as the platform's feed (``FARM_FEED=alpaca``, issue 10).

One data connection for the whole platform (Alpaca allows one per key; a second is refused with
406): alpaca-py's ``StockDataStream`` with the operator's key (``FARM_ALPACA_KEY_ID``,
``FARM_ALPACA_SECRET_KEY``) on ``FARM_ALPACA_DATA_URL`` + ``/v2/{FARM_ALPACA_FEED}``, run on one
thread. alpaca-py reconnects it with backoff after a drop (and after a 406, which a server that
has not reaped the old connection yet may send). It is subscribed to the union of
``FARM_FEED_SYMBOLS`` and the running sessions' symbols, re-read every ``REFRESH_S``.

Bars are gathered by minute: a minute is published once every subscribed symbol has its bar, or
``grace_s`` after its first bar came (the symbols without one are reported missing, as the replay
reports them). A corrected bar (``updatedBars``) replaces the minute's bar while it is waiting
and is counted once it was published (a published bar is never changed). Minutes with no bar at
all while the market is open are counted as gaps. Market hours come from ``GET /v2/clock``, and
warm-up bars from the historical bars endpoint (:func:`history_steps`).

Backfill: each time the data connection is (re)established, publication waits while the bars
of the subscribed symbols since the last minute published are read from the historical bars
endpoint (``FARM_ALPACA_HISTORY_URL``); the minutes missed while the stream was down are then
published in order before the new live ones, each once (a minute already published is never
published again). A restarted feed resumes the same way after its saved position. Each step is
stored (``store``: the minute bar store) before it is published, so the paper runtime can
catch its sessions up on it after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from alpaca.data.enums import DataFeed
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.data.live.stock import StockDataStream
from alpaca.data.models import Bar as AlpacaBar
from alpaca.data.models import BarSet
from alpaca.data.requests import StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.models import Clock

from farm.config import Settings
from farm.core.bars import Bar, Step
from farm.marketdata.store import MinuteStore

log = logging.getLogger("farm.feed.alpaca")

REFRESH_S = 2.0
"""How often the subscribed symbols are brought up to the running sessions'."""
CLOCK_S = 60.0
"""How often the market clock is read."""
POLL_S = 0.02
MINUTE = timedelta(minutes=1)


def _credentials(settings: Settings) -> tuple[str, str]:
    if not settings.alpaca_key_id or settings.alpaca_secret_key is None:
        raise ValueError("FARM_FEED=alpaca needs FARM_ALPACA_KEY_ID and FARM_ALPACA_SECRET_KEY")
    return settings.alpaca_key_id, settings.alpaca_secret_key.get_secret_value()


def data_stream_url(settings: Settings) -> str:
    """The data stream's URL: ``FARM_ALPACA_DATA_URL`` + ``/v2/{FARM_ALPACA_FEED}``."""
    return f"{settings.alpaca_data_url.rstrip('/')}/v2/{settings.alpaca_feed}"


def _bar(bar: AlpacaBar) -> Bar:
    return Bar(bar.open, bar.high, bar.low, bar.close, bar.volume)


def _history_client(settings: Settings) -> StockHistoricalDataClient:
    key, secret = _credentials(settings)
    return StockHistoricalDataClient(key, secret, url_override=settings.alpaca_history_url)


def _minutes(
    client: StockHistoricalDataClient,
    feed: str,
    symbols: Sequence[str],
    start: datetime,
    end: datetime | None = None,
) -> dict[datetime, dict[str, Bar]]:
    """The historical minute bars of ``symbols`` from ``start`` (to ``end`` or now), by minute
    (alpaca-py follows ``next_page_token``)."""
    request = StockBarsRequest(
        symbol_or_symbols=list(symbols),
        timeframe=TimeFrame.Minute,
        start=start,
        end=end,
        feed=DataFeed(feed),
    )
    result: Any = client.get_stock_bars(request)
    assert isinstance(result, BarSet)
    minutes: dict[datetime, dict[str, Bar]] = {}
    for symbol, bars in result.data.items():
        for bar in bars:
            minutes.setdefault(bar.timestamp, {})[symbol] = _bar(bar)
    return minutes


class _Stream(StockDataStream):
    """alpaca-py's data stream, telling the feed each time its connection is (re)established
    (after the authentication, before the subscription is sent)."""

    def __init__(self, connected: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._connected = connected

    async def _start_ws(self) -> None:
        await super()._start_ws()
        self._connected()


class AlpacaFeed:
    """Minute steps from Alpaca's data stream (a :class:`~farm.marketdata.feed.BarFeed`).

    ``wanted`` returns the symbols to carry (called every ``REFRESH_S`` on the feed's thread).
    """

    source = "alpaca"

    def __init__(
        self,
        settings: Settings,
        wanted: Callable[[], Sequence[str]],
        grace_s: float = 10.0,
        store: MinuteStore | None = None,
    ) -> None:
        key, secret = _credentials(settings)
        self._grace = grace_s
        self._wanted = wanted
        self._store = store
        self._feed = settings.alpaca_feed
        self._stream = _Stream(
            self._on_connect,
            key,
            secret,
            feed=DataFeed(settings.alpaca_feed),
            url_override=data_stream_url(settings),
        )
        self._history = _history_client(settings)
        self._clock = TradingClient(
            key, secret, paper=True, url_override=settings.alpaca_trading_url
        )
        self._lock = threading.Lock()
        self._pending: dict[datetime, dict[str, Bar]] = {}
        self._first_seen: dict[datetime, float] = {}
        self._subscribed: set[str] = set()
        self._published: datetime | None = None
        self._connects = 0  # connections established; publication waits for their backfill
        self._filled = 0  # ... the connections backfilled so far
        self._thread: threading.Thread | None = None
        self._refreshed = 0.0
        self._clock_read = 0.0
        self.market_open: bool | None = None
        self.next_open: datetime | None = None
        self.corrections = 0  # corrected bars of minutes already published
        self.late = 0  # bars of minutes already published
        self.gaps = 0  # open-market minutes without any bar
        self.backfilled = 0  # minutes published from the historical bars after a (re)connect
        self.backfill_failures = 0

    # -- BarFeed --------------------------------------------------------------------------------

    def symbols(self) -> list[str]:
        return sorted(self._subscribed)

    def next_step(self, after: datetime | None, stop: threading.Event) -> Step | None:
        """The next complete (or overdue) minute after ``after``; None once ``stop`` is set."""
        if self._published is None or (after is not None and after > self._published):
            self._published = after
        while not stop.is_set():
            now = time.monotonic()
            if now >= self._refreshed + REFRESH_S:
                self._refreshed = now
                self._refresh()
            if now >= self._clock_read + CLOCK_S:
                self._clock_read = now
                self._read_clock()
            if self._filled < self._connects:
                self._backfill()
            step = self._due(now)
            if step is not None:
                if self._store is not None:
                    self._store.append([step])
                return step
            stop.wait(POLL_S)
        return None

    def note(self) -> str | None:
        """What the feed status shows beyond the steps (market hours, gaps, corrections)."""
        parts = []
        if self.market_open is False:
            parts.append(f"market closed until {self.next_open:%Y-%m-%d %H:%M %Z}")
        if self.gaps:
            parts.append(f"{self.gaps} minute(s) without any bar")
        if self.corrections:
            parts.append(f"{self.corrections} corrected bar(s) after publication")
        if self.late:
            parts.append(f"{self.late} late bar(s) dropped")
        if self.backfilled:
            parts.append(f"{self.backfilled} minute(s) backfilled after a reconnect")
        if self.backfill_failures:
            parts.append(f"{self.backfill_failures} backfill(s) failed")
        return "; ".join(parts) or None

    def close(self) -> None:
        """Close the data connection and its thread."""
        loop = self._stream._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._stream.stop_ws(), loop).result(10)
        if self._thread is not None:
            self._thread.join(10)

    # -- inside -------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Subscribe the symbols newly wanted (the connection starts with the first ones)."""
        new = sorted(set(self._wanted()) - self._subscribed)
        if not new:
            return
        self._subscribed |= set(new)
        self._stream.subscribe_bars(self._on_bar, *new)
        self._stream.subscribe_updated_bars(self._on_updated_bar, *new)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._stream.run, name="alpaca-data", daemon=True
            )
            self._thread.start()
        log.info("alpaca feed subscribed to %s", ", ".join(new))

    def _on_connect(self) -> None:
        """On the stream's thread: a connection was established (before it subscribes)."""
        with self._lock:
            self._connects += 1

    def _backfill(self) -> None:
        """Queue the minutes since the last one published from the historical bars (the
        minutes still waiting keep the bars the stream sent)."""
        connects, since = self._connects, self._published
        if since is not None and self._subscribed:
            try:
                minutes = _minutes(self._history, self._feed, sorted(self._subscribed), since)
            except Exception as exc:  # the live bars go on; the lost minutes count as gaps
                log.warning("alpaca feed: no backfill after %s: %s", since, exc)
                self.backfill_failures += 1
                minutes = {}
            overdue = time.monotonic() - self._grace  # history is final: due at once
            with self._lock:
                for ts in sorted(t for t in minutes if t > since):
                    pending = self._pending.setdefault(ts, {})
                    for symbol, bar in minutes[ts].items():
                        pending.setdefault(symbol, bar)
                    self._first_seen[ts] = min(self._first_seen.get(ts, overdue), overdue)
                    self.backfilled += 1
        with self._lock:
            self._filled = connects

    def _read_clock(self) -> None:
        try:
            clock = self._clock.get_clock()
        except Exception as exc:  # the clock is informative: the bars still flow
            log.warning("alpaca clock not read: %s", exc)
            return
        assert isinstance(clock, Clock)
        self.market_open, self.next_open = clock.is_open, clock.next_open

    async def _on_bar(self, bar: AlpacaBar | dict[Any, Any]) -> None:
        self._take(bar, corrected=False)

    async def _on_updated_bar(self, bar: AlpacaBar | dict[Any, Any]) -> None:
        self._take(bar, corrected=True)

    def _take(self, bar: AlpacaBar | dict[Any, Any], *, corrected: bool) -> None:
        assert isinstance(bar, AlpacaBar)  # parsed: the stream is not in raw mode
        ts = bar.timestamp
        with self._lock:
            if self._published is not None and ts <= self._published:
                if corrected:
                    self.corrections += 1
                else:
                    self.late += 1
                return
            self._pending.setdefault(ts, {})[bar.symbol] = _bar(bar)
            self._first_seen.setdefault(ts, time.monotonic())

    def _due(self, now: float) -> Step | None:
        with self._lock:
            if not self._pending or self._filled < self._connects:
                return None
            ts = min(self._pending)
            bars = self._pending[ts]
            complete = self._subscribed.issubset(bars)
            if not complete and now < self._first_seen[ts] + self._grace:
                return None
            del self._pending[ts]
            del self._first_seen[ts]
            last, self._published = self._published, ts
        if last is not None and ts - last > MINUTE and self.market_open is not False:
            self.gaps += (ts - last) // MINUTE - 1
        return Step(ts, dict(bars))


def history_steps(
    settings: Settings, symbols: Sequence[str], end: datetime, n: int, *, days: int = 7
) -> list[Step]:
    """The last ``n`` minute steps of ``symbols`` before ``end`` from Alpaca's historical bars
    (the warm-up of a session on the Alpaca feed)."""
    if n <= 0 or not symbols:
        return []
    client = _history_client(settings)
    minutes = _minutes(client, settings.alpaca_feed, symbols, end - timedelta(days=days), end)
    return [Step(ts, minutes[ts]) for ts in sorted(minutes) if ts < end][-n:]
