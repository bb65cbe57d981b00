"""The embedded live feed: stored bars replayed on an accelerated clock."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from datetime import date, datetime, timedelta

from farm.core.bars import Step
from farm.marketdata.store import BarStore

#: Calendar days of bars read at a time, so a long replay never holds all of its bars.
WINDOW_DAYS = 31
#: The default replay starts this long before the last stored bar.
DEFAULT_SPAN = timedelta(days=365)


def default_replay_start(bars: BarStore, symbols: Sequence[str]) -> date | None:
    """One year before the last bar of ``symbols``; None when none has a bar."""
    infos = [info for s in symbols if (info := bars.info(s)) is not None]
    if not infos:
        return None
    return max(info.last for info in infos).date() - DEFAULT_SPAN


class ReplayFeed:
    """Steps of ``symbols`` from ``start`` to the last stored bar, one every ``interval_s``
    wall seconds (a :class:`~farm.marketdata.feed.BarFeed`)."""

    source = "replay"

    def __init__(
        self, bars: BarStore, symbols: Sequence[str], start: date, interval_s: float
    ) -> None:
        self._bars = bars
        self._symbols = list(symbols)
        self._start = start
        self._interval = interval_s
        self._due: float | None = None
        self._buffer: deque[Step] = deque()

    def symbols(self) -> list[str]:
        return list(self._symbols)

    def note(self) -> None:
        """Nothing beyond the steps."""
        return None

    def close(self) -> None:
        """Nothing to release."""

    def next_step(self, after: datetime | None, stop: threading.Event) -> Step | None:
        """The first step after ``after`` (from ``start`` when None), once its tick is due;
        None at the end of the stored bars or when ``stop`` is set."""
        now = time.monotonic()
        self._due = now + self._interval if self._due is None else max(self._due, now)
        if stop.wait(self._due - now):
            return None
        self._due += self._interval
        while self._buffer and after is not None and self._buffer[0].ts <= after:
            self._buffer.popleft()
        if not self._buffer:
            self._buffer.extend(self._read_after(after))
        return self._buffer.popleft() if self._buffer else None

    def _read_after(self, after: datetime | None) -> list[Step]:
        """The steps after ``after`` in the first window of dates that has any."""
        last = max(
            (info.last.date() for s in self._symbols if (info := self._bars.info(s))),
            default=None,
        )
        lo = self._start if after is None else max(self._start, after.date())
        while last is not None and lo <= last:
            hi = lo + timedelta(days=WINDOW_DAYS - 1)
            steps = [
                s for s in self._bars.steps(self._symbols, lo, hi) if after is None or s.ts > after
            ]
            if steps:
                return steps
            lo = hi + timedelta(days=1)
        return []
