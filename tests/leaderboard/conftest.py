"""Leaderboard fixtures: each database with each cache (in-process, real Redis db 15)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from leaderboard_support import Farm, RedisServer

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from support import flushed_redis, require_backend


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The real Redis (db 15), flushed before and after."""
    with flushed_redis() as url:
        yield url


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
