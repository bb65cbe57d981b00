"""Bounded output of a hostile agent: the FMEL byte cap, stored fills and trades, paged series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.fmel.layout import session_dir
from farm.fmel.recorder import CAPPED_NAME
from farm.users.service import create_user

pytestmark = pytest.mark.sandbox

MB = 1024 * 1024
MAX_ROWS = 5

# Every step: 4,000 random reads, 4,000 random CJK characters of reasoning and an order.
FLOOD = b"""import random

import backtrader as bt


class Flood(bt.Strategy):
    def __init__(self):
        self.rnd = random.Random()

    def next(self):
        n = len(self)
        for _ in range(4000):
            self.data.close[-self.rnd.randrange(n)]
        if n % 2:
            self.buy(size=1)
        else:
            self.sell(size=1)

    def get_decision_reasoning(self):
        return "".join(chr(self.rnd.randrange(0x4E00, 0x9FFF)) for _ in range(4000))
"""


@pytest.fixture
def client(tmp_path: Path, real_bars: Path) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, real_bars, fmel_max_session_mb=1, results_max_rows=MAX_ROWS)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def alice(client: TestClient) -> Headers:
    with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
        _, token = create_user(session, "alice")
    return {"Authorization": f"Bearer {token}"}


def series(client: TestClient, who: Headers, session_id: str, name: str, **params: Any) -> Any:
    response = client.get(f"/api/backtest/{session_id}/{name}", headers=who, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_flooding_agent_is_capped_completes_and_says_so(
    client: TestClient, alice: Headers
) -> None:
    agent_id = submit(client, alice, FLOOD)
    response = start(
        client, alice, agent_id, symbols=["SPY"], startDate="2021-01-04", endDate="2023-12-29"
    )
    result = wait_for(client, alice, response.json()["sessionId"], timeout=300)
    assert result["status"] == "completed", result
    session_id = result["sessionId"]

    output = result["output"]
    assert output["fmelCapped"] is True
    assert output["fmelDroppedRecords"] > 0
    assert 0 < output["fmelBytes"] <= MB
    folder = session_dir(client.app.state.context.settings.fmel_dir, agent_id, session_id)  # type: ignore[attr-defined]
    parts = [p for p in folder.iterdir() if p.suffix == ".parquet"]
    assert sum(p.stat().st_size for p in parts) == output["fmelBytes"]
    assert (folder / CAPPED_NAME).is_file()
    analytics = client.get(
        "/api/fmel/analytics", headers=alice, params={"agentId": agent_id, "sessionId": session_id}
    ).json()
    assert analytics["cappedSessions"] == 1
    assert 0 < analytics["totalDecisions"] < result["progress"]["barsTotal"]

    # About 750 fills and 375 trades were made; the first MAX_ROWS of each are stored.
    assert output["fills"]["total"] > 100
    assert output["fills"]["stored"] == MAX_ROWS
    assert output["trades"] == {"total": result["metrics"]["totalTrades"], "stored": MAX_ROWS}
    assert series(client, alice, session_id, "fills", limit=1000)["total"] == MAX_ROWS


def test_series_are_paged_with_their_total(
    client: TestClient, alice: Headers, real_bars: Path
) -> None:
    sma = (Path(__file__).parent / "agents" / "sma_cross.py").read_bytes()
    agent_id = submit(client, alice, sma)
    response = start(
        client, alice, agent_id, symbols=["SPY"], startDate="2019-01-02", endDate="2024-12-31"
    )
    result = wait_for(client, alice, response.json()["sessionId"])
    assert result["status"] == "completed", result
    session_id = result["sessionId"]
    bars = result["progress"]["barsTotal"]
    assert bars > 500

    tail = series(client, alice, session_id, "equity", limit=1000, offset=500)
    assert tail["total"] == bars
    assert len(tail["points"]) == bars - 500
    assert (
        series(client, alice, session_id, "equity", limit=3, offset=499)["points"][1]
        == (tail["points"][0])
    )
    assert series(client, alice, session_id, "equity", offset=bars)["points"] == []

    trades = series(client, alice, session_id, "trades", limit=1000)
    assert trades["total"] == len(trades["trades"]) == MAX_ROWS  # of the first MAX_ROWS stored
    assert result["output"]["trades"]["total"] == result["metrics"]["totalTrades"] > MAX_ROWS
    pages = [
        series(client, alice, session_id, "trades", limit=2, offset=o)
        for o in range(0, trades["total"], 2)
    ]
    assert {p["total"] for p in pages} == {trades["total"]}
    assert [t for p in pages for t in p["trades"]] == trades["trades"]

    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"offset": 10**9 + 1}):
        bad = client.get(f"/api/backtest/{session_id}/trades", headers=alice, params=params)
        assert bad.status_code == 400, params
    sessions = client.get(
        f"/api/agents/{agent_id}/backtests", headers=alice, params={"limit": 1}
    ).json()
    assert sessions["total"] == 2  # the standard evaluation and this one
    assert len(sessions["sessions"]) == 1
