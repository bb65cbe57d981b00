"""Leaderboard fixtures: each database with each cache (in-process, real Redis db 15)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from leaderboard_support import Farm, RedisServer, redis_problem

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from support import REDIS_URL, require_backend


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis (db 15), flushed before and after."""
    url = REDIS_URL
    require_backend(f"Redis at {url}", redis_problem(url))
    with redis.Redis.from_url(url) as client:
        client.flushdb()
        yield url
        client.flushdb()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def cache_url(request: pytest.FixtureRequest) -> str | None:
    """No Redis (the in-process cache), then the real Redis."""
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


@pytest.fixture
def client(db_settings: Settings, cache_url: str | None) -> Iterator[TestClient]:
    """Real HTTP through the app on each database with each cache."""
    settings = db_settings.model_copy(update={"redis_url": cache_url})
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def farm(context: Context) -> Farm:
    return Farm(context)


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A second redis-server this test may kill."""
    require_backend("redis-server", None if shutil.which("redis-server") else "not installed")
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
