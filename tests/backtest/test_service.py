"""The backtest service through real HTTP: validation, queue, sandboxed runs, results, failures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backtest_support import AGENTS
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.sandbox


@pytest.fixture
def client(tmp_path: Path, real_bars: Path) -> Iterator[TestClient]:
    with TestClient(create_app(app_settings(tmp_path, real_bars))) as test_client:
        yield test_client


@pytest.fixture
def user(client: TestClient) -> Callable[[str], Headers]:
    def make(name: str) -> Headers:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, name)
        return {"Authorization": f"Bearer {token}"}

    return make


SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()


def test_a_backtest_runs_to_completion_with_every_metric(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, SMA)
    response = start(
        client,
        alice,
        agent_id,
        symbols=["spy", "AAPL", "MSFT"],
        startDate="2021-01-04",
        endDate="2023-12-29",
        initialCash=50_000,
    )
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    result = wait_for(client, alice, response.json()["sessionId"])

    assert result["status"] == "completed", result
    assert result["dataSource"] == "real"
    assert result["parameters"]["symbols"] == ["SPY", "AAPL", "MSFT"]
    assert result["progress"]["barsDone"] == result["progress"]["barsTotal"] == 753
    metrics = result["metrics"]
    for name in (
        "initialValue",
        "finalValue",
        "totalReturn",
        "sharpeRatio",
        "maxDrawdown",
        "totalTrades",
        "winningTrades",
        "losingTrades",
        "sortinoRatio",
        "calmarRatio",
        "annualReturn",
        "annualVolatility",
        "winRate",
        "profitFactor",
        "sqn",
        "exposure",
        "alpha",
        "beta",
    ):
        assert name in metrics, name
    assert metrics["initialValue"] == 50_000
    assert metrics["totalTrades"] == metrics["winningTrades"] + metrics["losingTrades"]
    assert set(result["benchmark"]) >= {"totalReturn", "sharpeRatio", "maxDrawdown"}

    session_id = result["sessionId"]
    equity = client.get(f"/api/backtest/{session_id}/equity", headers=alice).json()["points"]
    assert len(equity) == 753
    assert equity[-1]["equity"] == pytest.approx(metrics["finalValue"])
    assert max(p["drawdown"] for p in equity) == pytest.approx(metrics["maxDrawdown"])
    page = {"limit": 1000}
    trades = client.get(f"/api/backtest/{session_id}/trades", headers=alice, params=page).json()
    fills = client.get(f"/api/backtest/{session_id}/fills", headers=alice, params=page).json()
    assert len(trades["trades"]) == trades["total"] == metrics["totalTrades"]
    assert fills["fills"], "an SMA crossover over three years trades"
    assert result["output"]["fills"] == {"total": fills["total"], "stored": fills["total"]}
    assert result["output"]["fmelCapped"] is False
    pnl = sum(t["pnlNet"] for t in trades["trades"])
    commissions = sum(f["commission"] for f in fills["fills"])
    assert pnl <= metrics["finalValue"] - 50_000 + commissions + 1e6  # sanity, not equality


def test_every_submission_gets_a_standard_evaluation(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, SMA)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sessions = client.get(f"/api/agents/{agent_id}/backtests", headers=alice).json()
        if sessions["total"] and sessions["sessions"][0]["status"] == "completed":
            break
        time.sleep(0.2)
    standard = sessions["sessions"][0]
    assert standard["kind"] == "standard"
    assert standard["status"] == "completed", standard
    assert standard["parameters"]["symbols"] == ["SPY", "AAPL"]
    assert standard["parameters"]["startDate"] == "2023-01-01"
    assert standard["parameters"]["fmel"] is True
    board = client.get("/api/leaderboard?type=backtest&timeframe=all_time").json()
    assert [row["agentId"] for row in board["leaderboard"]] == [agent_id]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"startDate": "2023-05-01", "endDate": "2023-05-01"}, "startDate must be before endDate"),
        ({"symbols": ["SPY", "NOPE", "ZZZ"]}, "unknown symbols: NOPE, ZZZ"),
        ({"startDate": "2010-01-01", "endDate": "2010-12-31"}, "no bars in the requested dates"),
        ({"initialCash": 0}, "initialCash must be positive"),
        ({"initialCash": -5}, "initialCash must be positive"),
        ({"symbols": [f"S{i}" for i in range(501)]}, "symbols: List should have at most 500"),
        ({"symbols": []}, "symbols: List should have at least 1"),
        ({"commission": 0.5}, "commission"),
        ({"benchmark": "NOPE"}, "unknown benchmark symbol: NOPE"),
        ({"symbols": ["APPL", "SPY"]}, "unknown symbols: APPL (did you mean AAPL?)"),
        ({"benchmark": "SYP"}, "unknown benchmark symbol: SYP (did you mean SPY?)"),
        ({"startDate": "yesterday"}, "startDate"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_requests_are_400_with_what_to_fix(
    client: TestClient, user: Callable[[str], Headers], body: dict[str, Any], fragment: str
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, SMA)
    response = start(client, alice, agent_id, **body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


def test_a_range_past_the_stored_data_is_reported_with_the_range_used(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, SMA)
    body = {"symbols": ["AAPL"], "startDate": "2019-01-01", "endDate": "2030-12-31"}
    past = wait_for(client, alice, start(client, alice, agent_id, **body).json()["sessionId"])
    assert past["status"] == "completed", past
    assert past["dataRange"] == {"startDate": "2020-07-27", "endDate": "2025-04-04"}
    assert past["warnings"] == [
        "the stored data covers 2020-07-27 to 2025-04-04 of the requested 2019-01-01 to "
        "2030-12-31; the metrics are over that range only"
    ]
    body = {"symbols": ["AAPL"], "startDate": "2023-01-01", "endDate": "2023-03-31"}
    inside = wait_for(client, alice, start(client, alice, agent_id, **body).json()["sessionId"])
    assert inside["dataRange"] == {"startDate": "2023-01-03", "endDate": "2023-03-31"}
    assert inside["warnings"] == []  # a holiday weekend at the start is not worth a warning


def test_backtests_are_their_owners_only(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice, bob = user("alice"), user("bob")
    agent_id = submit(client, alice, SMA)
    assert start(client, bob, agent_id).status_code == 403
    assert start(client, alice, "no-such-agent").status_code == 404
    session_id = start(client, alice, agent_id, symbols=["SPY"]).json()["sessionId"]
    for path in ("results", "equity", "fills", "trades"):
        assert client.get(f"/api/backtest/{session_id}/{path}", headers=bob).status_code == 403
    assert client.get("/api/backtest/nope/results", headers=alice).status_code == 404
    assert client.get(f"/api/agents/{agent_id}/backtests", headers=bob).status_code == 403
    assert client.get(f"/api/backtest/{session_id}/results").status_code == 401


def test_series_of_an_unfinished_backtest_are_409(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    agent_id = submit(
        client,
        alice,
        b"import backtrader as bt\nimport time\n"
        b"class Slow(bt.Strategy):\n    def next(self):\n        time.sleep(0.05)\n",
    )
    session_id = start(
        client, alice, agent_id, symbols=["SPY"], startDate="2023-01-01", endDate="2023-02-28"
    ).json()["sessionId"]  # about 40 bars of 0.05 s: still running when asked
    response = client.get(f"/api/backtest/{session_id}/equity", headers=alice)
    assert response.status_code == 409
    assert "results come once completed" in response.json()["message"]


RAISES = b"""import backtrader as bt


def helper(x):
    return 1 / x


class Broken(bt.Strategy):
    def next(self):
        if len(self) == 5:
            helper(0)
"""


def test_an_agent_exception_is_a_failed_result_with_the_agents_traceback(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, RAISES)
    session_id = start(client, alice, agent_id, symbols=["SPY"]).json()["sessionId"]
    result = wait_for(client, alice, session_id)
    assert result["status"] == "failed"
    failure = result["failure"]
    assert failure["reason"] == "agent_error"
    assert "ZeroDivisionError" in failure["message"]
    assert "helper" in failure["traceback"]
    assert "backtrader" not in failure["traceback"]
    assert "farm" not in failure["traceback"]
    assert result["progress"]["barsDone"] >= 4


def test_without_a_working_sandbox_agents_are_refused_with_the_reason(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(tmp_path, real_bars, sandbox_uid=0)  # agents must never run as root
    with TestClient(create_app(settings)) as client:
        health = client.get("/health").json()
        assert health["status"] == "degraded"
        assert "must not run as root" in health["backends"]["sandbox"]
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "alice")
        alice = {"Authorization": f"Bearer {token}"}
        agent_id = submit(client, alice, SMA)
        refused = start(client, alice, agent_id)
        assert refused.status_code == 503
        assert "sandbox cannot be set up" in refused.json()["message"]
        assert "FARM_SANDBOX_UID" in refused.json()["message"]
        sessions = client.get(f"/api/agents/{agent_id}/backtests", headers=alice).json()
        assert [s["status"] for s in sessions["sessions"]] == ["queued"]  # nothing ran


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_a_non_finite_initial_cash_is_400(
    client: TestClient, user: Callable[[str], Headers], literal: bytes
) -> None:
    alice = user("alice")
    agent_id = submit(client, alice, SMA)
    response = client.post(
        f"/api/backtest/{agent_id}/start",
        headers={**alice, "Content-Type": "application/json"},
        content=b'{"symbols": ["SPY"], "initialCash": ' + literal + b"}",
    )
    assert response.status_code == 400, response.text
    assert "initialCash" in response.json()["message"]
    assert "finite" in response.json()["message"]


def standard_result(client: TestClient, headers: Headers, agent_id: str) -> Any:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sessions = client.get(f"/api/agents/{agent_id}/backtests", headers=headers).json()
        if sessions["total"] and sessions["sessions"][0]["status"] in {"completed", "failed"}:
            return sessions["sessions"][0]
        time.sleep(0.2)
    pytest.fail(f"the standard evaluation of {agent_id} did not finish")


def test_absurd_shorts_are_refused_and_never_rank_with_broken_figures(
    client: TestClient, user: Callable[[str], Headers]
) -> None:
    alice = user("alice")
    shorts = {
        submit(client, alice, (AGENTS / name).read_bytes(), name): name
        for name in ("absurd_short.py", "overflow_short.py")
    }
    for agent_id in shorts:
        result = standard_result(client, alice, agent_id)
        # the order is refused (margin, or rejected as absurd): the account never moves
        assert result["status"] == "completed", result
        metrics = result["metrics"]
        assert metrics["finalValue"] == metrics["initialValue"] == 100_000
        assert (metrics["totalReturn"], metrics["maxDrawdown"]) == (0, 0)
        fills = client.get(f"/api/backtest/{result['sessionId']}/fills", headers=alice).json()
        assert (fills["fills"], fills["total"]) == ([], 0)
    for metric in ("sortino", "sharpe", "calmar", "returns", "max_drawdown", "total_pnl"):
        query = f"type=backtest&timeframe=all_time&metric={metric}"
        rows = client.get(f"/api/leaderboard?{query}").json()["leaderboard"]
        assert rows == [], (metric, rows)  # refused orders, no trade: never on a board
