"""The accounts API over real HTTP through the ASGI app, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farm.context import Context
from farm.storage.models import PaperAccount, PaperOrder, PaperPosition

Headers = dict[str, str]
BAR_TIME = datetime(2024, 6, 3, tzinfo=UTC)


@pytest.fixture
def alice(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("alice")


@pytest.fixture
def bob(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("bob")


def create(client: TestClient, headers: Headers, **body: Any) -> Any:
    response = client.post("/api/accounts", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def raw_post(client: TestClient, path: str, headers: Headers, body: str) -> Any:
    """A JSON body sent as written (NaN, Infinity and 1e400 are not valid JSON numbers)."""
    return client.post(path, headers={**headers, "Content-Type": "application/json"}, content=body)


def stored_cash(context: Context, account_id: str) -> Decimal:
    with context.db.transaction() as session:
        account = session.get(PaperAccount, account_id)
        assert account is not None
        return account.cash


def test_create_defaults_to_100k_and_show_has_the_full_view(
    client: TestClient, alice: Headers
) -> None:
    created = create(client, alice)
    assert set(created) == {
        "accountId",
        "name",
        "broker",
        "initialCash",
        "cash",
        "equity",
        "createdAt",
    }
    assert created["name"] == "Paper account"
    assert created["broker"] == "simulated"
    assert created["cash"] == created["equity"] == created["initialCash"] == 100_000
    assert datetime.fromisoformat(created["createdAt"]).tzinfo is not None

    shown = client.get(f"/api/accounts/{created['accountId']}", headers=alice).json()
    assert {k: shown[k] for k in created} == created
    assert shown["positions"] == []
    assert shown["openOrders"] == []
    assert shown["session"] is None
    assert shown["funded"] == 0
    assert shown["totalPnl"] == 0

    named = create(client, alice, name="  Swing  ", initialCash=2500.55)
    assert (named["name"], named["cash"], named["equity"]) == ("Swing", 2500.55, 2500.55)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"name": ""}', "name must be 1 to 100"),
        ('{"name": "   "}', "name must be 1 to 100"),
        ('{"name": "' + "x" * 101 + '"}', "name must be 1 to 100"),
        ('{"name": "a\\u001b[31mb"}', "must not contain control"),
        ('{"name": "a\\u202eb"}', "must not contain control"),
        ('{"initialCash": 0}', "greater than 0"),
        ('{"initialCash": -5}', "greater than 0"),
        ('{"initialCash": 0.001}', "no more than 2 decimal places"),
        ('{"initialCash": NaN}', "finite number"),
        ('{"initialCash": Infinity}', "finite number"),
        ('{"initialCash": 1e400}', "finite number"),
        ('{"initialCash": "lots"}', "initialCash"),
        ('{"initialCash": 1000000000.01}', "at most 1,000,000,000"),
        ('{"initialCash": "1e400"}', "at most 1,000,000,000"),
        ('{"cash": 5}', "cash"),
    ],
)
def test_invalid_accounts_are_400_with_what_to_fix(
    client: TestClient, alice: Headers, body: str, fragment: str
) -> None:
    response = raw_post(client, "/api/accounts", alice, body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["error"] == "invalid_input"
    assert fragment in error["message"]
    assert set(error) >= {"error", "message", "timestamp"}
    assert client.get("/api/accounts", headers=alice).json()["pagination"]["total"] == 0


def test_list_is_newest_first_paged_with_real_totals_and_only_yours(
    client: TestClient, alice: Headers, bob: Headers
) -> None:
    ids = [create(client, alice, name=f"a{i}")["accountId"] for i in range(5)]
    create(client, bob)
    page1 = client.get("/api/accounts?limit=3", headers=alice).json()
    assert [a["accountId"] for a in page1["accounts"]] == ids[::-1][:3]
    assert page1["pagination"] == {"page": 1, "limit": 3, "total": 5, "pages": 2}
    page2 = client.get("/api/accounts?limit=3&page=2", headers=alice).json()
    assert [a["accountId"] for a in page2["accounts"]] == ids[::-1][3:]
    assert client.get("/api/accounts?limit=101", headers=alice).status_code == 400
    assert client.get("/api/accounts", headers=bob).json()["pagination"]["total"] == 1


def test_money_stays_exact_to_the_cent_over_many_fundings(
    client: TestClient, context: Context, alice: Headers
) -> None:
    account_id = create(client, alice, initialCash=0.07)["accountId"]
    amounts = ["0.1", "0.01", "0.07", "1234.56", "0.29", "99.99"] * 40
    for amount in amounts:
        response = client.post(
            f"/api/accounts/{account_id}/fund", headers=alice, json={"amount": float(amount)}
        )
        assert response.status_code == 200, response.text
    expected = Decimal("0.07") + sum(Decimal(a) for a in amounts)
    body = response.json()
    assert Decimal(repr(body["cash"])) == expected
    assert Decimal(repr(body["equity"])) == expected
    assert Decimal(repr(body["funded"])) == expected - Decimal("0.07")
    assert body["totalPnl"] == 0
    assert stored_cash(context, account_id) == expected


def test_concurrent_fundings_all_count(
    client: TestClient, context: Context, alice: Headers
) -> None:
    account_id = create(client, alice, initialCash=1)["accountId"]

    def fund(_: int) -> int:
        path = f"/api/accounts/{account_id}/fund"
        return client.post(path, headers=alice, json={"amount": 0.01}).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(fund, range(40))) == {200}
    assert stored_cash(context, account_id) == Decimal("1.40")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('{"amount": 0}', "greater than 0"),
        ('{"amount": -100}', "greater than 0"),
        ('{"amount": 0.001}', "no more than 2 decimal places"),
        ('{"amount": NaN}', "finite number"),
        ('{"amount": -Infinity}', "finite number"),
        ('{"amount": 1e400}', "finite number"),
        ('{"amount": "1e400"}', "at most 1,000,000,000"),
        ('{"amount": null}', "amount"),
        ("{}", "amount: Field required"),
        ('{"amount": 5, "extra": 1}', "extra"),
    ],
)
def test_bad_amounts_are_400_and_change_nothing(
    client: TestClient, context: Context, alice: Headers, body: str, fragment: str
) -> None:
    account_id = create(client, alice)["accountId"]
    response = raw_post(client, f"/api/accounts/{account_id}/fund", alice, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_input"
    assert fragment in response.json()["message"]
    assert stored_cash(context, account_id) == Decimal(100_000)


def test_cash_is_capped(client: TestClient, context: Context, alice: Headers) -> None:
    account_id = create(client, alice, initialCash=999_999_000)["accountId"]
    path = f"/api/accounts/{account_id}/fund"
    over = client.post(path, headers=alice, json={"amount": 1000.01})
    assert over.status_code == 400
    assert "at most 1,000,000,000" in over.json()["message"]
    assert "at most 1,000.00 more" in over.json()["message"]
    assert client.post(path, headers=alice, json={"amount": 1000}).json()["cash"] == 1e9
    assert client.post(path, headers=alice, json={"amount": 0.01}).status_code == 400
    assert stored_cash(context, account_id) == Decimal(1_000_000_000)


def test_reset_goes_back_to_the_initial_cash_with_nothing_held(
    client: TestClient, context: Context, alice: Headers
) -> None:
    account_id = create(client, alice, initialCash=5000)["accountId"]
    client.post(f"/api/accounts/{account_id}/fund", headers=alice, json={"amount": 250.5})
    with context.db.transaction() as session:
        session.add(_position(account_id, "SPY", 3, 500, 510))
        session.add(_order(account_id, "s-1-0", "accepted"))
    reset = client.post(f"/api/accounts/{account_id}/reset", headers=alice)
    assert reset.status_code == 200, reset.text
    body = reset.json()
    assert (body["cash"], body["equity"], body["funded"]) == (5000, 5000, 0)
    assert body["positions"] == body["openOrders"] == []
    with context.db.transaction() as session:
        assert session.query(PaperPosition).count() == 0
        assert session.query(PaperOrder).count() == 0


def test_a_running_session_blocks_reset_and_funding(
    client: TestClient, context: Context, alice: Headers
) -> None:
    account_id = create(client, alice)["accountId"]
    with context.db.transaction() as session:
        account = session.get(PaperAccount, account_id)
        assert account is not None
        account.running_session_id = "session-1"
    shown = client.get(f"/api/accounts/{account_id}", headers=alice).json()
    assert shown["session"] == {"sessionId": "session-1"}
    for action, body in [("reset", None), ("fund", {"amount": 10})]:
        response = client.post(f"/api/accounts/{account_id}/{action}", headers=alice, json=body)
        assert response.status_code == 409, response.text
        assert response.json()["sessionId"] == "session-1"
        assert "stop the session first" in response.json()["message"]
    assert stored_cash(context, account_id) == Decimal(100_000)


def test_positions_are_marked_and_only_open_orders_show(
    client: TestClient, context: Context, alice: Headers
) -> None:
    account_id = create(client, alice, initialCash=10_000)["accountId"]
    with context.db.transaction() as session:
        session.add(_position(account_id, "AAPL", 10, 150.25, 160.5))
        session.add(_position(account_id, "TSLA", -2, 200, 210.125))
        session.add(_order(account_id, "s-4-0", "accepted"))
        session.add(_order(account_id, "s-4-1", "completed"))
        session.add(_order(account_id, "s-5-0", "partial"))
    shown = client.get(f"/api/accounts/{account_id}", headers=alice).json()
    aapl, tsla = shown["positions"]
    assert (aapl["symbol"], aapl["size"], aapl["averagePrice"]) == ("AAPL", 10, 150.25)
    assert (aapl["marketValue"], aapl["unrealizedPnl"]) == (1605.0, 102.5)
    assert (tsla["marketValue"], tsla["unrealizedPnl"]) == (-420.25, -20.25)
    assert shown["equity"] == 10_000 + 1605 - 420.25
    assert shown["totalPnl"] == 1605 - 420.25
    assert [o["clientOrderId"] for o in shown["openOrders"]] == ["s-4-0", "s-5-0"]
    assert shown["openOrders"][0]["barTime"] == "2024-06-03T00:00:00Z"
    listed = client.get("/api/accounts", headers=alice).json()["accounts"]
    assert listed[0]["equity"] == shown["equity"]


def test_owners_only(client: TestClient, alice: Headers, bob: Headers) -> None:
    account_id = create(client, alice)["accountId"]
    calls = [
        ("GET", f"/api/accounts/{account_id}", None),
        ("POST", f"/api/accounts/{account_id}/fund", {"amount": 1}),
        ("POST", f"/api/accounts/{account_id}/reset", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, headers=bob, json=body)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
        missing = client.request(method, path.replace(account_id, "nope"), headers=alice, json=body)
        assert missing.status_code == 404
        assert missing.json()["error"] == "not_found"
        assert client.request(method, path, json=body).status_code == 401
    assert client.get(f"/api/accounts/{account_id}", headers=alice).json()["cash"] == 100_000


def _position(account_id: str, symbol: str, size: float, average: float, last: float) -> Any:
    return PaperPosition(
        account_id=account_id,
        symbol=symbol,
        size=size,
        average_price=average,
        last_price=last,
        marked_at=BAR_TIME,
    )


def _order(account_id: str, client_order_id: str, status: str) -> Any:
    return PaperOrder(
        account_id=account_id,
        client_order_id=client_order_id,
        session_id="s",
        symbol="SPY",
        size=1,
        type="market",
        status=status,
        bar_time=BAR_TIME,
    )
