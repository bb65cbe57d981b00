"""The FMEL API over real HTTP, on SQLite and PostgreSQL, over stores written by the recorder."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from fmel_helpers import SMALL, SMALL_TRADES, Account, MakeAgent, World, bar_ts, new_id, stored

from farm.context import Context
from farm.fmel.records import KINDS


def get(client: TestClient, path: str, who: Account, **params: Any) -> Any:
    response = client.get(path, headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def decisions(client: TestClient, who: Account, **params: Any) -> tuple[list[str], int]:
    body = get(client, "/api/fmel/decisions", who, **params)
    return [d["decisionId"] for d in body["decisions"]], body["total"]


def rounded(value: Any) -> Any:
    """JSON with floats rounded to 9 places."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def ids(session: str, *seqs: int) -> list[str]:
    return [f"{session}:{s}" for s in seqs]


# -- decisions ------------------------------------------------------------------------------------


def test_decisions_are_newest_first_with_exact_totals_and_pages(
    client: TestClient, world: World
) -> None:
    everything, total = decisions(client, world.alice, agentId=world.agent, limit=1000)
    assert total == 11
    assert everything == ids(world.small, *range(7, -1, -1)) + ids(world.old, 2, 1, 0)
    pages = [
        decisions(client, world.alice, agentId=world.agent, limit=4, offset=o)
        for o in (0, 4, 8, 12)
    ]
    assert [t for _, t in pages] == [11, 11, 11, 11]
    assert [d for page, _ in pages for d in page] == everything
    assert pages[-1][0] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"action": "buy"}, [3, 0]),
        ({"action": "sell"}, [5, 2]),
        ({"action": "hold"}, [7, 4, 1]),
        ({"action": "mixed"}, [6]),
        ({"symbol": "MSFT"}, [6, 5, 3]),  # ordered or read it
        ({"startDate": "2024-01-02", "endDate": "2024-01-03"}, [5, 4, 3, 2]),  # whole end day
        ({"startDate": "2024-01-02T15:00:00Z"}, [7, 6, 5, 4, 3]),
        ({"endDate": "2024-01-01T15:00:00+00:00"}, [0]),  # end is exclusive for a date-time
        ({"action": "hold", "symbol": "AAPL", "startDate": "2024-01-03"}, [7, 4]),
    ],
)
def test_each_decision_filter(
    client: TestClient, world: World, params: dict[str, str], expected: list[int]
) -> None:
    found, total = decisions(client, world.alice, sessionId=world.small, **params)
    assert found == ids(world.small, *expected)
    assert total == len(expected)


def test_scope_by_session_or_every_agent_of_the_caller(client: TestClient, world: World) -> None:
    assert decisions(client, world.alice, sessionId=world.old)[1] == 3
    assert decisions(client, world.alice, agentId=world.agent, sessionId=world.small)[1] == 8
    assert decisions(client, world.alice, agentId=world.other, sessionId=world.small)[1] == 0
    mine, total = decisions(client, world.alice, limit=1000)
    assert total == 8 + 3 + 8
    bobs, bob_total = decisions(client, world.bob, limit=1000)
    assert bob_total == 8
    assert not set(mine) & set(bobs)


def test_a_session_is_found_by_its_row_without_listing_every_agent(
    client: TestClient, context: Context, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = context.fmel.root
    listed = root.names

    def names(folder: str) -> tuple[str, ...]:
        assert folder != root.url, "the FMEL root was listed (a request per agent on S3)"
        return listed(folder)

    monkeypatch.setattr(root, "names", names)
    assert decisions(client, world.alice, sessionId=world.old)[1] == 3
    assert get(client, f"/api/fmel/decisions/{world.small}:6", world.alice)["seq"] == 6


def test_a_decision_nests_what_the_agent_reported(client: TestClient, world: World) -> None:
    (first,) = get(
        client, "/api/fmel/decisions", world.alice, sessionId=world.small, limit=1, offset=7
    )["decisions"]
    assert first["decisionId"] == f"{world.small}:0"
    assert first["agentId"] == world.agent
    assert first["userId"] == world.alice.user_id
    assert first["mode"] == "BACKTEST"
    assert first["barTime"] == "2024-01-01T14:30:00Z"
    assert first["action"] == "buy"
    assert first["bars"][0] == {
        "symbol": "AAPL",
        "open": 100.0,
        "high": 102.0,
        "low": 99.0,
        "close": 101.0,
        "volume": 1e6,
    }
    assert first["portfolio"] == {"cash": 100_000.0, "value": 100_000.0}
    assert first["orders"][0]["side"] == "buy"
    assert first["orders"][0]["status"] == "submitted"
    assert first["agentReported"] == {
        "reasoning": "strong uptrend, buy AAPL",
        "reasoningTruncated": False,
        "confidence": 0.9,
        "indicators": [
            {"name": "sma", "line": 0, "value": 100.5},
            {"name": "bands", "line": 0, "value": None},
            {"name": "bands", "line": 1, "value": 1.0},
        ],
        "indicatorsTruncated": False,
        "dataAccessed": [
            {"symbol": "AAPL", "field": "close", "index": 0},
            {"symbol": "AAPL", "field": "close", "index": -1},
        ],
        "dataAccessedTruncated": False,
        "hookErrors": [],
    }
    (failed,) = get(
        client, "/api/fmel/decisions", world.alice, sessionId=world.small, limit=1, offset=3
    )["decisions"]
    assert failed["agentReported"]["confidence"] is None
    assert failed["agentReported"]["hookErrors"] == [
        "get_decision_confidence raised ValueError: no idea"
    ]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"limit": 1001}, "limit: Input should be less than or equal to 1000"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"action": "short"}, "action"),
        ({"startDate": "yesterday"}, "startDate must be an ISO date"),
        ({"endDate": "2024-13-01"}, "endDate must be an ISO date"),
        ({"startDate": "2024-02-01", "endDate": "2024-01-01"}, "startDate must be before endDate"),
        ({"sessionId": "../../etc"}, "sessionId must be 1 to 64"),
        ({"symbol": "X" * 33}, "symbol must be 1 to 32"),
    ],
)
def test_bad_decision_parameters_are_400_with_what_to_fix(
    client: TestClient, world: World, params: dict[str, Any], fragment: str
) -> None:
    response = client.get(
        "/api/fmel/decisions",
        headers=world.alice.headers,
        params={"agentId": world.agent, **params},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_input"
    assert fragment in response.json()["message"]


# -- one decision ---------------------------------------------------------------------------------


def test_decision_detail_has_its_executions_and_trade_outcomes(
    client: TestClient, world: World
) -> None:
    opened = get(client, f"/api/fmel/decisions/{world.small}:0", world.alice)
    (fill,) = opened["executions"]
    assert fill["decisionId"] == f"{world.small}:0"
    assert (fill["status"], fill["side"], fill["size"], fill["price"], fill["commission"]) == (
        "filled",
        "buy",
        10.0,
        101.0,
        1.01,
    )
    assert fill["orderId"] == opened["orders"][0]["orderId"]
    (trade,) = opened["trades"]
    assert (trade["role"], trade["symbol"], trade["pnlNet"], trade["pnl"]) == (
        "opened",
        "AAPL",
        50.0,
        52.0,
    )
    assert trade["closedByDecisionId"] == f"{world.small}:2"

    closed = get(client, f"/api/fmel/decisions/{world.small}:2", world.alice)
    assert [(t["role"], t["pnlNet"]) for t in closed["trades"]] == [("closed", 50.0)]

    rotation = get(client, f"/api/fmel/decisions/{world.small}:6", world.alice)
    assert sorted(
        (e["symbol"], e["status"], e["price"], e["reason"]) for e in rotation["executions"]
    ) == [
        ("AAPL", "filled", 107.0, ""),
        ("MSFT", "margin", None, "insufficient cash"),
    ]
    hold = get(client, f"/api/fmel/decisions/{world.small}:1", world.alice)
    assert (hold["executions"], hold["trades"], hold["orders"]) == ([], [], [])


@pytest.mark.parametrize("suffix", [":99", ":x", "", ":-1"])
def test_unknown_or_malformed_decision_ids_are_404(
    client: TestClient, world: World, suffix: str
) -> None:
    for decision_id in (f"{world.small}{suffix}", f"{new_id()}:0", "nonsense"):
        response = client.get(f"/api/fmel/decisions/{decision_id}", headers=world.alice.headers)
        assert response.status_code == 404, decision_id


# -- owner isolation ------------------------------------------------------------------------------


def test_another_users_agent_is_403_and_an_unknown_one_404_everywhere(
    client: TestClient, world: World
) -> None:
    bob, theirs, unknown = world.bob, world.agent, new_id()
    for path, params in [
        ("/api/fmel/decisions", {"agentId": theirs}),
        ("/api/fmel/decisions", {"sessionId": world.small}),
        (f"/api/fmel/decisions/{world.small}:0", {}),
        ("/api/fmel/analytics", {"agentId": theirs}),
        ("/api/fmel/compare", {"agentIds": f"{world.bobs},{theirs}"}),
        ("/api/fmel/search", {"q": "buy", "agentId": theirs}),
        (f"/api/fmel/export/{theirs}", {}),
    ]:
        response = client.get(path, headers=bob.headers, params=params)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
    for path, params in [
        ("/api/fmel/decisions", {"agentId": unknown}),
        ("/api/fmel/decisions", {"sessionId": new_id()}),
        ("/api/fmel/analytics", {"agentId": "../../etc"}),
        ("/api/fmel/compare", {"agentIds": unknown}),
        ("/api/fmel/search", {"q": "buy", "agentId": unknown}),
        (f"/api/fmel/export/{unknown}", {}),
    ]:
        response = client.get(path, headers=bob.headers, params=params)
        assert response.status_code == 404, (path, response.text)
    assert client.get("/api/fmel/decisions").status_code == 401


def test_a_deleted_agents_records_are_gone(
    client: TestClient, context: Context, world: World
) -> None:
    from farm.storage.models import Agent

    with context.db.transaction() as session:
        agent = session.get(Agent, world.other)
        assert agent is not None
        agent.status = "deleted"
    response = client.get(
        "/api/fmel/analytics", headers=world.alice.headers, params={"agentId": world.other}
    )
    assert response.status_code == 404
    assert decisions(client, world.alice, limit=1000)[1] == 11


# -- analytics and compare ------------------------------------------------------------------------


def test_analytics_exact_values_on_the_hand_made_session(client: TestClient, world: World) -> None:
    body = get(
        client, "/api/fmel/analytics", world.alice, agentId=world.agent, sessionId=world.small
    )
    assert body["agentId"] == world.agent
    assert body["sessionId"] == world.small
    assert body["totalDecisions"] == 8
    assert body["actions"] == {"buy": 2, "sell": 2, "hold": 3, "mixed": 1}
    confidences = [s.confidence for s in SMALL if s.confidence is not None]
    assert body["averageConfidence"] == pytest.approx(sum(confidences) / 7)
    assert body["confidenceDeciles"] == pytest.approx(
        list(np.quantile(confidences, np.arange(1, 10) / 10))
    )
    assert [(b["lower"], b["upper"], b["count"]) for b in body["confidenceDistribution"]] == [
        (0.0, 0.1, 1),
        (0.1, 0.2, 0),
        (0.2, 0.3, 1),
        (0.3, 0.4, 0),
        (0.4, 0.5, 0),
        (0.5, 0.6, 1),
        (0.6, 0.7, 1),
        (0.7, 0.8, 0),
        (0.8, 0.9, 1),
        (0.9, 1.0, 2),  # 0.9 and 1.0
    ]
    assert body["trades"] == {
        "total": 3,
        "won": 1,
        "winRate": pytest.approx(1 / 3),
        "averagePnl": pytest.approx(20 / 3),
        "totalPnl": pytest.approx(20.0),
    }
    calibration = {b["lower"]: b for b in body["pnlByConfidence"] if b["trades"]}
    assert calibration == {
        0.2: {"lower": 0.2, "upper": 0.3, "trades": 1, "winRate": 0.0, "averagePnl": -20.0},
        0.9: {"lower": 0.9, "upper": 1.0, "trades": 2, "winRate": 0.5, "averagePnl": 20.0},
    }
    assert len(body["pnlByConfidence"]) == 10
    assert body["mostReadFields"] == [
        {"symbol": "AAPL", "field": "close", "reads": 6},
        {"symbol": "MSFT", "field": "close", "reads": 2},
        {"symbol": "AAPL", "field": "volume", "reads": 1},
        {"symbol": "MSFT", "field": "low", "reads": 1},
    ]
    assert body["dailyActions"] == [
        {"date": "2024-01-01", "total": 2, "buy": 1, "sell": 0, "hold": 1, "mixed": 0},
        {"date": "2024-01-02", "total": 2, "buy": 1, "sell": 1, "hold": 0, "mixed": 0},
        {"date": "2024-01-03", "total": 2, "buy": 0, "sell": 1, "hold": 1, "mixed": 0},
        {"date": "2024-01-04", "total": 2, "buy": 0, "sell": 0, "hold": 1, "mixed": 1},
    ]
    assert [bar_ts(s).date().isoformat() for s in (0, 7)] == ["2024-01-01", "2024-01-04"]
    assert len(SMALL_TRADES) == 3


@pytest.mark.parametrize(("date_range", "total"), [("7d", 8), ("30d", 8), ("90d", 10), ("all", 11)])
def test_analytics_date_range_is_by_recording_time(
    client: TestClient, world: World, date_range: str, total: int
) -> None:
    body = get(
        client, "/api/fmel/analytics", world.alice, agentId=world.agent, dateRange=date_range
    )
    assert body["totalDecisions"] == total
    assert body["dateRange"] == date_range
    assert body["trades"]["total"] == 3


def test_analytics_of_an_agent_without_records(
    client: TestClient, world: World, make_agent: MakeAgent
) -> None:
    body = get(client, "/api/fmel/analytics", world.alice, agentId=make_agent(world.alice))
    assert body["totalDecisions"] == 0
    assert body["averageConfidence"] is None
    assert body["confidenceDeciles"] is None
    assert body["trades"] == {
        "total": 0,
        "won": 0,
        "winRate": None,
        "averagePnl": None,
        "totalPnl": 0.0,
    }
    assert body["mostReadFields"] == body["dailyActions"] == []


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"dateRange": "1y"}, "dateRange"),
        ({}, "agentId: Field required"),
    ],
)
def test_bad_analytics_parameters_are_400(
    client: TestClient, world: World, params: dict[str, str], fragment: str
) -> None:
    response = client.get("/api/fmel/analytics", headers=world.alice.headers, params=params)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_compare_puts_analytics_side_by_side_in_the_order_asked(
    client: TestClient, world: World
) -> None:
    body = get(client, "/api/fmel/compare", world.alice, agentIds=f"{world.other}, {world.agent}")
    assert [a["agentId"] for a in body["agents"]] == [world.other, world.agent]
    assert [a["totalDecisions"] for a in body["agents"]] == [8, 11]
    alone = get(client, "/api/fmel/analytics", world.alice, agentId=world.agent)
    assert rounded(body["agents"][1]) == rounded(alone)  # parallel sums may differ in the last bit
    too_many = ",".join(new_id() for _ in range(11))
    response = client.get(
        "/api/fmel/compare", headers=world.alice.headers, params={"agentIds": too_many}
    )
    assert response.status_code == 400
    assert "1 to 10 agent ids" in response.json()["message"]


# -- search ---------------------------------------------------------------------------------------


def test_search_ranks_by_matched_words_then_recency(client: TestClient, world: World) -> None:
    body = get(client, "/api/fmel/search", world.alice, q="Sell STOP", sessionId=world.small)
    assert body["terms"] == ["sell", "stop"]
    assert [r["decisionId"] for r in body["results"]] == ids(world.small, 5, 2)
    assert [r["score"] for r in body["results"]] == [1.0, 0.5]
    assert body["total"] == 2

    prefix = get(client, "/api/fmel/search", world.alice, q="rot", agentId=world.agent)
    assert [r["agentReported"]["reasoning"] for r in prefix["results"]] == [
        "rotate from MSFT into AAPL"
    ]
    assert (
        get(client, "/api/fmel/search", world.alice, q="otate", agentId=world.agent)["total"] == 0
    )


def test_search_filters_and_pages(client: TestClient, world: World) -> None:
    everything = get(client, "/api/fmel/search", world.alice, q="buy", agentId=world.agent)
    assert [r["decisionId"] for r in everything["results"]] == ids(world.small, 3, 0) + ids(
        world.old, 2
    )
    assert everything["total"] == 3
    page = get(
        client, "/api/fmel/search", world.alice, q="buy", agentId=world.agent, limit=1, offset=1
    )
    assert [r["decisionId"] for r in page["results"]] == ids(world.small, 0)
    assert page["total"] == 3
    assert (
        get(client, "/api/fmel/search", world.alice, q="buy", symbol="MSFT")["total"] == 2
    )  # both agents
    assert (
        get(client, "/api/fmel/search", world.alice, q="buy", action="buy", sessionId=world.small)[
            "total"
        ]
        == 2
    )
    assert get(client, "/api/fmel/search", world.alice, q="buy", endDate="2023-12-31")["total"] == 1
    response = client.get("/api/fmel/search", headers=world.alice.headers, params={"q": "?!"})
    assert response.status_code == 400
    assert "q must contain at least one word" in response.json()["message"]


# -- export ---------------------------------------------------------------------------------------


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _typed(value: str | None, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_timestamp(kind):
        return _iso(value)
    if pa.types.is_nested(kind):
        return json.loads(value)
    if pa.types.is_boolean(kind):
        return {"true": True, "false": False}[value]
    if pa.types.is_integer(kind):
        return int(value)
    if pa.types.is_floating(kind):
        return float(value)
    return value


@pytest.mark.parametrize("kind", ["decisions", "executions", "trades"])
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_export_round_trip_equals_the_store(
    client: TestClient, context: Context, world: World, fmt: str, kind: str
) -> None:
    response = client.get(
        f"/api/fmel/export/{world.agent}",
        headers=world.alice.headers,
        params={"format": fmt, "records": kind},
    )
    assert response.status_code == 200, response.text
    assert f'filename="fmel-{world.agent}-{kind}.' in response.headers["content-disposition"]
    schema = KINDS[kind]
    expected = stored(context.fmel.root, world.agent, kind).to_pylist()
    if fmt == "parquet":
        assert response.headers["content-type"] == "application/vnd.apache.parquet"
        table = pq.read_table(io.BytesIO(response.content))
        assert table.schema.remove_metadata() == schema.remove_metadata()
        got = table.to_pylist()
    elif fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        text = pa.csv.read_csv(
            io.BytesIO(response.content),
            convert_options=pa.csv.ConvertOptions(
                column_types={f.name: pa.string() for f in schema},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        assert text.column_names == schema.names
        got = [{f.name: _typed(row[f.name], f.type) for f in schema} for row in text.to_pylist()]
    else:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = response.content.decode().splitlines()
        got = [
            {
                f.name: _iso(row[f.name]) if pa.types.is_timestamp(f.type) else row[f.name]
                for f in schema
            }
            for row in map(json.loads, lines)
        ]
    key = schema.names[1]
    assert len(got) == len(expected) > 0
    assert sorted(got, key=lambda r: r[key]) == sorted(expected, key=lambda r: r[key])


def test_export_of_one_session_and_of_nothing(
    client: TestClient, world: World, make_agent: MakeAgent
) -> None:
    one = client.get(
        f"/api/fmel/export/{world.agent}",
        headers=world.alice.headers,
        params={"sessionId": world.old, "format": "jsonl"},
    )
    assert [json.loads(line)["seq"] for line in one.text.splitlines()] == [0, 1, 2]
    empty = make_agent(world.alice)
    none = client.get(
        f"/api/fmel/export/{empty}", headers=world.alice.headers, params={"format": "csv"}
    )
    assert list(csv.reader(io.StringIO(none.text))) == [KINDS["decisions"].names]
    parquet = client.get(f"/api/fmel/export/{empty}", headers=world.alice.headers)
    assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 0
    bad = client.get(
        f"/api/fmel/export/{world.agent}", headers=world.alice.headers, params={"format": "xlsx"}
    )
    assert bad.status_code == 400
    assert "format" in bad.json()["message"]
