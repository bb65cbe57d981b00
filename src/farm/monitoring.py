"""``GET /metrics``: this process's counters plus metrics read from the database at scrape time,
right whatever process did the work (backtests run in worker processes): backtests by status
and failure reason, sandbox launches and failures, paper sessions by status, feed lag."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.security.utils import get_authorization_scheme_param
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from farm.deps import ContextDep
from farm.errors import Unauthorized
from farm.metrics import PROCESS_METRICS
from farm.storage.db import Database
from farm.storage.models import BacktestSession, MarketFeed, PaperSession


class DatabaseCollector(Collector):
    """Metrics computed from the database on every scrape (right across processes)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        backtests = GaugeMetricFamily(
            "farm_backtests", "Backtest sessions by status (all kinds).", labels=["status"]
        )
        failed = GaugeMetricFamily(
            "farm_backtests_failed", "Failed backtest sessions by reason.", labels=["reason"]
        )
        launches = CounterMetricFamily(
            "farm_sandbox_launches", "Agent sandboxes launched for backtests (sessions started)."
        )
        crashes = CounterMetricFamily(
            "farm_sandbox_failures",
            "Backtests whose sandboxed run failed after it started, by reason.",
            labels=["reason"],
        )
        paper = GaugeMetricFamily(
            "farm_paper_sessions", "Paper sessions by status.", labels=["status"]
        )
        lag = GaugeMetricFamily(
            "farm_feed_lag_seconds",
            "Seconds since the live feed last published a timestep.",
            labels=["source"],
        )
        status, reason = BacktestSession.status, BacktestSession.failure_reason
        started = BacktestSession.started_at.is_not(None)
        now = datetime.now(UTC)
        with self._db.transaction() as session:
            for name, count in session.execute(select(status, func.count()).group_by(status)):
                backtests.add_metric([name], count)
            by_reason = select(reason, func.count()).where(status == "failed").group_by(reason)
            for why, count in session.execute(by_reason):
                failed.add_metric([why or "unknown"], count)
            launches.add_metric([], session.scalar(select(func.count()).where(started)) or 0)
            for why, count in session.execute(by_reason.where(started)):
                crashes.add_metric([why or "unknown"], count)
            by_status = select(PaperSession.status, func.count()).group_by(PaperSession.status)
            for name, count in session.execute(by_status):
                paper.add_metric([name], count)
            for source, published in session.execute(
                select(MarketFeed.source, MarketFeed.last_published_at)
            ):
                if published is not None:
                    lag.add_metric([source], (now - published).total_seconds())
        yield from (backtests, failed, launches, crashes, paper, lag)


router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
def metrics(context: ContextDep, request: Request) -> Response:
    """Metrics in the Prometheus text format. Never rate-limited; open unless
    ``FARM_METRICS_TOKEN`` is set, then it needs ``Authorization: Bearer <FARM_METRICS_TOKEN>``."""
    expected = context.settings.metrics_token
    if expected is not None:
        _, given = get_authorization_scheme_param(request.headers.get("authorization"))
        if not secrets.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("send Authorization: Bearer <FARM_METRICS_TOKEN>")
    registry = CollectorRegistry(auto_describe=False)
    for collector in PROCESS_METRICS:
        registry.register(collector)
    registry.register(DatabaseCollector(context.db))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
