"""Event fixtures: a real Redis (a server, or a private Redis Cluster) under a fresh prefix (the
migrated `db` is in tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from streams_support import Target

from support import redis_cluster, require_redis


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


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private three-master Redis Cluster for this test process (deleted with it)."""
    folder: Path = tmp_path_factory.mktemp("redis-cluster")
    with redis_cluster(folder) as cluster:
        yield cluster.url


@pytest.fixture(params=["server", "cluster"])
def target(request: pytest.FixtureRequest, redis_url: str) -> Target:
    """The test Redis, then a Redis Cluster."""
    if request.param == "cluster":
        return Target(request.getfixturevalue("cluster_url"), cluster=True)
    return Target(redis_url)
