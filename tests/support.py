"""Helpers every test folder may import: backend URLs, the skip-or-fail rule, free ports."""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get("FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_backend(name: str, problem: str | None) -> None:
    """Skip a test whose backend is unreachable, except under CI=true where that is a failure."""
    if problem is None:
        return
    message = f"{name} is not available ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(f"{message}; these tests run when it is (they are required under CI=true)")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
