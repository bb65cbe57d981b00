"""moto's S3 server (``python -m moto.server`` arguments) handling one request at a time.

S3 applies a conditional PUT atomically; moto's threaded server checks ``If-Match`` and stores the
object in separate steps, so two racing compare-and-swaps could both pass there. One request at
a time restores S3's behaviour for the tests that race writers (connections stay threaded).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import moto.server
from werkzeug.serving import run_simple

_LOCK = threading.Lock()


def _one_at_a_time(host: str, port: int, app: Callable[..., Iterable[bytes]], **kw: Any) -> None:
    def serialised(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with _LOCK:
            return list(app(environ, start_response))

    run_simple(host, port, serialised, **kw)


if __name__ == "__main__":
    moto.server.run_simple = _one_at_a_time  # type: ignore[assignment]
    moto.server.main()
