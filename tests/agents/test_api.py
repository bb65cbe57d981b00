"""The agents API over real HTTP through the ASGI app, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm.context import Context
from farm.events import AGENT_SUBMITTED, EVENT_ID, Event
from farm.storage.models import Agent

REPO = Path(__file__).resolve().parents[2]
SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()
RSI = (REPO / "examples/agents/rsi_mean_reversion.py").read_bytes()

Headers = dict[str, str]


def variant(n: int) -> bytes:
    """A distinct valid agent (different sha256)."""
    return SMA + f"\n# variant {n}\n".encode()


def submit(
    client: TestClient,
    headers: Headers,
    code: bytes = SMA,
    *,
    name: str = "SMA",
    filename: str = "agent.py",
    **form: str,
) -> object:
    return client.post(
        "/api/agents/submit",
        headers=headers,
        data={"agentName": name, **form},
        files={"file": (filename, code, "text/x-python")},
    )


@pytest.fixture
def alice(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("bob")


def test_submit_stores_the_agent_and_announces_it(
    client: TestClient, context: Context, alice: Headers
) -> None:
    seen: list[Event] = []
    context.bus.subscribe(AGENT_SUBMITTED, seen.append)
    response = submit(client, alice, description="cross\r\nover", tags="trend, sma ,trend")
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    agent_id = body["agentId"]
    assert seen == [{"agentId": agent_id, "userId": seen[0]["userId"], EVENT_ID: seen[0][EVENT_ID]}]

    shown = client.get(f"/api/agents/{agent_id}", headers=alice).json()
    assert shown["agentName"] == "SMA"
    assert shown["description"] == "cross\nover"
    assert shown["tags"] == ["trend", "sma"]
    assert shown["strategyClass"] == "SmaCross"
    assert shown["status"] == "active"
    assert shown["owner"] == "alice"
    assert shown["source"] is None
    with_source = client.get(f"/api/agents/{agent_id}?include=source", headers=alice).json()
    assert with_source["source"] == SMA.decode()
    assert context.artifacts.get(f"agents/{seen[0]['userId']}/{agent_id}.py") == SMA


@pytest.mark.parametrize(
    ("form", "code", "filename", "fragment"),
    [
        ({"name": ""}, SMA, "a.py", "agentName must be 1 to 100"),
        ({"name": "x" * 101}, SMA, "a.py", "agentName must be 1 to 100"),
        ({"description": "d" * 501}, SMA, "a.py", "description must be at most 500"),
        ({"tags": ",".join(f"t{i}" for i in range(11))}, SMA, "a.py", "at most 10 tags"),
        ({"tags": "x" * 33}, SMA, "a.py", "at most 32 characters"),
        ({"name": "a\x00b"}, SMA, "a.py", "agentName must be printable text; it contains U+0000"),
        (
            {"name": "ok\x1b[2Jx"},
            SMA,
            "a.py",
            "agentName must be printable text; it contains U+001B",
        ),
        ({"name": "evil\u202etxt.py"}, SMA, "a.py", "agentName must be printable"),
        ({"name": "a\rBacktest completed"}, SMA, "a.py", "agentName must be printable"),
        ({"description": "fine\nbut\x07"}, SMA, "a.py", "description must be printable"),
        ({"tags": "trend,\u2066x"}, SMA, "a.py", "tags must be printable"),
        ({}, SMA, "agent.txt", "must be a Python file"),
        ({}, b"", "a.py", "empty"),
        ({}, b"\xff\xfe", "a.py", "not UTF-8"),
        ({}, b"def f(:\n", "a.py", "syntax error at line 1, column"),
        ({}, b"x = 1\n", "a.py", "no class deriving from backtrader.Strategy"),
        ({}, SMA + b"\nclass Two(bt.Strategy):\n    pass\n", "a.py", "must define exactly one"),
        ({}, b"#" * (1024 * 1024 + 1), "a.py", "the limit is 1048576 bytes"),
    ],
)
def test_invalid_submissions_are_400_with_what_to_fix(
    client: TestClient,
    alice: Headers,
    form: dict[str, str],
    code: bytes,
    filename: str,
    fragment: str,
) -> None:
    response = submit(client, alice, code, filename=filename, **form)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_input"
    assert fragment in body["message"]
    assert set(body) >= {"error", "message", "timestamp"}


def test_same_code_twice_is_409_until_the_first_is_deleted(
    client: TestClient, alice: Headers, bob: Headers
) -> None:
    first = submit(client, alice).json()["agentId"]
    again = submit(client, alice, name="again")
    assert again.status_code == 409
    assert again.json()["existingAgentId"] == first
    assert submit(client, bob).status_code == 201  # another user's copy is theirs
    assert client.delete(f"/api/agents/{first}", headers=alice).status_code == 200
    assert submit(client, alice).status_code == 201


def test_list_is_newest_first_with_real_totals_and_no_deleted(
    client: TestClient, alice: Headers, bob: Headers
) -> None:
    ids = [submit(client, alice, variant(i), name=f"a{i}").json()["agentId"] for i in range(7)]
    submit(client, bob, variant(99))
    client.delete(f"/api/agents/{ids[0]}", headers=alice)

    page1 = client.get("/api/agents/list?limit=4", headers=alice).json()
    assert [a["agentId"] for a in page1["agents"]] == ids[::-1][:4]
    assert page1["pagination"] == {"page": 1, "limit": 4, "total": 6, "pages": 2}
    page2 = client.get("/api/agents/list?limit=4&page=2", headers=alice).json()
    assert [a["agentId"] for a in page2["agents"]] == ids[::-1][4:6]
    assert page2["pagination"]["total"] == 6
    active = client.get("/api/agents/list?status=active", headers=alice).json()
    assert active["pagination"]["total"] == 6
    paper = client.get("/api/agents/list?status=paper_trading", headers=alice).json()
    assert paper == {"agents": [], "pagination": {"page": 1, "limit": 20, "total": 0, "pages": 0}}


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("limit=101", "less than or equal to 100"),
        ("limit=0", "greater than or equal to 1"),
        ("page=0", "greater than or equal to 1"),
        ("status=deleted", "'active' or 'paper_trading'"),
        ("status=bogus", "status"),
    ],
)
def test_list_rejects_bad_parameters(
    client: TestClient, alice: Headers, query: str, fragment: str
) -> None:
    response = client.get(f"/api/agents/list?{query}", headers=alice)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_owners_only(client: TestClient, alice: Headers, bob: Headers) -> None:
    agent_id = submit(client, alice).json()["agentId"]
    for method in ("GET", "DELETE"):
        response = client.request(method, f"/api/agents/{agent_id}", headers=bob)
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert client.get("/api/agents/list", headers=bob).json()["pagination"]["total"] == 0
    assert client.get(f"/api/agents/{agent_id}", headers=alice).status_code == 200


def test_unknown_and_deleted_agents_are_404(client: TestClient, alice: Headers) -> None:
    assert client.get("/api/agents/nope", headers=alice).status_code == 404
    agent_id = submit(client, alice).json()["agentId"]
    assert client.delete(f"/api/agents/{agent_id}", headers=alice).status_code == 200
    assert client.get(f"/api/agents/{agent_id}", headers=alice).status_code == 404
    assert client.delete(f"/api/agents/{agent_id}", headers=alice).status_code == 404


def test_delete_is_soft_and_refused_while_paper_trading(
    client: TestClient, context: Context, alice: Headers
) -> None:
    agent_id = submit(client, alice).json()["agentId"]
    with context.db.transaction() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        agent.status = "paper_trading"
    refused = client.delete(f"/api/agents/{agent_id}", headers=alice)
    assert refused.status_code == 400
    assert "paper trading" in refused.json()["message"]

    with context.db.transaction() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        agent.status = "active"
    assert client.delete(f"/api/agents/{agent_id}", headers=alice).status_code == 200
    with context.db.transaction() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        assert agent.status == "deleted"
        assert agent.deleted_at is not None


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer farm_wrong"}])
def test_requests_without_a_valid_token_are_401(client: TestClient, headers: Headers) -> None:
    for method, path in [("GET", "/api/agents/list"), ("GET", "/api/agents/x")]:
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"] == "unauthorized"
    assert submit(client, headers).status_code == 401


def test_bodies_over_the_limit_are_413(client: TestClient, alice: Headers) -> None:
    response = submit(client, alice, b"#" * (3 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_streamed_bodies_over_the_limit_are_413(client: TestClient, alice: Headers) -> None:
    head = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.py"\r\n'
        b"Content-Type: text/x-python\r\n\r\n"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is only known by reading
        yield head
        for _ in range(40):
            yield b"#" * 100_000
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/api/agents/submit",
        headers={**alice, "Content-Type": "multipart/form-data; boundary=b"},
        content=chunks(),
    )
    assert response.status_code == 413


def test_unknown_routes_use_the_error_body(client: TestClient) -> None:
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message", "timestamp"}


def test_health_reports_each_backend(client: TestClient, context: Context) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["backends"][f"database:{context.db.backend}"] == "ok"
    assert body["backends"]["artifacts"] == "ok"
