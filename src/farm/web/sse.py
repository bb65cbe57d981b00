"""Server-sent events: a page's live state, polled off the event loop and sent on change."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import Request
from fastapi.responses import StreamingResponse

Poll = Callable[[], tuple[str, dict[str, Any], bool]]
"""Returns (event name, JSON data, whether it is the last event)."""

KEEPALIVE_S = 15.0


def event_stream(request: Request, poll: Poll, interval_s: float = 0.5) -> StreamingResponse:
    """An ``text/event-stream`` sending ``poll()``'s event whenever its data changes, until
    ``poll`` says it was the last one or the browser goes away."""

    async def events() -> AsyncIterator[str]:
        sent: dict[str, Any] | None = None
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            name, data, last = await anyio.to_thread.run_sync(poll)
            if data != sent:
                sent = data
                quiet_since = time.monotonic()
                yield f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
            elif time.monotonic() - quiet_since > KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keep-alive\n\n"
            if last:
                return
            await anyio.sleep(interval_s)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
