"""Paper-trading pages through the ASGI app: accounts, start refused without a feed, escaping
and ownership. (The live view with a running feed is in tests/e2e/test_web_browser.py.)"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from web_support import csrf_of, sign_in, upload

NAME = "<img src=x onerror=alert(1)>"
IDLE = b"import backtrader as bt\n\nclass S(bt.Strategy):\n    def next(self):\n        pass\n"


def account_ids(html: str) -> list[str]:
    return re.findall(r'action="/paper/accounts/([0-9a-f-]{36})/fund"', html)


def test_accounts_open_fund_and_reset(signed_in: TestClient) -> None:
    home = signed_in.get("/paper")
    assert home.status_code == 200
    csrf = csrf_of(home.text)
    opened = signed_in.post(
        "/paper/accounts", data={"name": NAME, "initial_cash": "2,500.50", "csrf": csrf}
    )
    assert opened.status_code == 303
    page = signed_in.get("/paper").text
    assert NAME not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "$2,500.50" in page
    (account,) = account_ids(page)
    funded = signed_in.post(
        f"/paper/accounts/{account}/fund", data={"amount": "0.25", "csrf": csrf}
    )
    assert funded.status_code == 303
    assert "$2,500.75" in signed_in.get("/paper").text
    for amount, why in [("1.001", "no more than 2 decimal places"), ("-5", "greater than 0")]:
        bad = signed_in.post(
            f"/paper/accounts/{account}/fund", data={"amount": amount, "csrf": csrf}
        )
        assert bad.status_code == 400  # the API body's own validation
        assert why in bad.text
    assert "$2,500.75" in signed_in.get("/paper").text
    assert (
        signed_in.post(f"/paper/accounts/{account}/reset", data={"csrf": csrf}).status_code == 303
    )
    assert "$2,500.50" in signed_in.get("/paper").text
    assert signed_in.post("/paper/accounts", data={"name": "x"}).status_code == 403


def test_start_without_a_feed_says_why(signed_in: TestClient) -> None:
    agent_id = upload(signed_in, IDLE, "s").rsplit("/", 1)[1]
    csrf = csrf_of(signed_in.get("/paper").text)
    response = signed_in.post(
        "/paper/start", data={"agent_id": agent_id, "symbols": ["SPY"], "csrf": csrf}
    )
    assert response.status_code == 503
    assert "FARM_FEED is off" in response.text
    live = signed_in.get(f"/paper/{agent_id}")
    assert live.status_code == 200
    assert "not_running" in live.text


def test_another_users_accounts_and_sessions_are_404(
    signed_in: TestClient, make_token: Callable[[str], str]
) -> None:
    csrf = csrf_of(signed_in.get("/paper").text)
    signed_in.post("/paper/accounts", data={"name": "mine", "csrf": csrf})
    (account,) = account_ids(signed_in.get("/paper").text)
    agent_id = upload(signed_in, IDLE, "s").rsplit("/", 1)[1]
    sign_in(signed_in, make_token("trudy"))
    csrf = csrf_of(signed_in.get("/paper").text)
    for url, data in (
        (f"/paper/accounts/{account}/fund", {"amount": "5", "csrf": csrf}),
        (f"/paper/accounts/{account}/reset", {"csrf": csrf}),
        (f"/paper/{agent_id}/stop", {"csrf": csrf}),
    ):
        assert signed_in.post(url, data=data).status_code == 404, url
    assert signed_in.get(f"/paper/{agent_id}").status_code == 404
    assert signed_in.get(f"/paper/{agent_id}/events").status_code == 404
    assert "mine" not in signed_in.get("/paper").text
