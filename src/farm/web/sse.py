"""Server-sent events: a page's live state, polled off the event loop and sent on change."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

Poll = Callable[[], tuple[str, dict[str, Any], bool]]
"""Returns (event name, JSON data, whether it is the last event)."""

KEEPALIVE_S = 15.0
MAX_STREAM_S = 600.0
"""A stream ends after this long; the browser's EventSource then reconnects by itself."""
STREAMS_PER_USER = 8
BUSY_RETRY_MS = 60_000
"""When a user already holds STREAMS_PER_USER streams, the browser retries after this long."""


class StreamSlots:
    """How many live streams each user holds open in this process, at most ``per_user``."""

    def __init__(self, per_user: int = STREAMS_PER_USER) -> None:
        self._per_user = per_user
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, owner: str) -> bool:
        """Take one of the owner's slots; False when they are all in use."""
        with self._lock:
            if self._open[owner] >= self._per_user:
                return False
            self._open[owner] += 1
            return True

    def give_back(self, owner: str) -> None:
        with self._lock:
            self._open[owner] -= 1
            if self._open[owner] <= 0:
                del self._open[owner]


def event_stream(
    request: Request, owner: str, poll: Poll, interval_s: float = 0.5
) -> StreamingResponse:
    """An ``text/event-stream`` sending ``poll()``'s event whenever its data changes, until
    ``poll`` says it was the last one, the browser goes away or MAX_STREAM_S have passed.
    An owner holding STREAMS_PER_USER streams already gets a ``busy`` event instead."""
    state = request.app.state
    if getattr(state, "stream_slots", None) is None:
        state.stream_slots = StreamSlots()
    slots: StreamSlots = state.stream_slots

    async def events() -> AsyncIterator[str]:
        if not slots.take(owner):  # taken here, where the finally below always gives it back
            yield f"retry: {BUSY_RETRY_MS}\nevent: busy\ndata: {{}}\n\n"
            return
        try:
            sent: dict[str, Any] | None = None
            started = quiet_since = time.monotonic()
            while not await request.is_disconnected():
                name, data, last = await anyio.to_thread.run_sync(poll)
                if data != sent:
                    sent = data
                    quiet_since = time.monotonic()
                    yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
                elif time.monotonic() - quiet_since > KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                if last or time.monotonic() - started > MAX_STREAM_S:
                    return
                await anyio.sleep(interval_s)
        finally:
            slots.give_back(owner)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
