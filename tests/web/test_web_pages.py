"""The pages through the ASGI app: status, content, escaping, sign-in, CSRF and ownership."""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from web_support import csrf_of, sign_in, upload

GOOD = b"""import backtrader as bt


class Buyer(bt.Strategy):
    def next(self):
        if not self.position:
            self.buy()
"""
HOSTILE = '<script>alert("x")</script>&"\'</title>'


def test_leaderboard_is_public_and_explains_psr_and_dsr(web: TestClient) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<h1>Leaderboard</h1>" in page.text
    assert "Probabilistic Sharpe ratio" in page.text
    assert "Deflated Sharpe ratio" in page.text
    assert "Forward:" in page.text
    in_sample = web.get("/?type=backtest&metric=returns&timeframe=weekly")
    assert "In-sample:" in in_sample.text
    assert '<option value="returns" selected>' in in_sample.text
    nonsense = web.get("/?metric=nonsense")
    assert nonsense.status_code == 400
    assert nonsense.headers["content-type"].startswith("text/html")  # a page, not JSON
    assert "metric: Input should be" in nonsense.text
    assert "farm_csrf" in page.cookies
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy  # no inline script would run, whatever got in
    assert "frame-ancestors 'none'" in policy


def test_pages_that_need_a_user_send_visitors_to_sign_in(web: TestClient) -> None:
    response = web.get("/agents?page=2")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=%2Fagents%3Fpage%3D2"


def test_sign_in_sets_a_safe_cookie_and_sign_out_clears_it(
    web: TestClient, make_token: Callable[[str], str]
) -> None:
    token = make_token("bob")
    form = web.get("/signin?next=/agents")
    bad = web.post("/signin", data={"token": "farm_wrong", "csrf": csrf_of(form.text)})
    assert bad.status_code == 401
    assert "not valid" in bad.text
    good = web.post(
        "/signin", data={"token": token, "csrf": csrf_of(form.text), "next": "//evil.example/x"}
    )
    assert good.status_code == 303
    assert good.headers["location"] == "/agents"  # never another site
    cookie = good.headers["set-cookie"]
    assert "farm_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure over HTTPS
    agents = web.get("/agents")
    assert agents.status_code == 200
    assert "Sign out bob" in agents.text
    out = web.post("/signout", data={"csrf": csrf_of(agents.text)})
    assert out.status_code == 303
    assert "farm_session" not in web.cookies
    assert web.get("/agents").status_code == 303


def test_secure_cookie_over_https(web: TestClient, make_token: Callable[[str], str]) -> None:
    token = make_token("carol")
    form = web.get("https://testserver/signin")
    response = web.post(
        "https://testserver/signin", data={"token": token, "csrf": csrf_of(form.text)}
    )
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


def test_forms_without_the_csrf_token_are_refused(signed_in: TestClient) -> None:
    refused = signed_in.post("/agents", data={"name": "x"}, files={"file": ("a.py", GOOD)})
    assert refused.status_code == 403
    assert "security token" in refused.text
    forged = signed_in.post("/signout", data={"csrf": "not-the-cookie"})
    assert forged.status_code == 403
    assert signed_in.get("/agents").status_code == 200  # still signed in


def test_upload_shows_the_syntax_error_line_inline(signed_in: TestClient) -> None:
    csrf = csrf_of(signed_in.get("/agents").text)
    bad = b"import backtrader as bt\n\nclass X(bt.Strategy):\n    def next(self)\n        pass\n"
    response = signed_in.post(
        "/agents", data={"name": "broken", "csrf": csrf}, files={"file": ("x.py", bad)}
    )
    assert response.status_code == 400
    assert "line 4" in response.text
    assert "    def next(self)" in response.text
    assert 'value="broken"' in response.text  # the form keeps what was typed


def test_hostile_names_and_code_are_escaped_everywhere(signed_in: TestClient) -> None:
    csrf = csrf_of(signed_in.get("/agents").text)
    code = GOOD + b"# </script><script>alert(1)</script>\n"
    response = signed_in.post(
        "/agents",
        data={"name": HOSTILE, "description": HOSTILE, "tags": "<b>t</b>", "csrf": csrf},
        files={"file": ("x.py", code)},
    )
    assert response.status_code == 303, response.text
    agent_url = response.headers["location"]
    for url in ("/agents", agent_url, f"{agent_url}/delete"):
        html = signed_in.get(url).text
        assert "<script>alert" not in html, url
        assert "&lt;script&gt;alert(" in html, url
    assert "<b>t</b>" not in signed_in.get(agent_url).text


def test_upload_list_show_and_delete_with_confirmation(signed_in: TestClient) -> None:
    agent_url = upload(signed_in, GOOD, "Buyer one")
    agent_id = agent_url.rsplit("/", 1)[1]
    listing = signed_in.get("/agents").text
    assert "Buyer one" in listing
    page = signed_in.get(agent_url).text
    assert 'class="code"' in page  # highlighted
    assert '<option value="SPY" selected>' in page  # the symbol picker, from the stored data
    confirm = signed_in.get(f"{agent_url}/delete")
    assert "Delete the agent" in confirm.text
    deleted = signed_in.post(f"{agent_url}/delete", data={"csrf": csrf_of(confirm.text)})
    assert deleted.status_code == 303
    assert agent_id not in signed_in.get("/agents").text
    assert signed_in.get(agent_url).status_code == 404


def test_another_users_pages_are_404(
    signed_in: TestClient, make_token: Callable[[str], str]
) -> None:
    agent_url = upload(signed_in, GOOD, "mine")
    sign_in(signed_in, make_token("mallory"))
    for url in (agent_url, f"{agent_url}/delete"):
        response = signed_in.get(url)
        assert response.status_code == 404, url
        assert "mine" not in response.text
    csrf = csrf_of(signed_in.get("/agents").text)
    assert signed_in.post(f"{agent_url}/delete", data={"csrf": csrf}).status_code == 404


def test_start_backtest_form_errors_come_back_inline(signed_in: TestClient) -> None:
    agent_url = upload(signed_in, GOOD, "b")
    csrf = csrf_of(signed_in.get(agent_url).text)
    form = {
        "csrf": csrf,
        "symbols": ["SPY"],
        "start_date": "2023-05-01",
        "end_date": "not a date",
        "initial_cash": "1000",
        "commission": "0.001",
    }
    response = signed_in.post(f"{agent_url}/backtests", data=form)
    assert response.status_code == 400
    assert "YYYY-MM-DD" in response.text
    started = signed_in.post(f"{agent_url}/backtests", data={**form, "end_date": "2023-06-01"})
    assert started.status_code == 303
    assert re.fullmatch(r"/backtests/[0-9a-f-]{36}", started.headers["location"])


def test_static_files_are_served_locally_beside_the_api_docs_assets(web: TestClient) -> None:
    page = web.get("/").text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page), "no CDN, no other host"
    chart = web.get("/static/vendor/lightweight-charts.standalone.production.js")
    assert chart.status_code == 200
    assert "Lightweight Charts" in chart.text[:400]
    assert "Apache License" in web.get("/static/vendor/lightweight-charts.LICENSE").text
    assert web.get("/static/app.css").status_code == 200
    assert web.get("/static/docs/swagger-ui.css").status_code == 200  # the API docs' own mount
    assert web.get("/docs").status_code == 200


def test_pages_are_not_in_the_api_contract(web: TestClient) -> None:
    paths = web.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if not p.startswith(("/api/", "/health", "/metrics"))]
