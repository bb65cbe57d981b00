"""The Alpaca feed against the local Alpaca server, through alpaca-py's StockDataStream."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from alpaca_server import FakeAlpaca, alpaca_server
from farm.config import Settings
from farm.core.bars import Bar, Step
from farm.events import InProcessBus
from farm.marketdata.alpaca import BACKFILL_MAX, AlpacaFeed, data_stream_url, history_steps
from farm.marketdata.feed import FeedRunner
from farm.marketdata.store import BarStore, MinuteStore, open_minute_store
from farm.storage.db import Database
from farm.storage.models import Agent, PaperAccount, PaperSession, User
from farm.storage.objects import LocalRoot

# Yesterday at 15:00 UTC: recent enough for a backfill (BACKFILL_MAX), one date for 9 hours.
T0 = datetime.combine(datetime.now(UTC).date() - timedelta(days=1), dt_time(15), UTC)


ONE = Decimal(1)


def _minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


@pytest.fixture
def fake() -> Iterator[tuple[FakeAlpaca, str]]:
    with alpaca_server(FakeAlpaca(prices={"AAPL": Decimal(100)})) as served:
        yield served


def _settings(tmp_path: Path, server: FakeAlpaca, url: str) -> Settings:
    return Settings(
        home=tmp_path,
        feed="alpaca",
        alpaca_key_id=server.key_id,
        alpaca_secret_key=server.secret_key,
        alpaca_trading_url=url,
        alpaca_history_url=url,
        alpaca_data_url=url.replace("http://", "ws://"),
    )


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Reader:
    """Runs the feed's ``next_step`` loop on a thread, as the FeedRunner does."""

    def __init__(self, feed: AlpacaFeed, after: datetime | None = None) -> None:
        self.feed = feed
        self.after = after  # the feed's saved position
        self.steps: list[Step] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        after = self.after
        while (step := self.feed.next_step(after, self.stop)) is not None:
            self.steps.append(step)
            after = step.ts

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.feed.close()


def test_minutes_missing_bars_corrections_and_a_drop(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    server, url = fake
    settings = _settings(tmp_path, server, url)
    assert data_stream_url(settings).endswith("/v2/iex")
    reader = Reader(AlpacaFeed(settings, lambda: ["AAPL", "MSFT"], grace_s=0.5))
    try:
        _until(lambda: server.subscribed == {"AAPL", "MSFT"})
        server.push_bar("AAPL", _minute(1), 100.0)
        server.push_bar("MSFT", _minute(1), 50.0)
        _until(lambda: len(reader.steps) == 1)
        assert set(reader.steps[0].bars) == {"AAPL", "MSFT"}
        server.push_bar("AAPL", _minute(2), 101.0)  # MSFT has no bar this minute
        server.push_bar("MSFT", _minute(1), 51.0, updated=True)  # a correction, published
        _until(lambda: len(reader.steps) == 2)
        assert set(reader.steps[1].bars) == {"AAPL"}
        assert reader.feed.symbols() == ["AAPL", "MSFT"]  # so MSFT is reported missing

        server.push_bar("AAPL", _minute(3), 102.0)
        server.push_bar("AAPL", _minute(3), 102.5, updated=True)  # corrected while waiting
        server.push_bar("MSFT", _minute(3), 52.0)
        _until(lambda: len(reader.steps) == 3)
        assert reader.steps[2].bars["AAPL"].close == 102.5

        server.drop_data_stream()  # alpaca-py reconnects with backoff, on the one connection
        _until(lambda: server.data_connected and server.subscribed == {"AAPL", "MSFT"})
        server.push_bar("AAPL", _minute(6), 103.0)
        server.push_bar("MSFT", _minute(6), 53.0)
        _until(lambda: len(reader.steps) == 4)
        assert reader.steps[3].ts == _minute(6)
        assert server.data_connections == 2
        note = reader.feed.note() or ""
        assert "2 minute(s) without any bar" in note
        assert "1 corrected bar(s) after publication" in note
        assert [s.ts for s in reader.steps] == [_minute(n) for n in (1, 2, 3, 6)]
    finally:
        reader.close()


def test_a_second_data_connection_is_refused_with_406(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    server, url = fake
    settings = _settings(tmp_path, server, url)
    first = Reader(AlpacaFeed(settings, lambda: ["AAPL"], grace_s=0.2))
    second: Reader | None = None
    try:
        _until(lambda: server.data_connected)
        second = Reader(AlpacaFeed(settings, lambda: ["AAPL"], grace_s=0.2))
        _until(lambda: server.refused_406 >= 1)
        server.push_bar("AAPL", _minute(1), 100.0)
        _until(lambda: len(first.steps) == 1)
        assert second.steps == []  # the platform runs one feed: a second one gets nothing
    finally:
        if second is not None:
            second.close()
        first.close()


def test_warm_up_bars_come_from_the_historical_endpoint(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    server, url = fake
    for n in range(5):
        ts = _minute(n).isoformat().replace("+00:00", "Z")
        bar = {
            "t": ts,
            "o": 1.0 + n,
            "h": 2.0 + n,
            "l": 0.5,
            "c": 1.5 + n,
            "v": 10,
            "n": 1,
            "vw": 1.2,
        }
        server.history.setdefault("AAPL", []).append(bar)
    steps = history_steps(_settings(tmp_path, server, url), ["AAPL"], _minute(4), 3)
    assert [s.ts for s in steps] == [_minute(1), _minute(2), _minute(3)]
    assert steps[-1].bars["AAPL"].close == 4.5
    assert any(p == "/v2/stocks/bars" for _, _, p in server.requests)


def test_the_bars_endpoint_pages_as_alpaca_does(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    """Alpaca's /v2/stocks/bars shape: bars by symbol, sorted by symbol then time, ``limit``
    bars a page and a ``next_page_token`` while more remain; alpaca-py follows it."""
    server, url = fake
    for n in range(3):
        server.push_bar("MSFT", _minute(n), 50.0 + n)
        server.push_bar("AAPL", _minute(n), 100.0 + n)
    headers = {"APCA-API-KEY-ID": server.key_id, "APCA-API-SECRET-KEY": server.secret_key}
    query = {"symbols": "MSFT,AAPL", "timeframe": "1Min", "limit": "4", "feed": "iex"}
    with httpx.Client(base_url=url, headers=headers) as client:
        first = client.get("/v2/stocks/bars", params=query).json()
        assert [b["c"] for b in first["bars"]["AAPL"]] == [100.0, 101.0, 102.0]
        assert [b["t"] for b in first["bars"]["MSFT"]] == [T0.isoformat().replace("+00:00", "Z")]
        token = first["next_page_token"]
        assert token
        second = client.get("/v2/stocks/bars", params=query | {"page_token": token}).json()
        assert [b["c"] for b in second["bars"]["MSFT"]] == [51.0, 52.0]
        assert "AAPL" not in second["bars"]
        assert second["next_page_token"] is None
        refused = client.get("/v2/stocks/bars", params=query | {"timeframe": "1Day"})
        assert refused.status_code == 422
        assert set(refused.json()) == {"code", "message"}

    # More than one page of alpaca-py's 10,000 bars: it follows the token.
    for symbol in ("AAPL", "MSFT"):
        server.history[symbol] = [
            {"t": _minute(n).isoformat().replace("+00:00", "Z"), "o": 1.0, "h": 1.0,
             "l": 1.0, "c": float(n), "v": 1, "n": 1, "vw": 1.0}
            for n in range(5_001)
        ]  # fmt: skip
    before = len(server.requests)
    steps = history_steps(_settings(tmp_path, server, url), ["AAPL", "MSFT"], _minute(6_000), 9_999)
    assert len(server.requests) - before == 2
    assert [s.ts for s in steps] == [_minute(n) for n in range(5_001)]
    assert all(set(s.bars) == {"AAPL", "MSFT"} for s in steps)


def test_bars_missed_during_a_drop_are_backfilled_once_in_order(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    """The stream is down while the server emits five minutes: after the reconnect they come
    from the historical bars, in order, before the new live ones, each once, and every
    published minute is in the minute store."""
    server, url = fake
    store = MinuteStore(LocalRoot(tmp_path / "minute"))
    settings = _settings(tmp_path, server, url)
    reader = Reader(AlpacaFeed(settings, lambda: ["AAPL", "MSFT"], grace_s=5.0, store=store))
    try:
        _until(lambda: server.subscribed == {"AAPL", "MSFT"})
        for n in (1, 2, 3):
            server.push_bar("AAPL", _minute(n), 100.0 + n)
            server.push_bar("MSFT", _minute(n), 50.0 + n)
        _until(lambda: len(reader.steps) == 3)
        server.push_bar("AAPL", _minute(4), 104.0)  # MSFT's bar of minute 4 is lost with ...
        _until(lambda: len(server.history["AAPL"]) == 4)
        server.drop_data_stream(stay_down=True)  # ... the connection
        for n in (4, 5, 6, 7, 8):
            server.push_bar("MSFT", _minute(n), 50.0 + n)
            if n > 4:
                server.push_bar("AAPL", _minute(n), 100.0 + n)
        server.restore_data_stream()
        _until(lambda: server.data_connected and server.subscribed == {"AAPL", "MSFT"})
        for n in (9, 10):  # live, while the backfill may still be under way
            server.push_bar("AAPL", _minute(n), 100.0 + n)
            server.push_bar("MSFT", _minute(n), 50.0 + n)
        _until(lambda: len(reader.steps) >= 10)
        time.sleep(0.3)  # nothing more comes
        assert [s.ts for s in reader.steps] == [_minute(n) for n in range(1, 11)]
        assert all(set(s.bars) == {"AAPL", "MSFT"} for s in reader.steps)
        assert [s.bars["MSFT"].close for s in reader.steps] == [50.0 + n for n in range(1, 11)]
        note = reader.feed.note() or ""
        assert "minute(s) backfilled after a reconnect" in note
        assert reader.feed.backfilled >= 5  # 4 to 8 (9 and 10 too if they were stored in time)
        assert "without any bar" not in note
        assert server.data_connections == 2
        stored = store.steps(["MSFT", "AAPL"], T0.date(), T0.date())
        assert stored == reader.steps
    finally:
        reader.close()


def test_a_backfill_after_a_long_outage_goes_back_seven_days_only(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    """A feed restarted ten days after its saved position reads the historical bars of the last
    BACKFILL_MAX only (memory and replay stay bounded) and says so."""
    server, url = fake
    saved = T0 - timedelta(days=9)
    for symbol in ("AAPL", "MSFT"):
        server.history[symbol] = [
            {"t": t.isoformat().replace("+00:00", "Z"), "o": 1.0, "h": 1.0, "l": 1.0,
             "c": 1.0, "v": 1, "n": 1, "vw": 1.0}
            for t in (saved + timedelta(minutes=1), T0)
        ]  # fmt: skip
    feed = AlpacaFeed(_settings(tmp_path, server, url), lambda: ["AAPL", "MSFT"], grace_s=5.0)
    reader = Reader(feed, after=saved)
    try:
        _until(lambda: len(reader.steps) >= 1)
        time.sleep(0.3)  # nothing more comes
        assert [s.ts for s in reader.steps] == [T0], "the minute 9 days back was not read"
        assert f"limited to the last {BACKFILL_MAX}" in (feed.note() or "")
    finally:
        reader.close()


def test_the_feed_prunes_the_minute_days_no_running_session_can_read(
    tmp_path: Path, fake: tuple[FakeAlpaca, str]
) -> None:
    """Once a day the feed deletes the stored minute days before yesterday and before the first
    bar of every session starting or running: the days a restarted session re-warms on stay."""
    server, url = fake
    settings = _settings(tmp_path, server, url).model_copy(update={"feed_symbols": ["AAPL"]})
    db = Database(settings.resolved_database_url)
    db.migrate()
    store = open_minute_store(settings)
    store.append(
        [Step(T0 - timedelta(days=d), {"AAPL": Bar(1, 1, 1, 1, 1)}) for d in range(5, 0, -1)]
    )
    with db.transaction() as session:
        session.add(User(id="u", name="u"))
        session.flush()
        session.add(
            Agent(id="a", user_id="u", name="a", strategy_class="S", code_sha256="0" * 64,
                  code_bytes=1, artifact_key="agents/a.py")
        )  # fmt: skip
        session.add(PaperAccount(id="p", user_id="u", name="p", initial_cash=ONE, cash=ONE))
        session.flush()
        session.add(
            PaperSession(id="s", agent_id="a", user_id="u", account_id="p", status="running",
                         symbols=["AAPL"], initial_cash=ONE, first_bar_time=T0 - timedelta(days=3))
        )  # fmt: skip

    def days() -> list[int]:  # stored days, as days before T0's
        return sorted((T0.date() - d).days for d in _stored_days(settings))

    def run_until_published(minute: int) -> None:
        runner = FeedRunner(db, BarStore(settings.bars_dir), InProcessBus(), settings)
        runner.start()
        try:
            _until(lambda: server.subscribed == {"AAPL"})
            server.push_bar("AAPL", _minute(minute), 100.0)
            _until(lambda: runner.status().steps_published == minute)
        finally:
            runner.stop()

    try:
        run_until_published(1)
        assert days() == [0, 1, 2, 3]  # the session re-warms from three days ago
        with db.transaction() as session:
            session.get(PaperSession, "s").status = "stopped"  # type: ignore[union-attr]
        run_until_published(2)
        assert days() == [0, 1]
    finally:
        db.dispose()


def _stored_days(settings: Settings) -> list[date]:
    return [date.fromisoformat(p.stem) for p in (settings.bars_dir / "minute").glob("*.parquet")]
