"""Request rates per user and per address, with the ``limits`` library (fixed windows).

In memory in the embedded shape; in Redis when ``FARM_REDIS_URL`` is set, so that every API
process shares the counts. If Redis cannot be reached, requests are let through (and logged):
an outage of the limiter must not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter as AsyncFixedWindow
from limits.errors import StorageError
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from redis.asyncio import ConnectionPool

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
        self._limiter: _Limiter
        if settings.redis_url:
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
        return "redis" if self._redis is not None else "memory"

    async def hit(self, item: RateLimitItem, *key: str) -> int | None:
        """Count one request against ``item`` for ``key`` (e.g. ``"user", user_id``)."""
        if not self.enabled:
            return None
        try:
            if await self._limiter.hit(item, *key):
                return None
            return await self._retry_after(item, *key)
        except StorageError as exc:
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
        except StorageError as exc:
            self._outage(exc)
            return None

    async def close(self) -> None:
        """Release the Redis connections (the limiter's own client)."""
        if self._redis is not None:
            await self._redis.disconnect()

    async def _retry_after(self, item: RateLimitItem, *key: str) -> int:
        stats = await self._limiter.get_window_stats(item, *key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def _outage(self, exc: StorageError) -> None:
        now = time.monotonic()
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning("rate limits are not enforced: their storage failed: %s", exc)
