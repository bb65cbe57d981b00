"""The backtest page over a real sandboxed run: progress events, charts' data, tables, logs."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_support import csrf_of, sign_in, upload

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.users.service import create_user
from farm.web import sse

TRADER = b"""import backtrader as bt


class Flipper(bt.Strategy):
    def next(self):
        print("bar", len(self))
        if len(self) % 5 == 0:
            self.close() if self.position else self.buy(size=10)

    def get_decision_reasoning(self):
        return "</script><script>alert(1)</script> close is " + str(self.data.close[0])

    def get_decision_confidence(self):
        return 0.75
"""
FAILS = b"""import backtrader as bt


class Boom(bt.Strategy):
    def next(self):
        raise RuntimeError("<b>kaboom</b>")
"""


@pytest.fixture
def worked(tmp_path: Path, real_bars: Path) -> Iterator[TestClient]:
    """The app with one backtest worker, signed in as ``alice``."""
    home = tmp_path / "farm"
    shutil.copytree(real_bars, home / "bars")
    settings = Settings(home=home, backtest_workers=1, sandbox_wall_s=120)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            _, token = create_user(session, "alice")
        sign_in(client, token)
        yield client


def start(client: TestClient, code: bytes, name: str, **fields: object) -> str:
    """Upload ``code`` and start a backtest of it from its page (``fields`` change the form);
    returns the backtest page's URL."""
    agent_url = upload(client, code, name)
    form = {
        "csrf": csrf_of(client.get(agent_url).text),
        "symbols": ["AAPL", "SPY"],
        "start_date": "2023-01-01",
        "end_date": "2023-04-30",
        "initial_cash": "10000",
        "commission": "0.001",
        **fields,
    }
    started = client.post(f"{agent_url}/backtests", data=form)
    assert started.status_code == 303, started.text
    return str(started.headers["location"])


def events_until_done(client: TestClient, url: str) -> list[dict[str, object]]:
    seen = []
    with client.stream("GET", f"{url}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
    return seen


def queued_backtest(client: TestClient, name: str) -> str:
    """A small backtest that stays queued (``web`` has no workers); its page's URL."""
    return start(
        client,
        TRADER,
        name,
        symbols=["SPY"],
        end_date="2023-02-01",
        initial_cash="1000",
        commission="0",
    )


@pytest.mark.sandbox
def test_a_completed_backtest_page_has_cards_charts_tables_and_logs(worked: TestClient) -> None:
    url = start(worked, TRADER, "flipper")
    first = worked.get(url)
    assert first.status_code == 200
    events = events_until_done(worked, url)
    assert events[-1]["status"] == "completed", events
    assert events[-1]["done"] == events[-1]["total"]
    page = worked.get(url).text
    assert "Sharpe" in page
    assert "Equity versus AAPL" in page
    data = json.loads(re.search(r'id="chart-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["equity"]) > 50
    assert data["equity"][0]["value"] == pytest.approx(10_000)
    assert data["benchmark"][0]["value"] == pytest.approx(10_000)
    assert all(p["value"] <= 0 for p in data["drawdown"])
    assert data["markers"], "trades are drawn on the price chart"
    times = [p["time"] for p in data["price"]]
    assert times == sorted(times)
    assert "No closed trades" not in page
    assert "bar 1\n" in page  # the agent's logs
    late = worked.post(f"{url}/cancel", data={"csrf": csrf_of(page)})
    assert late.status_code == 409
    assert f"Not cancelled: backtest {url.rsplit('/', 1)[1]} is completed already" in late.text
    assert "Sharpe" in late.text  # the results, under the message
    assert f'<form method="get" action="{url}"' in late.text  # links work from the post's URL
    spy = worked.get(f"{url}?symbol=SPY&trades_from=1")
    assert "Trades on SPY" in spy.text
    assert worked.get(f"{url}?symbol=NOPE").status_code == 400

    session_id = url.rsplit("/", 1)[1]
    listed = worked.get(f"/decisions?session={session_id}&action=buy")
    assert listed.status_code == 200
    assert "<script>alert(1)" not in listed.text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in listed.text
    assert f'href="/decisions/compare?a={session_id}"' in listed.text  # the picker, this one chosen
    analytics = worked.get(f"/decisions/analytics?session={session_id}").text
    assert 'id="actions-chart"' in analytics
    assert "P&amp;L by confidence" in analytics
    assert "format=csv&amp;records=trades" in analytics
    decision_url = re.search(r'href="(/decisions/[^"?]+:\d+)"', listed.text).group(1)  # type: ignore[union-attr]
    decision = worked.get(decision_url).text
    assert "<strong>Saw</strong> On the bar of" in decision
    assert "<strong>Did</strong> Buy: buy 10 AAPL" in decision
    assert "confidence 75%" in decision
    assert "filled at" in decision
    exported = worked.get(f"/decisions/export?agent={data_agent(page)}&session={session_id}")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.count("\n") > 10
    compared = worked.get(f"/decisions/compare?a={session_id}&b={session_id}")
    assert (
        len(re.findall(rf"<h3>[^<]* · backtest · [^<]* · {session_id[:8]}</h3>", compared.text))
        == 2
    )


def data_agent(page: str) -> str:
    return re.search(r'href="/agents/([0-9a-f-]{36})"', page).group(1)  # type: ignore[union-attr]


@pytest.mark.sandbox
def test_a_failed_backtest_is_explained(worked: TestClient) -> None:
    url = start(worked, FAILS, "boom")
    events_until_done(worked, url)
    page = worked.get(url).text
    assert "Why it failed: agent_error" in page
    assert "raised an exception" in page
    assert "&lt;b&gt;kaboom&lt;/b&gt;" in page
    assert "<b>kaboom" not in page


def test_the_progress_stream_is_the_owners_only(
    signed_in: TestClient, make_token: Callable[[str], str]
) -> None:
    url = queued_backtest(signed_in, "q")
    queued = signed_in.get(url)
    assert queued.status_code == 200
    assert f'data-events="{url}/events"' in queued.text
    sign_in(signed_in, make_token("eve"))
    assert signed_in.get(url).status_code == 404
    assert signed_in.get(f"{url}/events").status_code == 404


def test_the_owner_cancels_a_queued_backtest_from_its_page(
    web: TestClient, make_token: Callable[[str], str]
) -> None:
    alice, eve = make_token("alice"), make_token("eve")
    sign_in(web, alice)
    url = queued_backtest(web, "to cancel")
    queued = web.get(url).text
    assert f'<form method="post" action="{url}/cancel">' in queued
    assert web.post(f"{url}/cancel").status_code == 403
    forged = web.post(f"{url}/cancel", data={"csrf": "not-the-cookie"})
    assert forged.status_code == 403
    assert "security token" in forged.text

    sign_in(web, eve)
    theirs = web.post(f"{url}/cancel", data={"csrf": csrf_of(web.get("/agents").text)})
    assert theirs.status_code == 404  # as another user's backtest page is

    sign_in(web, alice)
    page = web.get(url).text
    assert '<strong data-field="status">queued</strong>' in page  # neither post cancelled it
    cancelled = web.post(f"{url}/cancel", data={"csrf": csrf_of(page)})
    assert cancelled.status_code == 303
    assert cancelled.headers["location"] == url
    after = web.get(url).text
    assert '<strong id="status">cancelled</strong>' in after
    assert f"{url}/cancel" not in after  # no cancel button once it has ended

    late = web.post(f"{url}/cancel", data={"csrf": csrf_of(page)})  # e.g. from a second tab
    assert late.status_code == 409
    assert "Not cancelled: backtest" in late.text
    assert "is cancelled already; nothing to cancel" in late.text
    assert '<strong id="status">cancelled</strong>' in late.text


def test_live_streams_are_bounded_in_time_and_per_user(
    signed_in: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = queued_backtest(signed_in, "bounded")
    monkeypatch.setattr(sse, "MAX_STREAM_S", 0.0)  # no workers here: it stays queued
    signed_in.app.state.stream_slots = sse.StreamSlots(per_user=1)  # type: ignore[attr-defined]
    for _ in range(2):  # the first stream's slot is given back when it ends
        with signed_in.stream("GET", f"{url}/events") as stream:
            lines = list(stream.iter_lines())
        assert "event: progress" in lines
        assert json.loads(lines[lines.index("event: progress") + 1][6:])["status"] == "queued"
    signed_in.app.state.stream_slots = sse.StreamSlots(per_user=0)  # type: ignore[attr-defined]
    with signed_in.stream("GET", f"{url}/events") as stream:
        busy = list(stream.iter_lines())
    assert busy[:2] == [f"retry: {sse.BUSY_RETRY_MS}", "event: busy"]
