"""Event fixtures: a real Redis under a fresh prefix (the migrated `db` is in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from support import require_redis


@pytest.fixture
def redis_url() -> str:
    """The test Redis (skips, or fails under CI=true, when it is not there)."""
    return require_redis()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A stream prefix of this test's own; its keys are deleted afterwards."""
    name = f"test:{uuid.uuid4().hex[:12]}:"
    yield name
    with redis.Redis.from_url(redis_url) as client:
        for key in client.scan_iter(match=f"{name}*"):
            client.delete(key)
