"""The web pages: bytes transferred and server render time, against the JSON API for the same
data measured the same way in the same run.

Builds a fresh FARM_HOME over the bars in ../shared/data (FARM_TEST_DATA), signs a user in,
uploads an agent, runs one backtest and the agent's standard evaluation in the sandbox (so the
pages have real content: 250 bars, trades, decisions, a leaderboard row), opens a paper
account, then requests each page and its JSON counterpart through the ASGI app in process
(middleware included, no network) and reports:

- transferred: the page's HTML plus every /static file it references (a cold cache; no
  compression), which must stay under 300 KB;
- render: the median and p95 of the page's server time over --repeat requests, which must stay
  under 50 ms at the median; ``ratio`` divides it by the API endpoint's median.

    .venv/bin/python bench/web.py [--repeat 40]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.users.service import create_user

DATA = Path(os.environ.get("FARM_TEST_DATA", Path(__file__).parents[2] / "shared" / "data"))
AGENT = b"""import backtrader as bt


class Swing(bt.Strategy):
    def next(self):
        if len(self) % 3 == 0:
            self.close() if self.position else self.buy(size=5)

    def get_decision_reasoning(self):
        return "every third bar"

    def get_decision_confidence(self):
        return 0.6
"""
PAGE_LIMIT_BYTES = 300 * 1024
RENDER_LIMIT_MS = 50.0
STATIC = re.compile(r'(?:src|href)="(/static/[^"?]+)')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def wait_done(client: TestClient, headers: dict[str, str], session_id: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = client.get(f"/api/backtest/{session_id}/results", headers=headers).json()
        if status["status"] in {"completed", "failed", "cancelled"}:
            assert status["status"] == "completed", status
            return
        time.sleep(0.2)
    raise SystemExit(f"backtest {session_id} did not finish")


WARMUP = 5


def timed(client: TestClient, url: str, repeat: int, headers: dict[str, str]) -> list[float]:
    """Milliseconds per request, after ``WARMUP`` untimed ones."""
    for _ in range(WARMUP):
        client.get(url, headers=headers)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:300])
    return times


def transferred(client: TestClient, url: str) -> tuple[int, int]:
    """(HTML bytes, HTML plus referenced static files)."""
    html = client.get(url).content
    assets = sum(len(client.get(path).content) for path in set(STATIC.findall(html.decode())))
    return len(html), len(html) + assets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="farm-bench-web-"))
    data = home / "data"
    data.mkdir()
    for symbol in ("SPY", "AAPL"):
        shutil.copy(DATA / "daily" / f"{symbol}.csv", data)
    settings = Settings(
        home=home / "farm",
        data_dir=data,
        backtest_workers=2,
        standard_symbols=["SPY", "AAPL"],
        standard_start="2023-01-01",
        standard_end="2023-12-31",
        rate_limits=False,
    )
    try:
        with TestClient(create_app(settings), follow_redirects=False) as client:
            run(client, args.repeat)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(client: TestClient, repeat: int) -> None:
    context: Context = client.app.state.context  # type: ignore[attr-defined]
    with context.db.transaction() as session:
        _, token = create_user(session, "bench")
    api = {"Authorization": f"Bearer {token}"}
    csrf = CSRF.search(client.get("/signin").text).group(1)  # type: ignore[union-attr]
    assert client.post("/signin", data={"token": token, "csrf": csrf}).status_code == 303
    agent_id = (
        client.post(
            "/agents", data={"name": "Swing", "csrf": csrf}, files={"file": ("s.py", AGENT)}
        )
        .headers["location"]
        .rsplit("/", 1)[1]
    )
    form = {
        "csrf": csrf,
        "symbols": ["AAPL", "SPY"],
        "start_date": "2023-01-01",
        "end_date": "2023-12-31",
        "initial_cash": "100000",
        "commission": "0.001",
    }
    backtest = client.post(f"/agents/{agent_id}/backtests", data=form).headers["location"]
    session_id = backtest.rsplit("/", 1)[1]
    wait_done(client, api, session_id)
    for standard in client.get(f"/api/agents/{agent_id}/backtests", headers=api).json()["sessions"]:
        wait_done(client, api, standard["sessionId"])
    client.post("/paper/accounts", data={"name": "bench", "csrf": csrf})
    decision = client.get(f"/api/fmel/decisions?sessionId={session_id}&limit=1", headers=api)
    decision_id = decision.json()["decisions"][0]["decisionId"]
    pages = [
        ("leaderboard", "/?type=backtest", "/api/leaderboard?type=backtest&limit=50"),
        ("my agents", "/agents", "/api/agents/list"),
        ("agent", f"/agents/{agent_id}", f"/api/agents/{agent_id}?include=source"),
        (
            "backtest",
            backtest,
            f"/api/backtest/{session_id}/equity?limit=1000",
        ),
        (
            "decisions",
            f"/decisions?session={session_id}",
            f"/api/fmel/decisions?sessionId={session_id}",
        ),
        (
            "analytics",
            f"/decisions/analytics?session={session_id}",
            f"/api/fmel/analytics?agentId={agent_id}&sessionId={session_id}",
        ),
        ("decision", f"/decisions/{decision_id}", f"/api/fmel/decisions/{decision_id}"),
        ("paper", "/paper", "/api/accounts"),
        ("paper live", f"/paper/{agent_id}", f"/api/paper-trading/status/{agent_id}"),
    ]
    print(
        f"{'page':<12} {'html KB':>8} {'total KB':>9} {'median ms':>10} {'p95 ms':>7} "
        f"{'api ms':>7} {'ratio':>6}"
    )
    failures = []
    for name, page, endpoint in pages:
        html, total = transferred(client, page)
        page_ms = timed(client, page, repeat, {})
        api_ms = timed(client, endpoint, repeat, api)
        median, api_median = statistics.median(page_ms), statistics.median(api_ms)
        p95 = statistics.quantiles(page_ms, n=20)[-1]
        print(
            f"{name:<12} {html / 1024:>8.1f} {total / 1024:>9.1f} {median:>10.1f} {p95:>7.1f} "
            f"{api_median:>7.1f} {median / api_median:>6.2f}"
        )
        if total > PAGE_LIMIT_BYTES:
            failures.append(f"{name}: {total} bytes transferred")
        if median > RENDER_LIMIT_MS:
            failures.append(f"{name}: {median:.1f} ms median")
    print("api: the JSON endpoint for the same data (same client, same app); ratio = page / api")
    if failures:
        print("OVER BUDGET: " + "; ".join(failures))
        sys.exit(1)
    print(f"every page under {PAGE_LIMIT_BYTES // 1024} KB and {RENDER_LIMIT_MS:.0f} ms median")


if __name__ == "__main__":
    main()
