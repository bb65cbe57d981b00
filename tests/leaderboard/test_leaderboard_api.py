"""The leaderboard API over real HTTP, on SQLite and PostgreSQL, with each cache."""

from __future__ import annotations

import json
import math
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from leaderboard_support import METRICS, Farm, daily_returns
from sqlalchemy import select

from farm.context import Context
from farm.core.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio
from farm.errors import NotFound
from farm.events import BACKTEST_COMPLETED
from farm.leaderboard.cache import Board
from farm.leaderboard.schemas import BoardType, Metric, Timeframe
from farm.leaderboard.service import record_backtest_result
from farm.storage.models import BacktestSession, LeaderboardEntry, utcnow

SMA = (Path(__file__).resolve().parents[2] / "examples/agents/sma_cross.py").read_bytes()
BACKTEST = "type=backtest&timeframe=all_time"


def board(client: TestClient, query: str = BACKTEST, **params: Any) -> dict[str, Any]:
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    response = client.get(f"/api/leaderboard?{query}{extra}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["source"] == "cache"
    return body


def names(body: dict[str, Any]) -> list[str]:
    return [row["agentName"] for row in body["leaderboard"]]


def test_defaults_are_an_empty_valid_headline_board(client: TestClient) -> None:
    response = client.get("/api/leaderboard")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["type"], body["inSample"]) == ("headline", False)
    assert body["leaderboard"] == []
    assert body["source"] == "cache"
    assert body["updated_at"]


def test_agents_rank_by_each_metric_best_first(client: TestClient, farm: Farm) -> None:
    a, b, c = farm.agent("a"), farm.agent("b"), farm.agent("c")
    farm.result(a, sharpeRatio=1.0, maxDrawdown=0.30, finalValue=105_000.0, winRate=0.6)
    farm.result(b, sharpeRatio=2.5, maxDrawdown=0.10, finalValue=120_000.0, winRate=0.4)
    farm.result(c, sharpeRatio=1.7, maxDrawdown=0.20, finalValue=90_000.0, winRate=None)

    by_sharpe = board(client, metric="sharpe")
    assert names(by_sharpe) == ["b", "c", "a"]
    assert [r["rank"] for r in by_sharpe["leaderboard"]] == [1, 2, 3]
    top = by_sharpe["leaderboard"][0]
    assert top["metric"] == 2.5
    assert top["metricType"] == "sharpe"
    assert top["agentId"] == b
    assert top["userId"] == "alice"
    assert top["totalPnl"] == 20_000.0
    assert top["maxDrawdown"] == 0.10
    assert top["totalTrades"] == 20
    assert names(board(client, metric="max_drawdown")) == ["b", "c", "a"]  # lower is better
    assert names(board(client, metric="total_pnl")) == ["b", "a", "c"]
    assert names(board(client, metric="win_rate")) == ["a", "b"]  # c has no win rate
    assert names(board(client, metric="returns", limit=2)) == ["a", "b"]  # ties: earlier first


def test_one_row_per_agent_with_its_latest_evaluation(client: TestClient, farm: Farm) -> None:
    a, b = farm.agent("a"), farm.agent("b")
    farm.result(a, sharpeRatio=1.0, age=timedelta(hours=5))
    farm.result(b, sharpeRatio=2.0, age=timedelta(hours=5))
    latest = farm.result(a, sharpeRatio=3.0, age=timedelta(hours=1))
    farm.result(a, sharpeRatio=9.0, age=timedelta(hours=9))  # older: does not replace
    rows = board(client, metric="sharpe")["leaderboard"]
    assert [(r["agentName"], r["metric"]) for r in rows] == [("a", 3.0), ("b", 2.0)]
    assert rows[0]["sessionId"] == latest


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [
        ("daily", ["fresh"]),
        ("weekly", ["fresh", "days"]),
        ("monthly", ["fresh", "days", "weeks"]),
        ("all_time", ["fresh", "days", "weeks", "months"]),
    ],
)
def test_timeframes_select_evaluations_completed_within_the_window(
    client: TestClient, farm: Farm, timeframe: str, expected: list[str]
) -> None:
    for name, age in [
        ("months", timedelta(days=90)),
        ("weeks", timedelta(days=20)),
        ("days", timedelta(days=3)),
        ("fresh", timedelta(hours=2)),
    ]:
        farm.result(farm.agent(name), age=age, sharpeRatio=1.0)
    body = board(client, f"type=backtest&timeframe={timeframe}", metric="sharpe")
    assert sorted(names(body)) == sorted(expected)
    assert [r["rank"] for r in body["leaderboard"]] == list(range(1, len(expected) + 1))


def test_ties_break_by_earlier_submission(client: TestClient, farm: Farm) -> None:
    late = farm.agent("late")
    early = farm.agent("early", submitted_at=farm.clock - timedelta(days=30))
    middle = farm.agent("middle", owner="bob", submitted_at=farm.clock - timedelta(days=3))
    for agent in (late, middle, early):
        farm.result(agent, sharpeRatio=1.25, maxDrawdown=0.05)
    for metric in ("sharpe", "max_drawdown"):
        assert names(board(client, metric=metric)) == ["early", "middle", "late"]
    rank = client.get(f"/api/leaderboard/rank/{middle}?{BACKTEST}&metric=sharpe").json()
    assert (rank["rank"], rank["score"], rank["total"]) == (2, 1.25, 3)


def test_a_deleted_agent_leaves_every_board(
    client: TestClient, context: Context, farm: Farm, make_user: Any
) -> None:
    alice = make_user("alice")
    response = client.post(
        "/api/agents/submit",
        headers=alice,
        data={"agentName": "doomed"},
        files={"file": ("agent.py", SMA, "text/x-python")},
    )
    doomed = response.json()["agentId"]
    keeper = farm.agent("keeper", owner="bob")
    farm.result(doomed, sharpeRatio=3.0)
    farm.result(keeper, sharpeRatio=1.0)
    assert names(board(client, metric="sharpe")) == ["doomed", "keeper"]
    assert names(board(client, "type=backtest&timeframe=daily", metric="sharpe")) == [
        "doomed",
        "keeper",
    ]

    assert client.delete(f"/api/agents/{doomed}", headers=alice).status_code == 200
    for timeframe in ("daily", "all_time"):
        body = board(client, f"type=backtest&timeframe={timeframe}", metric="sharpe")
        assert names(body) == ["keeper"]
        assert body["leaderboard"][0]["rank"] == 1
    gone = client.get(f"/api/leaderboard/rank/{doomed}?{BACKTEST}&metric=sharpe")
    assert gone.status_code == 404
    with context.db.transaction() as session:
        left = session.scalars(select(LeaderboardEntry.agent_id)).all()
    assert set(left) == {keeper}


def test_synthetic_and_custom_results_are_never_ranked(client: TestClient, farm: Farm) -> None:
    real, synthetic, custom = farm.agent("real"), farm.agent("synthetic"), farm.agent("custom")
    farm.result(real, sharpeRatio=0.5)
    farm.result(synthetic, data_source="synthetic", sharpeRatio=5.0)
    farm.result(custom, kind="custom", sharpeRatio=5.0)
    farm.result(real, kind="custom", sharpeRatio=9.0)  # a custom run does not replace it
    for timeframe in ("daily", "all_time"):
        body = board(client, f"type=backtest&timeframe={timeframe}", metric="sharpe")
        assert [(r["agentName"], r["metric"]) for r in body["leaderboard"]] == [("real", 0.5)]
    for agent in (synthetic, custom):
        response = client.get(f"/api/leaderboard/rank/{agent}?{BACKTEST}&metric=sharpe")
        assert response.status_code == 404


def test_entries_carry_probabilistic_and_deflated_sharpe(client: TestClient, farm: Farm) -> None:
    returns = daily_returns(seed=11)
    first = farm.agent("first")
    farm.result(first, returns=returns)
    for n in range(4):
        farm.agent(f"more {n}")  # five agents submitted by alice: five trials
    bob = farm.agent("bob's", owner="bob")
    farm.result(bob, returns=returns)
    latest = farm.agent("latest")
    farm.result(latest, returns=returns)

    rows = {r["agentName"]: r for r in board(client, metric="sharpe")["leaderboard"]}
    psr = probabilistic_sharpe_ratio(returns)
    assert psr is not None
    for row in rows.values():
        assert row["probabilisticSharpe"] == pytest.approx(psr)
    assert rows["first"]["deflatedSharpe"] == pytest.approx(psr)  # her only agent then
    assert rows["bob's"]["deflatedSharpe"] == pytest.approx(psr)
    six = deflated_sharpe_ratio(returns, 6)
    assert six is not None
    assert rows["latest"]["deflatedSharpe"] == pytest.approx(six)
    assert six < psr


def test_results_without_returns_rank_without_psr(client: TestClient, farm: Farm) -> None:
    farm.result(farm.agent("short"), returns=[0.01], sharpeRatio=1.0)
    (row,) = board(client, metric="sharpe")["leaderboard"]
    assert row["probabilisticSharpe"] is None
    assert row["deflatedSharpe"] is None


@pytest.mark.parametrize(
    ("query", "allowed"),
    [
        ("type=live", ["headline", "backtest", "paper_trading"]),
        (
            "metric=alpha",
            ["returns", "sharpe", "win_rate", "total_pnl", "sortino", "calmar", "max_drawdown"],
        ),
        ("timeframe=yearly", ["daily", "weekly", "monthly", "all_time"]),
        ("limit=1001", ["1000"]),
        ("limit=0", ["1"]),
        ("limit=ten", ["integer"]),
    ],
)
def test_invalid_parameters_are_400_listing_the_allowed_values(
    client: TestClient, query: str, allowed: list[str]
) -> None:
    paths = ["/api/leaderboard"]
    if not query.startswith("limit"):
        paths.append("/api/leaderboard/rank/some-agent")
    for path in paths:
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid_input"
        assert set(body) >= {"error", "message", "timestamp"}
        for value in allowed:
            assert value in body["message"]


def test_rank_reports_rank_score_and_total(client: TestClient, farm: Farm) -> None:
    agents = [farm.agent(f"a{i}") for i in range(4)]
    for i, agent in enumerate(agents):
        farm.result(agent, sharpeRatio=float(i), age=timedelta(days=10 * i, hours=1))
    response = client.get(f"/api/leaderboard/rank/{agents[1]}?{BACKTEST}&metric=sharpe")
    assert response.status_code == 200
    assert response.json() == {
        "agentId": agents[1],
        "status": "ranked",
        "rank": 3,
        "score": 1.0,
        "total": 4,
        "type": "backtest",
        "inSample": True,
        "metricType": "sharpe",
        "timeframe": "all_time",
        "source": "cache",
    }
    weekly = client.get(f"/api/leaderboard/rank/{agents[0]}?type=backtest&timeframe=weekly")
    assert (weekly.json()["rank"], weekly.json()["total"]) == (1, 1)


def test_rank_is_404_for_unknown_or_unranked_agents(client: TestClient, farm: Farm) -> None:
    old = farm.agent("old")
    farm.result(old, age=timedelta(days=40))
    unranked = farm.agent("never evaluated")
    for agent, query in [
        ("no-such-agent", BACKTEST),
        (unranked, BACKTEST),
        (old, "type=backtest&timeframe=monthly"),
        (old, "type=paper_trading&timeframe=all_time"),
    ]:
        response = client.get(f"/api/leaderboard/rank/{agent}?{query}")
        assert response.status_code == 404, (agent, query)
        assert response.json()["error"] == "not_found"
        assert agent in response.json()["message"]


def test_health_reports_the_cache_in_use(client: TestClient, cache_url: str | None) -> None:
    backends = client.get("/health").json()["backends"]
    expected = "cache:memory" if cache_url is None else "cache:redis"
    assert backends[expected] == "ok"


def test_results_with_non_finite_figures_are_never_ranked(
    client: TestClient, farm: Farm, context: Context
) -> None:
    honest, nan_returns, infinite = farm.agent("honest"), farm.agent("nan"), farm.agent("inf")
    farm.result(honest)
    farm.result(nan_returns, returns=[0.01, math.nan, -0.02, 0.005])
    # Recorded through the hook as the backtest service does, but never stored: JSON has no inf.
    row = BacktestSession(
        id=str(uuid.uuid4()),
        agent_id=infinite,
        user_id=farm.user("alice"),
        kind="standard",
        status="completed",
        params={},
        data_source="real",
        metrics={**METRICS, "totalReturn": math.inf, "sortinoRatio": -math.inf},
        finished_at=utcnow(),
    )
    with context.db.transaction() as session:
        record_backtest_result(session, row, daily_returns())
    context.bus.publish(
        BACKTEST_COMPLETED,
        {"sessionId": row.id, "agentId": infinite, "userId": row.user_id, "kind": "standard"},
    )
    for metric in ("sharpe", "sortino", "returns", "max_drawdown"):
        assert names(board(client, metric=metric)) == ["honest"]


def test_one_agents_row_is_the_row_its_board_lists(client: TestClient, farm: Farm) -> None:
    agents = [farm.agent(f"a{i}") for i in range(3)]
    for i, agent in enumerate(agents):
        farm.result(agent, sharpeRatio=float(i), age=timedelta(days=10 * i, hours=1))
    listed = {row["agentId"]: row for row in board(client, metric="sharpe")["leaderboard"]}
    service = client.app.state.context.leaderboard  # type: ignore[attr-defined]
    backtest = Board(BoardType.BACKTEST, Timeframe.ALL_TIME)
    for agent in agents:
        assert json.loads(service.row(backtest, Metric.SHARPE, agent)) == listed[agent]
    with pytest.raises(NotFound):
        service.row(backtest, Metric.SHARPE, "no-such-agent")
