"""The live feed: one per platform, publishing each timestep's bars once on the bus.

A :class:`BarFeed` says where timesteps come from (the replay of stored bars, or Alpaca's
stream); the :class:`FeedRunner` drives it on a thread of its own, publishes every step on
``market.bars`` with the symbols that had no bar in it, and saves its position (the last bar
time published) in the database after each step, so a restarted server resumes where it was.
A step published just before a crash, whose position was not saved yet, is published again after
the restart (at least once): consumers skip bar times they have already seen. A replay that
ended starts a new pass at the next start, unless bars were imported after its end.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from farm.config import Settings
from farm.core.bars import Step
from farm.errors import InvalidInput
from farm.events import MARKET_BARS, EventBus
from farm.marketdata.alpaca import AlpacaFeed
from farm.marketdata.replay import ReplayFeed, default_replay_start
from farm.marketdata.store import BarStore, MinuteStore, normalize_symbol, open_minute_store
from farm.storage.db import Database
from farm.storage.models import MarketFeed, PaperSession, utcnow

log = logging.getLogger("farm.feed")

STOP_TIMEOUT_S = 30.0
ENDED_MESSAGE = (
    "it published every stored bar; the next start of the feed's process (farm up, or farm "
    "feed scaled out) replays them again, or goes on with bars imported since"
)
LIVE_STATUSES = ("starting", "running")


class FeedState(StrEnum):
    """Where the feed is."""

    OFF = "off"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"
    ENDED = "ended"
    FAILED = "failed"


class BarFeed(Protocol):
    """A source of live timesteps (the replay now; the Alpaca stream is a second one)."""

    source: str

    def symbols(self) -> list[str]:
        """The symbols the feed carries: a step without a bar for one reports it missing."""

    def next_step(self, after: datetime | None, stop: threading.Event) -> Step | None:
        """Block until the first step after ``after`` is due and return it; None when the feed
        has no more steps (the end of a replay) or ``stop`` is set."""

    def note(self) -> str | None:
        """What the feed status shows beyond its steps (None: nothing)."""

    def close(self) -> None:
        """Release the feed's connections (after the last ``next_step``)."""


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """What the feed has done, as saved in the database."""

    source: str
    state: FeedState
    message: str | None = None
    replay_start: date | None = None
    symbols: Sequence[str] = ()
    last_bar_time: datetime | None = None
    last_published_at: datetime | None = None
    steps_published: int = 0
    bars_published: int = 0
    missing_at_last_step: Sequence[str] = field(default_factory=tuple)


class FeedRunner:
    """Runs the configured feed on its own thread (nothing at all when ``FARM_FEED=off``)."""

    def __init__(self, db: Database, bars: BarStore, bus: EventBus, settings: Settings) -> None:
        self._db = db
        self._bars = bars
        self._bus = bus
        self._settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._minutes: MinuteStore | None = None  # the Alpaca feed's stored minute bars
        self._pruned: date | None = None  # the day the minute store was last pruned on

    @property
    def source(self) -> str:
        """The configured source: ``replay``, ``alpaca`` or ``off``."""
        return self._settings.feed

    def start(self) -> None:
        """Start publishing in the background, from the saved position if there is one."""
        if self.source == FeedState.OFF or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="farm-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after the step in progress; the saved position is where a restart resumes."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def status(self) -> FeedStatus:
        """The configured feed's saved status."""
        if self.source == FeedState.OFF:
            return FeedStatus(source=self.source, state=FeedState.OFF)
        with self._db.transaction() as session:
            row = session.get(MarketFeed, self.source)
            if row is None:
                return FeedStatus(source=self.source, state=FeedState.STARTING)
            return _status(row)

    # -- the feed's thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            opened = self._open()
            if opened is None:
                self._save(state=FeedState.ENDED, message="nothing to replay: no stored bars")
                return
            feed, after, seq = opened
            try:
                while not self._stop.is_set():
                    step = feed.next_step(after, self._stop)
                    if step is None:
                        break
                    seq += 1
                    missing = [s for s in feed.symbols() if s not in step.bars]
                    event = {"source": self.source, "seq": seq, "step": step, "missing": missing}
                    self._bus.publish(MARKET_BARS, event)
                    self._saved_step(step, seq, missing, feed.note())
                    self._prune_minutes(step.ts.astimezone(UTC).date())
                    after = step.ts
            finally:
                feed.close()
        except Exception as exc:
            log.exception("feed %s failed", self.source)
            self._save(state=FeedState.FAILED, message=f"{type(exc).__name__}: {exc}")
            return
        if self._stop.is_set():
            self._save(state=FeedState.STOPPED, message=None)
        else:
            self._save(state=FeedState.ENDED, message=ENDED_MESSAGE)
            log.info("feed %s ended after the bar of %s", self.source, after)

    def _open(self) -> tuple[BarFeed, datetime | None, int] | None:
        """The replay over the configured symbols, the saved position to resume after and the
        steps published so far; None when there is nothing to replay."""
        if self.source == "alpaca":
            return self._open_alpaca()
        symbols = self._symbols()
        configured = self._settings.feed_replay_start
        with self._db.transaction() as session:
            row = session.get(MarketFeed, self.source)
            if row is None:
                row = _new_row(self.source)
                session.add(row)
            if row.state == FeedState.ENDED and not self._bars_after(symbols, row.last_bar_time):
                log.info("feed %s: the last pass ended at %s; replaying again", self.source,
                         row.last_bar_time)  # fmt: skip
                row.last_bar_time = None  # a new pass (the step numbers go on)
                _end_previous_pass(session)
            if row.last_bar_time is None:  # nothing published yet: the configuration applies
                row.replay_start = configured or default_replay_start(self._bars, symbols)
            elif configured is not None and configured != row.replay_start:
                log.warning(
                    "feed %s resumes after %s; FARM_FEED_REPLAY_START=%s applies to a new replay",
                    self.source,
                    row.last_bar_time,
                    configured,
                )
            row.symbols = symbols
            row.state, row.message = FeedState.RUNNING, None
            start, after, seq = row.replay_start, row.last_bar_time, row.steps_published
        if start is None:
            return None
        log.info("feed %s: %d symbols from %s, after %s", self.source, len(symbols), start, after)
        feed = ReplayFeed(self._bars, symbols, start, self._settings.feed_interval_s)
        return feed, after, seq

    def _bars_after(self, symbols: Sequence[str], ts: datetime | None) -> bool:
        """Whether the store has a bar of ``symbols`` after ``ts`` (imported since)."""
        infos = [info for s in symbols if (info := self._bars.info(s)) is not None]
        return ts is None or any(info.last > ts for info in infos)

    def _open_alpaca(self) -> tuple[BarFeed, datetime | None, int]:
        """Alpaca's stream, resuming after the saved position (backfilled from there), its
        minute bars stored as they are published."""
        with self._db.transaction() as session:
            row = session.get(MarketFeed, self.source)
            if row is None:
                row = _new_row(self.source)
                session.add(row)
            row.state, row.message = FeedState.RUNNING, None
            after, seq = row.last_bar_time, row.steps_published
        self._minutes = open_minute_store(self._settings)
        return AlpacaFeed(self._settings, self._live_symbols, store=self._minutes), after, seq

    def _prune_minutes(self, today: date) -> None:
        """Once a day, delete the stored minute days no session can read again: those before
        yesterday and before the first bar of every session starting or running (a restarted
        session re-warms on the minutes from its first bar; one starting reads those since
        its runtime's last step, at most a day back)."""
        if self._minutes is None or self._pruned == today:
            return
        try:
            self._prune(self._minutes, today)
        except Exception:  # the feed goes on; the next step tries again
            log.warning("feed %s: pruning the minute store failed", self.source, exc_info=True)
            return
        self._pruned = today

    def _prune(self, minutes: MinuteStore, today: date) -> None:
        with self._db.transaction() as session:
            first = session.scalar(
                select(func.min(PaperSession.first_bar_time)).where(
                    PaperSession.status.in_(LIVE_STATUSES)
                )
            )
        yesterday = today - timedelta(days=1)
        keep_from = yesterday if first is None else min(yesterday, first.astimezone(UTC).date())
        if deleted := minutes.prune(keep_from):
            log.info(
                "feed %s: deleted the minute bars of %d day(s) before %s",
                self.source,
                len(deleted),
                keep_from,
            )

    def _live_symbols(self) -> list[str]:
        """``FARM_FEED_SYMBOLS`` and the symbols of every session starting or running."""
        wanted = {normalize_symbol(s) for s in self._settings.feed_symbols}
        with self._db.transaction() as session:
            for symbols in session.scalars(
                select(PaperSession.symbols).where(PaperSession.status.in_(LIVE_STATUSES))
            ):
                wanted.update(symbols)
        return sorted(wanted)

    def _symbols(self) -> list[str]:
        configured = self._settings.feed_symbols
        if not configured:
            return [info.symbol for info in self._bars.symbols()]
        symbols = list(dict.fromkeys(normalize_symbol(s) for s in configured))
        unknown = [s for s in symbols if self._bars.info(s) is None]
        if unknown:
            raise InvalidInput(f"FARM_FEED_SYMBOLS has unknown symbols: {', '.join(unknown)}")
        return symbols

    def _saved_step(self, step: Step, seq: int, missing: list[str], note: str | None) -> None:
        """Save the position a published step reached."""
        with self._db.transaction() as session:
            row = session.get(MarketFeed, self.source)
            assert row is not None
            row.last_bar_time = step.ts
            row.last_published_at = utcnow()
            row.steps_published = seq
            row.bars_published += len(step.bars)
            row.missing_at_last_step = missing
            row.message = note

    def _save(self, **values: Any) -> None:
        with self._db.transaction() as session:
            row = session.get(MarketFeed, self.source)
            if row is None:
                row = _new_row(self.source)
                session.add(row)
            for name, value in values.items():
                setattr(row, name, value)


def _end_previous_pass(session: Session) -> None:
    """Ask the runtime to stop the sessions that traded the ended pass: every bar of the new
    one is older than theirs, so none would ever reach them."""
    session.execute(
        update(PaperSession)
        .where(
            PaperSession.status.in_(LIVE_STATUSES),
            PaperSession.first_bar_time.is_not(None),
            PaperSession.stop_requested.is_(False),
        )
        .values(
            stop_requested=True,
            failure_reason="replay_restarted",
            failure_message=(
                "the replay feed ended and started a new pass, whose bars are older than this "
                "session's; start a new session to trade it"
            ),
        )
    )


def _new_row(source: str) -> MarketFeed:
    return MarketFeed(
        source=source,
        state=FeedState.STARTING,
        symbols=[],
        missing_at_last_step=[],
        steps_published=0,
        bars_published=0,
    )


def _status(row: MarketFeed) -> FeedStatus:
    return FeedStatus(
        source=row.source,
        state=FeedState(row.state),
        message=row.message,
        replay_start=row.replay_start,
        symbols=tuple(row.symbols),
        last_bar_time=row.last_bar_time,
        last_published_at=row.last_published_at,
        steps_published=row.steps_published,
        bars_published=row.bars_published,
        missing_at_last_step=tuple(row.missing_at_last_step),
    )
