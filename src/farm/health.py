"""``GET /health``: version and the health of each backend in use."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from farm import __version__
from farm.context import Context
from farm.deps import ContextDep
from farm.marketdata.feed import FeedState
from farm.marketdata.schemas import FeedOut

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """Overall status, and each backend's."""

    status: str
    version: str
    backends: dict[str, str]
    feed: FeedOut


@router.get("/health")
def health(context: ContextDep) -> Health:
    """``ok`` when every backend answers, ``degraded`` otherwise."""
    backends = {
        f"database:{context.db.backend}": "ok" if context.db.ping() else "down",
        "artifacts": "ok" if context.artifacts.healthy() else "down",
        f"events:{context.settings.bus}": "ok" if context.bus.healthy() else "down",
        "sandbox": _sandbox_health(context),
    }
    cache, state = context.leaderboard.cache.health()
    backends[cache] = state
    feed = FeedOut.of(context.feed.status())
    backends["feed"] = _feed_health(feed)
    overall = "ok" if all(v in HEALTHY for v in backends.values()) else "degraded"
    return Health(status=overall, version=__version__, backends=backends, feed=feed)


HEALTHY = {"ok", "not used here"}


def _feed_health(feed: FeedOut) -> str:
    if feed.state == FeedState.OFF:
        return "not used here"
    return f"down: {feed.message}" if feed.state == FeedState.FAILED else "ok"


def _sandbox_health(context: Context) -> str:
    settings = context.settings
    backtests = context.role in ("all", "backtest") and settings.backtest_workers > 0
    paper = context.role == "paper" and settings.paper_runtime and settings.feed != "off"
    if not (backtests or paper):
        return "not used here"
    return "ok" if context.sandbox_refusal is None else f"down: {context.sandbox_refusal}"
