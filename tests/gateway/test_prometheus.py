"""GET /metrics counts what happened: requests per route template, errors, cache reads and
backtests (read from the database, whichever process ran them)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from backtest.service_support import app_settings, start, submit, wait_for
from farm.app import create_app
from farm.config import Settings
from farm.storage.models import Agent, PaperAccount, PaperSession
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[2]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_errors_and_cache_reads_are_counted_per_route_template(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "farm", backtest_workers=0, feed="off", rate_limit_address="6/minute"
    )
    with TestClient(create_app(settings)) as client:
        before = scrape(client)
        assert client.get("/api/leaderboard").status_code == 200
        assert client.get("/api/leaderboard").status_code == 200
        for agent in ("one", "two", "three"):
            assert client.get(f"/api/agents/{agent}").status_code == 401
        assert client.get("/no/such/path").status_code == 404
        assert client.get("/api/leaderboard").status_code == 429
        after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    board = {"method": "GET", "route": "/api/leaderboard"}
    assert delta("farm_http_requests_total", status="200", **board) == 2
    assert delta("farm_http_request_duration_seconds_count", **board) == 2
    assert delta("farm_http_errors_total", status="200", **board) == 0
    agent = {"method": "GET", "route": "/api/agents/{agent_id}", "status": "401"}
    assert delta("farm_http_requests_total", **agent) == 3  # the template, not three paths
    assert delta("farm_http_errors_total", **agent) == 3
    unmatched = {"method": "GET", "route": "<unmatched>", "status": "404"}
    assert delta("farm_http_errors_total", **unmatched) == 1
    assert not any("/api/agents/one" in str(labels) for _, labels in after)
    limited = {"method": "GET", "route": "<unmatched>", "status": "429"}
    assert delta("farm_http_errors_total", **limited) == 1  # refused before routing
    # The first read of the board rebuilt it (a miss); the second was served by the cache.
    assert delta("farm_leaderboard_cache_requests_total", result="miss") == 1
    assert delta("farm_leaderboard_cache_requests_total", result="hit") == 1


def test_metrics_are_never_rate_limited_and_may_need_their_own_token(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        feed="off",
        rate_limit_address="2/minute",
        metrics_token="scrape-me",
    )
    with TestClient(create_app(settings)) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert "FARM_METRICS_TOKEN" in refused.json()["message"]
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        for _ in range(5):
            scrape(client, Authorization="Bearer scrape-me")


def test_every_answer_carries_a_request_id(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=0, feed="off")
    with TestClient(create_app(settings)) as client:
        given = client.get("/health", headers={"X-Request-ID": "trace-42"})
        assert given.headers["X-Request-ID"] == "trace-42"
        made = client.get("/api/agents/list")
        assert made.status_code == 401
        assert len(made.headers["X-Request-ID"]) == 32
        other = client.get("/api/agents/list")
        assert other.headers["X-Request-ID"] != made.headers["X-Request-ID"]
        hostile = client.get("/health", headers={"X-Request-ID": b"a b\xff" + b"x" * 500})
        assert len(hostile.headers["X-Request-ID"]) == 32  # replaced, not echoed


@pytest.mark.sandbox
def test_backtests_and_sandbox_launches_are_read_from_the_database(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(tmp_path, real_bars)
    with TestClient(create_app(settings)) as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            _, token = create_user(session, "alice")
        headers = {"Authorization": f"Bearer {token}"}
        code = (REPO / "examples/agents/sma_cross.py").read_bytes()
        agent_id = submit(client, headers, code)
        body = {"symbols": ["SPY"], "startDate": "2023-01-03", "endDate": "2023-03-31"}
        session_id = start(client, headers, agent_id, **body).json()["sessionId"]
        assert wait_for(client, headers, session_id)["status"] == "completed"
        crash = (
            b"import backtrader as bt\nclass S(bt.Strategy):\n    def next(self):\n        1/0\n"
        )
        crashed = start(client, headers, submit(client, headers, crash, "crash"), **body)
        assert wait_for(client, headers, crashed.json()["sessionId"])["status"] == "failed"
        samples = scrape(client)
    # The custom run and the crash; standard evaluations of both agents may add to them.
    assert value(samples, "farm_backtests", status="completed") >= 1
    assert value(samples, "farm_backtests_failed", reason="agent_error") >= 1
    assert value(samples, "farm_sandbox_launches_total") >= 2
    assert value(samples, "farm_sandbox_failures_total", reason="agent_error") >= 1


def test_paper_sessions_are_counted_by_status(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=0, feed="off")
    with TestClient(create_app(settings)) as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            user, _ = create_user(session, "alice")
            agent = Agent(
                id=str(uuid.uuid4()),
                user_id=user.id,
                name="a",
                strategy_class="S",
                code_sha256="0" * 64,
                code_bytes=1,
                artifact_key="agents/a.py",
            )
            account = PaperAccount(
                id=str(uuid.uuid4()),
                user_id=user.id,
                name="acc",
                initial_cash=Decimal(100_000),
                cash=Decimal(100_000),
            )
            session.add_all([agent, account])
            session.flush()
            for status in ("running", "running", "failed"):
                session.add(
                    PaperSession(
                        id=str(uuid.uuid4()),
                        agent_id=agent.id,
                        user_id=user.id,
                        account_id=account.id,
                        status=status,
                        symbols=["SPY"],
                        initial_cash=Decimal(100_000),
                    )
                )
        samples = scrape(client)
    assert value(samples, "farm_paper_sessions", status="running") == 2
    assert value(samples, "farm_paper_sessions", status="failed") == 1
