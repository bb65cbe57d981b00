"""Request rates per user and per address, with the ``limits`` library (fixed windows).

In memory in the embedded shape; in Redis when ``FARM_REDIS_URL`` is set, so that every API
process shares the counts (on a Redis Cluster with ``FARM_REDIS_CLUSTER``: each count is one key,
so every command stays in one slot). If Redis cannot be reached, requests are let through (and
logged): an outage of the limiter must not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol
from urllib.parse import urlsplit

from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from redis.asyncio import ConnectionPool, RedisCluster
from redis.exceptions import RedisClusterException

from farm.config import Settings

log = logging.getLogger("farm.ratelimit")

REDIS_TIMEOUT_S = 0.5
OUTAGE_LOG_EVERY_S = 60.0


class _Limiter(Protocol):
    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool: ...

    async def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool: ...

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats: ...


class _InMemory:
    """The synchronous in-memory limiter behind the async interface (each call takes µs)."""

    def __init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self._limiter.hit(item, *identifiers, cost=cost)

    async def test(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        return self._limiter.test(item, *identifiers, cost=cost)

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self._limiter.get_window_stats(item, *identifiers)


class RateLimits:
    """The three limits: per user, per address (requests without a valid token) and failed
    token attempts per address. ``hit`` and ``blocked`` answer ``None`` when the request may
    go on, else the seconds until it may be retried."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limits
        self.user = parse(settings.rate_limit_user)
        self.address = parse(settings.rate_limit_address)
        self.auth_failures = parse(settings.rate_limit_auth_failures)
        self._redis: ConnectionPool | None = None
        self._cluster: RedisCluster | None = None
        self._limiter: _Limiter
        if settings.redis_url and settings.redis_cluster:
            cluster = RedisClusterStorage(
                _cluster_uri(settings.redis_url),
                implementation="redispy",
                wrap_exceptions=True,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                ssl=settings.redis_url.startswith("rediss://"),
            )
            assert isinstance(cluster.bridge, RedispyBridge)
            self._cluster = cluster.bridge.storage  # closed with the app
            self._limiter = AsyncFixedWindow(cluster)
        elif settings.redis_url:
            self._redis = ConnectionPool.from_url(
                settings.redis_url,
                socket_timeout=REDIS_TIMEOUT_S,
                socket_connect_timeout=REDIS_TIMEOUT_S,
            )
            storage = RedisStorage(
                "async+" + settings.redis_url,
                implementation="redispy",
                wrap_exceptions=True,
                connection_pool=self._redis,  # type: ignore[arg-type]  # limits types options narrowly
            )
            self._limiter = AsyncFixedWindow(storage)
        else:
            self._limiter = _InMemory()
        self._outage_logged = -math.inf

    @property
    def backend(self) -> str:
        """Where the counts are kept."""
        if self._cluster is not None:
            return "redis-cluster"
        return "redis" if self._redis is not None else "memory"

    async def hit(self, item: RateLimitItem, *key: str) -> int | None:
        """Count one request against ``item`` for ``key`` (e.g. ``"user", user_id``)."""
        if not self.enabled:
            return None
        try:
            if await self._limiter.hit(item, *key):
                return None
            return await self._retry_after(item, *key)
        except (StorageError, RedisClusterException) as exc:
            self._outage(exc)
            return None

    async def blocked(self, item: RateLimitItem, *key: str) -> int | None:
        """Whether ``key`` is already over ``item``, without counting anything."""
        if not self.enabled:
            return None
        try:
            if await self._limiter.test(item, *key):
                return None
            return await self._retry_after(item, *key)
        except (StorageError, RedisClusterException) as exc:
            self._outage(exc)
            return None

    async def close(self) -> None:
        """Release the Redis connections (the limiter's own client)."""
        if self._redis is not None:
            await self._redis.disconnect()
        if self._cluster is not None:
            await self._cluster.aclose()

    async def _retry_after(self, item: RateLimitItem, *key: str) -> int:
        stats = await self._limiter.get_window_stats(item, *key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _outage(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning("rate limits are not enforced: their storage failed: %s", exc)


def _cluster_uri(url: str) -> str:
    """``limits``' URI of the cluster whose node ``url`` names (``redis[s]://[auth@]host:port``;
    the client discovers the other nodes, and a cluster has no database number)."""
    node = urlsplit(url).netloc
    return f"async+redis+cluster://{node}"
