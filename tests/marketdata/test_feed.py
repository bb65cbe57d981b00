"""The live feed replaying real stored bars: each step once, in order, resumed after a restart,
ended cleanly at the end of the data, missing symbols reported; on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.core.bars import Step
from farm.events import MARKET_BARS, Event
from farm.marketdata.fanout import RedisBarBus
from farm.marketdata.importer import import_path
from farm.marketdata.replay import ReplayFeed
from farm.marketdata.store import BarStore
from farm.storage.db import Database
from support import flushed_redis, wait_until

INTERVAL_S = 0.01
LAST_DATE = date(2025, 4, 4)  # the last bar of the shared data


class Recorder:
    """Every ``market.bars`` event a context publishes."""

    def __init__(self, context: Context) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        context.bus.subscribe(MARKET_BARS, self._seen)

    def _seen(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"only {len(self.events)} of {count} steps"
            time.sleep(0.01)


@pytest.fixture
def feed_settings(db_settings: Settings, real_bars: Path) -> Callable[..., Settings]:
    """Settings of a replaying platform over the ten real symbols (one FARM_HOME per test)."""
    shutil.copytree(real_bars, db_settings.bars_dir)

    def make(**overrides: Any) -> Settings:
        # The feed on this process's bus (not in the paper runtime process) to record its steps.
        values = {"feed": "replay", "feed_interval_s": INTERVAL_S, "paper_runtime": False}
        values.update(overrides)
        return db_settings.model_copy(update=values)

    return make


@pytest.fixture
def started() -> Iterator[Callable[[Settings], tuple[Context, Recorder]]]:
    """Start a platform context with a recorder on its bus; every one is closed at the end."""
    contexts: list[Context] = []

    def start(settings: Settings) -> tuple[Context, Recorder]:
        context = Context.build(settings.model_copy(update={"paper_runtime": False}))
        contexts.append(context)
        recorder = Recorder(context)
        context.start()
        return context, recorder

    yield start
    for context in contexts:
        context.close()


def stored_steps(settings: Settings, start: date) -> list[Step]:
    """The steps of every stored symbol (the feed's default universe) from ``start`` on."""
    store = BarStore(settings.bars_dir)
    return list(store.steps([i.symbol for i in store.symbols()], start, LAST_DATE))


def wait_for_state(context: Context, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while context.feed.status().state != state:
        assert time.monotonic() < deadline, context.feed.status()
        time.sleep(0.01)


def test_each_step_is_published_once_in_order_and_a_restart_resumes(
    feed_settings: Callable[..., Settings],
    started: Callable[[Settings], tuple[Context, Recorder]],
) -> None:
    settings = feed_settings()
    expected = stored_steps(settings, LAST_DATE - timedelta(days=365))
    first, seen_first = started(settings)
    seen_first.wait_for(15)
    first.close()
    before = first.feed.status()
    assert before.state == "stopped"
    assert before.steps_published == len(seen_first.events)
    assert before.last_bar_time == seen_first.events[-1]["step"].ts

    # A new process on the same FARM_HOME, even with another start date configured, resumes.
    second, seen_second = started(feed_settings(feed_replay_start=date(2021, 1, 4)))
    seen_second.wait_for(15)
    second.close()

    events = seen_first.events + seen_second.events
    assert [e["step"].ts for e in events] == [s.ts for s in expected[: len(events)]]
    assert [e["step"].bars for e in events] == [s.bars for s in expected[: len(events)]]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["source"] for e in events} == {"replay"}
    after = second.feed.status()
    assert after.steps_published == len(events)
    assert after.bars_published == sum(len(e["step"].bars) for e in events)
    assert after.replay_start == LAST_DATE - timedelta(days=365)
    assert after.last_published_at is not None
    assert after.last_published_at.tzinfo is not None


def test_the_replay_ends_cleanly_at_the_end_of_the_stored_bars(
    feed_settings: Callable[..., Settings],
) -> None:
    start = LAST_DATE - timedelta(days=20)
    settings = feed_settings(feed_replay_start=start)
    expected = stored_steps(settings, start)
    context = Context.build(settings)
    recorder = Recorder(context)
    with TestClient(create_app(settings, context=context)) as client:
        wait_for_state(context, "ended")
        body = client.get("/api/feed").json()
        health = client.get("/health").json()
    assert [e["step"].ts for e in recorder.events] == [s.ts for s in expected]
    assert body["source"] == "replay"
    assert body["state"] == "ended"
    assert body["replayStart"] == start.isoformat()
    assert body["stepsPublished"] == len(expected)
    assert body["barsPublished"] == sum(len(s.bars) for s in expected) == 10 * len(expected)
    assert body["lastBarTime"] == expected[-1].ts.isoformat().replace("+00:00", "Z")
    assert body["symbols"] == [i.symbol for i in BarStore(settings.bars_dir).symbols()]
    assert len(body["symbols"]) == 10
    assert body["missingAtLastStep"] == []
    assert health["backends"]["feed"] == "ok"
    assert health["feed"] == body
    assert health["status"] == "ok"

    # The next start of the feed's process replays the stored bars again (step numbers go on).
    again = Context.build(settings)
    recorder = Recorder(again)
    try:
        again.start()
        recorder.wait_for(len(expected))
        wait_for_state(again, "ended")
        status = again.feed.status()
    finally:
        again.close()
    assert [e["step"].ts for e in recorder.events] == [s.ts for s in expected]
    assert [e["seq"] for e in recorder.events] == list(
        range(len(expected) + 1, 2 * len(expected) + 1)
    )
    assert status.steps_published == 2 * len(expected)

    # With bars imported since, it goes on from where it ended instead.
    store = BarStore(settings.bars_dir)
    spy = store.frame("SPY")
    later = spy.iloc[[-1]].set_axis([spy.index[-1] + timedelta(days=3)]).rename_axis("timestamp")
    store.write_symbol("SPY", pd.concat([spy, later]), "real")
    third = Context.build(settings)
    recorder = Recorder(third)
    try:
        third.start()
        recorder.wait_for(1)
        wait_for_state(third, "ended")
        time.sleep(20 * INTERVAL_S)
    finally:
        third.close()
    assert [e["step"].ts for e in recorder.events] == [later.index[0].to_pydatetime()]
    assert list(recorder.events[0]["step"].bars) == ["SPY"]


def test_symbols_without_a_bar_at_a_step_are_reported(
    db_settings: Settings,
    shared_data: Path,
    tmp_path: Path,
    started: Callable[[Settings], tuple[Context, Recorder]],
) -> None:
    csvs = tmp_path / "csv"
    csvs.mkdir()
    shutil.copy(shared_data / "daily" / "SPY.csv", csvs)
    lines = (shared_data / "daily" / "AAPL.csv").read_text().splitlines()
    gap = "2025-03-31 04:00:00+00:00"
    (csvs / "AAPL.csv").write_text(
        "\n".join(line for line in lines if not line.startswith(gap)) + "\n"
    )
    assert import_path(BarStore(db_settings.bars_dir), csvs).ok
    settings = db_settings.model_copy(
        update={
            "feed": "replay",
            "feed_interval_s": INTERVAL_S,
            "feed_replay_start": date(2025, 3, 27),
        }
    )
    context, recorder = started(settings)
    wait_for_state(context, "ended")
    missing = {e["step"].ts.date().isoformat(): e["missing"] for e in recorder.events}
    assert missing["2025-03-31"] == ["AAPL"]
    assert list(recorder.events[2]["step"].bars) == ["SPY"]  # 03-27, 03-28, then the gap
    assert {d: m for d, m in missing.items() if m} == {"2025-03-31": ["AAPL"]}
    assert len(missing) == 7


def test_a_missing_symbol_at_the_last_step_shows_in_the_status(
    db_settings: Settings,
    shared_data: Path,
    tmp_path: Path,
    started: Callable[[Settings], tuple[Context, Recorder]],
) -> None:
    csvs = tmp_path / "csv"
    csvs.mkdir()
    shutil.copy(shared_data / "daily" / "SPY.csv", csvs)
    lines = (shared_data / "daily" / "QQQ.csv").read_text().splitlines()
    (csvs / "QQQ.csv").write_text("\n".join(lines[:-1]) + "\n")  # no bar on the last day
    assert import_path(BarStore(db_settings.bars_dir), csvs).ok
    settings = db_settings.model_copy(
        update={"feed": "replay", "feed_interval_s": INTERVAL_S, "feed_replay_start": LAST_DATE}
    )
    context, recorder = started(settings)
    wait_for_state(context, "ended")
    assert [e["missing"] for e in recorder.events] == [["QQQ"]]
    assert context.feed.status().missing_at_last_step == ("QQQ",)


def test_off_publishes_nothing_and_says_so(client: TestClient, context: Context) -> None:
    assert context.settings.feed == "off"
    assert client.get("/api/feed").json() == {
        "source": "off",
        "state": "off",
        "message": None,
        "replayStart": None,
        "lastBarTime": None,
        "lastPublishedAt": None,
        "stepsPublished": 0,
        "barsPublished": 0,
        "symbols": [],
        "missingAtLastStep": [],
    }
    health = client.get("/health").json()
    assert health["backends"]["feed"] == "not used here"
    assert health["status"] == "ok"


def test_unknown_configured_symbols_fail_the_feed_with_the_reason(
    feed_settings: Callable[..., Settings],
    started: Callable[[Settings], tuple[Context, Recorder]],
) -> None:
    context, recorder = started(feed_settings(feed_symbols=["SPY", "NOPE"]))
    wait_for_state(context, "failed")
    assert "FARM_FEED_SYMBOLS has unknown symbols: NOPE" in (context.feed.status().message or "")
    assert recorder.events == []


def test_the_replay_clock_paces_steps_and_a_stop_interrupts_its_wait(real_bars: Path) -> None:
    store = BarStore(real_bars)
    interval = 0.05
    feed = ReplayFeed(store, ["SPY", "AAPL"], date(2025, 3, 3), interval)
    stop = threading.Event()
    began = time.monotonic()
    after = None
    for _ in range(6):
        step = feed.next_step(after, stop)
        assert step is not None
        after = step.ts
    assert time.monotonic() - began >= 6 * interval * 0.99
    assert after.date() == date(2025, 3, 10)  # six trading days from Monday 3 March

    slow = ReplayFeed(store, ["SPY"], date(2025, 3, 3), 60)
    threading.Timer(0.2, stop.set).start()
    began = time.monotonic()
    assert slow.next_step(None, stop) is None
    assert time.monotonic() - began < 10


class StreamReader:
    """A paper worker's view of the feed: every step read from the Redis stream."""

    def __init__(self, url: str) -> None:
        self.bus = RedisBarBus(url, "replay")
        self.steps: list[Step] = []
        self.bus.subscribe(MARKET_BARS, lambda event: self.steps.append(event["step"]))
        self.bus.start()


@pytest.mark.redis
def test_farm_feed_fans_every_step_out_to_every_reader_in_order(
    feed_settings: Callable[..., Settings],
) -> None:
    """The `feed` role on FARM_BUS=redis: two readers each get every step from their start on,
    in order, bars exact; a reader that starts later gets the steps after its start."""
    with flushed_redis() as url:
        settings = feed_settings(bus="redis", redis_url=url, paper_runtime=True)
        db = Database(settings.resolved_database_url)
        db.migrate()
        db.dispose()
        expected = stored_steps(settings, LAST_DATE - timedelta(days=365))
        readers = [StreamReader(url), StreamReader(url)]
        context = Context.build(settings, role="feed")
        try:
            context.start()
            wait_until(lambda: len(readers[0].steps) >= 10, 30, "ten steps")
            seen = len(readers[0].steps)  # all published before the late reader starts
            late = StreamReader(url)
            readers.append(late)
            wait_until(lambda: len(late.steps) >= 10, 30, "ten more steps")
        finally:
            context.feed.stop()
            status = context.feed.status()
            context.close()
            for reader in readers:
                reader.bus.close()
        published = expected[: status.steps_published]
        assert readers[0].steps == readers[1].steps == published
        assert late.steps == published[len(published) - len(late.steps) :]
        assert published.index(late.steps[0]) >= seen
