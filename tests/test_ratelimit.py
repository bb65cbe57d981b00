"""Rate limits per user, per address and on failed tokens, in memory and on the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.ratelimit import RateLimits
from farm.users.service import create_user
from support import flushed_redis, free_port, redis_cluster

Headers = dict[str, str]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def storage(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Where the counts are kept: this process, or the real Redis (flushed around the test)."""
    if request.param == "memory":
        yield None
        return
    with flushed_redis() as url:
        yield url


Serve = Callable[..., Any]


@pytest.fixture
def serve(tmp_path: Path, storage: str | None) -> Serve:
    """``serve(**settings)``: a TestClient on an app with those rate settings (same FARM_HOME)."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[TestClient]:
        settings = Settings(
            home=tmp_path / "farm", backtest_workers=0, redis_url=storage, **overrides
        )
        with TestClient(create_app(settings)) as client:
            yield client

    return start


def token_of(client: TestClient, name: str) -> Headers:
    context: Context = client.app.state.context  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        _, token = create_user(session, name)
    return {"Authorization": f"Bearer {token}"}


def assert_limited(response: Any, fragment: str) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"] == "rate_limited"
    assert fragment in body["message"]
    assert set(body) == {"error", "message", "timestamp"}
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_requests_without_a_token_are_limited_per_address(serve: Serve) -> None:
    with serve(rate_limit_address="3/minute") as client:
        for _ in range(3):
            assert client.get("/api/leaderboard").status_code == 200
        assert_limited(
            client.get("/api/leaderboard"),
            "too many requests from your address (limit: 3 per 1 minute); retry in",
        )
        assert_limited(client.get("/api/agents/list"), "requests from your address")
        for _ in range(5):
            assert client.get("/health").status_code == 200  # never limited


def test_requests_with_a_token_are_limited_per_user_not_per_address(serve: Serve) -> None:
    with serve(rate_limit_user="3/minute", rate_limit_address="3/minute") as client:
        alice, bob = token_of(client, "alice"), token_of(client, "bob")
        for _ in range(3):
            assert client.get("/api/agents/list", headers=alice).status_code == 200
        assert_limited(
            client.get("/api/agents/list", headers=alice), "too many requests with your API token"
        )
        assert_limited(
            client.get("/api/leaderboard", headers=alice), "too many requests with your API token"
        )
        for _ in range(3):  # same address, other user; and the address's own allowance
            assert client.get("/api/agents/list", headers=bob).status_code == 200
            assert client.get("/api/leaderboard").status_code == 200


def test_after_too_many_bad_tokens_every_token_from_the_address_waits(serve: Serve) -> None:
    with serve(rate_limit_auth_failures="3/2 seconds") as client:
        alice = token_of(client, "alice")
        bad = {"Authorization": "Bearer farm_guess"}
        for _ in range(3):
            assert client.get("/api/agents/list", headers=bad).status_code == 401
        assert_limited(
            client.get("/api/agents/list", headers=bad),
            "too many invalid API tokens from your address",
        )
        # Even the right token gets no answer from this address until the window passes...
        assert_limited(
            client.get("/api/agents/list", headers=alice),
            "too many invalid API tokens from your address",
        )
        assert client.get("/api/leaderboard").status_code == 200  # ...tokenless reads do
        time.sleep(2.1)
        assert client.get("/api/agents/list", headers=alice).status_code == 200


@pytest.fixture(params=["redis", "cluster"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Settings, list[int]]]:
    """The settings of API processes sharing one Redis, and the ports of its cluster's masters:
    a server (flushed around the test; no masters) or a private three-master Redis Cluster."""
    home = tmp_path / "farm"
    limit = "2/minute"
    if request.param == "redis":
        with flushed_redis() as url:
            yield Settings(home=home, backtest_workers=0, redis_url=url, rate_limit_user=limit), []
        return
    with redis_cluster(tmp_path / "cluster") as cluster:
        yield (
            Settings(
                home=home,
                backtest_workers=0,
                redis_url=cluster.url,
                redis_cluster=True,
                rate_limit_user=limit,
            ),
            cluster.ports,
        )


@pytest.mark.redis
def test_api_processes_sharing_redis_share_the_counts(
    shared: tuple[Settings, list[int]],
) -> None:
    settings, masters = shared
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        expected = "redis-cluster" if masters else "redis"
        for client in (one, two):
            assert client.app.state.rate_limits.backend == expected  # type: ignore[attr-defined]
        users = [token_of(one, f"user{n}") for n in range(6)]  # keys in several cluster slots
        for user in users:
            assert one.get("/api/agents/list", headers=user).status_code == 200
            assert two.get("/api/agents/list", headers=user).status_code == 200
            for client in (one, two):
                assert_limited(
                    client.get("/api/agents/list", headers=user),
                    "too many requests with your API token",
                )
    if masters:  # the counts are spread over the masters, as their slots say
        counted = []
        for port in masters:
            with redis.Redis(port=port) as master:
                counted.append(len(master.keys("LIMITS*")))
        assert sum(counted) == len(users)
        assert sum(1 for c in counted if c) >= 2, counted


def test_an_unreachable_redis_lets_requests_through_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    settings = Settings(
        home=tmp_path / "farm", backtest_workers=0, redis_url=down, rate_limit_user="1/minute"
    )
    with TestClient(create_app(settings)) as client:
        alice = token_of(client, "alice")
        for _ in range(3):
            assert client.get("/api/agents/list", headers=alice).status_code == 200
    assert "rate limits are not enforced: their storage failed" in caplog.text


def test_an_unreachable_redis_cluster_lets_requests_through_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"redis://127.0.0.1:{free_port()}/0"
    limits = RateLimits(Settings(redis_url=down, redis_cluster=True, rate_limit_user="1/minute"))

    async def hits() -> list[int | None]:
        try:
            return [await limits.hit(limits.user, "user", "alice") for _ in range(3)]
        finally:
            await limits.close()

    assert limits.backend == "redis-cluster"
    assert asyncio.run(hits()) == [None, None, None]
    assert "rate limits are not enforced: their storage failed" in caplog.text


def test_a_bad_rate_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="couldn't parse rate limit string"):
        Settings(rate_limit_user="lots")
