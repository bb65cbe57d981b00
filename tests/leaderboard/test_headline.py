"""The headline board ranks forward results: a memorising agent cannot reach its top.

Every test runs on SQLite and PostgreSQL, with the in-process cache and the real Redis.
"""

from __future__ import annotations

import math
import random
from datetime import timedelta
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from leaderboard_support import Farm, RedisServer

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.core.metrics import sharpe_ratio
from farm.leaderboard import repository
from farm.leaderboard.schemas import BoardType, Metric
from farm.storage.models import utcnow

N = Settings().leaderboard_min_forward_bars
HEADLINE = "/api/leaderboard"
# What the memorising agent's standard evaluation reported (issue 8).
MEMORISED = {
    "sharpeRatio": 8.59,
    "sortinoRatio": 14.2,
    "calmarRatio": 310.0,
    "maxDrawdown": 0.02,
    "totalReturn": 60.6,
    "finalValue": 6_160_000.0,
    "winRate": 0.97,
}


def get(client: TestClient, url: str = HEADLINE) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def rows(body: dict[str, Any]) -> list[tuple[str, int | None, str]]:
    return [(r["agentName"], r["rank"], r["status"]) for r in body["leaderboard"]]


def gains(n: int, drift: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(drift, 0.01) for _ in range(n)]


def rank(client: TestClient, agent_id: str, query: str = "") -> dict[str, Any]:
    response = client.get(f"/api/leaderboard/rank/{agent_id}?{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def agents(farm: Farm) -> tuple[str, str]:
    """An honest agent (in-sample Sharpe 1.0), then a memorising one (8.59)."""
    honest, memoriser = farm.agent("honest"), farm.agent("memoriser")
    farm.result(honest, sharpeRatio=1.0)
    farm.result(memoriser, **MEMORISED)
    return honest, memoriser


def test_the_backtest_board_is_labelled_in_sample(
    client: TestClient, agents: tuple[str, str]
) -> None:
    honest, memoriser = agents
    backtest = get(client, "/api/leaderboard?type=backtest&timeframe=all_time&metric=sharpe")
    assert (backtest["type"], backtest["inSample"]) == ("backtest", True)
    assert rows(backtest) == [("memoriser", 1, "ranked"), ("honest", 2, "ranked")]
    assert rank(client, memoriser, "type=backtest")["inSample"] is True
    for board in ("headline", "paper_trading"):
        body = get(client, f"/api/leaderboard?type={board}")
        assert (body["type"], body["inSample"]) == (board, False)
    assert rank(client, honest)["inSample"] is False


def test_without_forward_results_every_agent_awaits_and_none_is_ranked(
    client: TestClient, agents: tuple[str, str]
) -> None:
    _honest, memoriser = agents
    body = get(client)  # the default view is the headline board
    assert body["type"] == "headline"
    expected = [("honest", None, "awaiting_forward"), ("memoriser", None, "awaiting_forward")]
    assert rows(body) == expected  # in submission order, without ranks
    for row in body["leaderboard"]:
        assert row["metric"] is None
        assert (row["forwardBars"], row["forwardSharpe"]) == (0, None)
    assert body["leaderboard"][1]["inSampleSharpe"] == 8.59
    for metric in Metric:
        assert rows(get(client, f"{HEADLINE}?metric={metric}")) == expected
    assert rows(get(client, f"{HEADLINE}?limit=1")) == expected[:1]
    found = rank(client, memoriser)
    assert (found["status"], found["rank"], found["score"], found["total"]) == (
        "awaiting_forward",
        None,
        None,
        0,
    )


def test_an_agent_is_ranked_once_it_has_enough_forward_bars(
    client: TestClient, farm: Farm, agents: tuple[str, str]
) -> None:
    honest, _memoriser = agents
    recorded = farm.forward(honest, gains(N - 1, 0.003, seed=1))
    assert (recorded.accepted, recorded.refused, recorded.duplicate) == (N - 1, 0, 0)
    assert [s for _, _, s in rows(get(client))] == ["awaiting_forward"] * 2

    farm.forward(honest, gains(1, 0.003, seed=2), first=farm.submitted_at(honest) + timedelta(N))
    body = get(client)
    assert rows(body) == [
        ("honest", 1, "ranked"),
        ("memoriser", None, "awaiting_forward"),  # after every ranked row, never at the top
    ]
    top = body["leaderboard"][0]
    assert top["forwardBars"] == N
    assert top["firstForwardAt"] < top["lastForwardAt"]
    found = rank(client, honest)
    assert (found["status"], found["rank"], found["total"]) == ("ranked", 1, 1)


def test_the_memoriser_ranks_below_the_honest_agent_on_forward_results(
    client: TestClient, farm: Farm, agents: tuple[str, str]
) -> None:
    honest, memoriser = agents
    honest_returns = gains(N + 10, 0.003, seed=3)
    memoriser_returns = gains(N + 10, -0.0005, seed=4)
    farm.forward(honest, honest_returns)
    farm.forward(memoriser, memoriser_returns)

    forward = {"honest": sharpe_ratio(honest_returns), "memoriser": sharpe_ratio(memoriser_returns)}
    assert forward["honest"] is not None
    assert forward["honest"] > 1.0
    assert forward["memoriser"] is not None
    assert forward["memoriser"] < 1.0
    for metric in ("sharpe", "returns", "total_pnl", "sortino", "calmar", "max_drawdown"):
        body = get(client, f"{HEADLINE}?metric={metric}")
        assert rows(body) == [("honest", 1, "ranked"), ("memoriser", 2, "ranked")], metric
    by_name = {r["agentName"]: r for r in get(client)["leaderboard"]}
    # The ranking Sharpe is the lower of the in-sample and the forward one.
    assert by_name["honest"]["metric"] == 1.0
    assert by_name["honest"]["forwardSharpe"] == pytest.approx(forward["honest"])
    memo = by_name["memoriser"]
    assert memo["inSampleSharpe"] == 8.59
    assert memo["forwardSharpe"] == pytest.approx(forward["memoriser"])
    assert memo["sharpe"] == memo["metric"] == pytest.approx(min(8.59, forward["memoriser"]))
    # Every other metric is forward only: the memorised +6,060% is nowhere.
    assert memo["returns"] == pytest.approx(math.prod(1 + r for r in memoriser_returns) - 1)
    assert memo["totalPnl"] == pytest.approx(100_000.0 * memo["returns"])
    assert (memo["winRate"], memo["totalTrades"]) == (None, None)
    found = rank(client, memoriser, "metric=sharpe")
    assert (found["rank"], found["total"]) == (2, 2)
    assert found["score"] == pytest.approx(forward["memoriser"])
    # The backtest board still shows the in-sample result, labelled as such.
    backtest = get(client, "/api/leaderboard?type=backtest&metric=sharpe")
    assert (backtest["inSample"], rows(backtest)[0][0]) == (True, "memoriser")


def test_forward_bars_dated_at_or_before_submission_are_refused(
    client: TestClient, farm: Farm, agents: tuple[str, str]
) -> None:
    honest, _ = agents
    submitted = farm.submitted_at(honest)
    first = submitted - timedelta(days=N)  # N bars up to the submission itself, then N after
    recorded = farm.forward(honest, gains(2 * N, 0.01, seed=5), first=first)
    assert (recorded.accepted, recorded.refused) == (N - 1, N + 1)

    row = get(client)["leaderboard"][0]
    assert (row["agentName"], row["status"], row["forwardBars"]) == (
        "honest",
        "awaiting_forward",
        N - 1,
    )
    assert row["firstForwardAt"] > row["submittedAt"]
    again = farm.forward(honest, gains(2 * N, 0.01, seed=5), first=first, session_id="paper-2")
    assert (again.accepted, again.refused, again.duplicate) == (0, N + 1, N - 1)


def test_broken_results_are_never_ranked_on_any_board(
    client: TestClient, farm: Farm, agents: tuple[str, str]
) -> None:
    honest, _memoriser = agents
    farm.forward(honest, gains(N, 0.001, seed=6))
    nan_short = farm.agent("1e308 short")  # NaN equity, completed, lowest drawdown
    farm.result(
        nan_short,
        finalValue=math.nan,
        totalReturn=math.nan,
        maxDrawdown=0.0,
        returns=[0.0, math.nan, math.nan],
    )
    bankrupt = farm.agent("1e9 short")  # a return of -2,050,911x ranked #1 by Sortino
    farm.result(bankrupt, finalValue=-2.05e11, totalReturn=-2_050_911.0, sortinoRatio=40.0)
    infinite = farm.agent("infinite")
    farm.result(infinite, sharpeRatio=math.inf)
    broke_forward = farm.agent("broke forward")  # its paper account's equity stopped being finite
    farm.result(broke_forward, sharpeRatio=2.0)
    farm.forward(broke_forward, [0.5] * N + [math.nan])

    for metric in Metric:
        backtest = get(client, f"/api/leaderboard?type=backtest&metric={metric}")
        assert {n for n, _, _ in rows(backtest)} <= {"honest", "memoriser", "broke forward"}
        headline = get(client, f"{HEADLINE}?metric={metric}")
        assert {n for n, _, _ in rows(headline)} <= {"honest", "memoriser"}, metric
    for agent in (nan_short, bankrupt, infinite, broke_forward):
        assert client.get(f"/api/leaderboard/rank/{agent}").status_code == 404
    for agent in (nan_short, bankrupt, infinite):
        response = client.get(f"/api/leaderboard/rank/{agent}?type=backtest&metric=returns")
        assert response.status_code == 404


def test_stored_non_finite_values_are_not_ranked_after_a_rebuild(
    client: TestClient, context: Context, farm: Farm, cache_url: str | None
) -> None:
    honest, memoriser = farm.agent("honest"), farm.agent("memoriser")
    farm.result(honest, sharpeRatio=1.0)
    farm.result(memoriser, sharpeRatio=1.0)
    postgres = context.db.engine.dialect.name == "postgresql"
    broken = [math.inf, -math.inf, *([math.nan] if postgres else [])]  # SQLite stores NaN as NULL
    for i, value in enumerate(broken):
        agent = farm.agent(f"broken {i}")
        with context.db.transaction() as session:
            user_id = farm.users["alice"]
            repository.upsert(
                session,
                {
                    "board_type": BoardType.BACKTEST.value,
                    "timeframe": "all_time",
                    "agent_id": agent,
                    "user_id": user_id,
                    "session_id": f"s{i}",
                    "evaluated_at": utcnow(),
                    "sharpe": 1.0,
                    "sortino": value,
                    "n_trials": 1,
                    "updated_at": utcnow(),
                },
            )
    if cache_url is None:
        context.leaderboard.cache.close()  # cold: the next read rebuilds from SQL
    else:
        with redis.Redis.from_url(cache_url) as r:
            r.flushdb()
    for metric in ("sharpe", "sortino"):
        body = get(client, f"/api/leaderboard?type=backtest&metric={metric}")
        assert {n for n, _, _ in rows(body)} == {"honest", "memoriser"}
        with context.db.transaction() as session:
            page = repository.ranked_page(
                session, BoardType.BACKTEST, "all_time", None, Metric(metric), 100, N
            )
            assert {row.agent_name for row in page} == {"honest", "memoriser"}


@pytest.mark.redis
def test_sql_answers_the_headline_like_the_cache_when_redis_is_down(
    db_settings: Settings, private_redis: RedisServer
) -> None:
    settings = db_settings.model_copy(update={"redis_url": private_redis.url})
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        farm = Farm(context)
        honest, memoriser = farm.agent("honest"), farm.agent("memoriser")
        waiting = farm.agent("waiting")
        farm.result(honest, sharpeRatio=1.0)
        farm.result(memoriser, **MEMORISED)
        farm.result(waiting, sharpeRatio=3.0)
        farm.forward(honest, gains(N, 0.003, seed=7))
        poor = gains(N, -0.004, seed=8)
        assert (sharpe_ratio(poor) or 0.0) < 1.0
        farm.forward(memoriser, poor)
        urls = [f"{HEADLINE}?metric={m}" for m in ("sharpe", "returns")] + [f"{HEADLINE}?limit=2"]
        cached = [get(client, url) for url in urls]
        assert rows(cached[0]) == [
            ("honest", 1, "ranked"),
            ("memoriser", 2, "ranked"),
            ("waiting", None, "awaiting_forward"),
        ]
        private_redis.stop()
        for url, body in zip(urls, cached, strict=True):
            answer = get(client, url)
            assert (body["source"], answer["source"]) == ("cache", "database")
            assert answer["leaderboard"] == body["leaderboard"]
        found = rank(client, waiting)
        assert (found["status"], found["rank"], found["total"], found["source"]) == (
            "awaiting_forward",
            None,
            2,
            "database",
        )


def test_forward_bars_recorded_before_the_evaluation_count_once_it_is_ranked(
    client: TestClient, farm: Farm
) -> None:
    early = farm.agent("early paper trader")
    farm.forward(early, gains(N, 0.003, seed=9))
    assert get(client)["leaderboard"] == []  # no ranked standard evaluation: not listed
    farm.result(early, sharpeRatio=0.7)
    row = get(client)["leaderboard"][0]
    assert (row["agentName"], row["rank"], row["forwardBars"], row["metric"]) == (
        "early paper trader",
        1,
        N,
        0.7,
    )


def test_the_forward_bars_required_are_a_setting(
    db_settings: Settings, cache_url: str | None
) -> None:
    settings = db_settings.model_copy(
        update={"redis_url": cache_url, "leaderboard_min_forward_bars": 3}
    )
    with TestClient(create_app(settings)) as client:
        farm = Farm(client.app.state.context)  # type: ignore[attr-defined]
        agent = farm.agent("quick")
        farm.result(agent, sharpeRatio=0.7)
        farm.forward(agent, gains(2, 0.003, seed=10))
        assert rows(get(client)) == [("quick", None, "awaiting_forward")]
        farm.forward(agent, gains(1, 0.003, seed=11), first=farm.submitted_at(agent) + timedelta(3))
        assert rows(get(client)) == [("quick", 1, "ranked")]
