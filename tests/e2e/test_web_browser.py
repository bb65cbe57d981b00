"""End to end in a real browser (Playwright driving Debian's Chromium) against `farm up`:
sign in, upload a broken then a good agent, run a backtest and watch it finish, see the equity
chart drawn, read a decision, paper trade and see bars arrive live, stop, compare the backtest
with the paper session, see the leaderboard, cancel a long backtest; CSRF refused, another
user's pages 404. Screenshots of each page go to FARM_WEB_SCREENSHOTS
(default: tmp/artifacts/screenshots in the repository, ignored by git)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from server_support import Server, copy_daily, farm, start_server

from support import require_backend

CHROMIUM = os.environ.get("FARM_TEST_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("FARM_WEB_SCREENSHOTS", REPO / "tmp" / "artifacts" / "screenshots"))
BROKEN = b"import backtrader as bt\n\nclass Bad(bt.Strategy):\n    def next(self)\n        pass\n"
GOOD = b"""import backtrader as bt


class Swing(bt.Strategy):
    def next(self):
        if len(self) % 3 == 0:
            self.close() if self.position else self.buy(size=5)

    def get_decision_reasoning(self):
        return "every third bar I flip"

    def get_decision_confidence(self):
        return 0.6
"""
SLEEPER = b"""import time
import backtrader as bt


class Sleeper(bt.Strategy):
    def next(self):
        if len(self) > 5:
            time.sleep(3600)
"""

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(420)]  # ~75 s on a quiet machine


@pytest.fixture
def server(tmp_path: Path, shared_data: Path) -> Iterator[Server]:
    data = copy_daily(shared_data, tmp_path / "data", ["SPY", "AAPL"])
    running = start_server(
        tmp_path / "home",
        FARM_DATA_DIR=str(data),
        FARM_BACKTEST_WORKERS="2",
        FARM_STANDARD_SYMBOLS='["SPY","AAPL"]',
        FARM_STANDARD_START="2023-01-01",
        FARM_STANDARD_END="2023-06-30",
        FARM_FEED="replay",
        FARM_FEED_INTERVAL_S="0.3",
        FARM_FEED_REPLAY_START="2020-01-02",
        FARM_RATE_LIMITS="false",
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def chromium() -> Iterator[Browser]:
    problem = None if Path(CHROMIUM).exists() else f"{CHROMIUM} is missing (make browser-deps)"
    require_backend("Chromium", problem)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def canvas_is_drawn(page: Page, selector: str) -> bool:
    """True when a canvas inside ``selector`` has many distinct pixel colours (not blank)."""
    colours: int = page.evaluate(
        """(sel) => {
            let most = 0;
            for (const c of document.querySelectorAll(sel + ' canvas')) {
                if (!c.width || !c.height) continue;
                const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const seen = new Set();
                for (let i = 0; i < px.length; i += 28) {
                    seen.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);
                }
                most = Math.max(most, seen.size);
            }
            return most;
        }""",
        selector,
    )
    return colours > 10


def test_the_web_app_in_a_browser(server: Server, chromium: Browser) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser = chromium
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    url = server.url
    refused: list[str] = []  # what the pages' Content-Security-Policy had to block
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)

    def shot(name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    # Sign in with the first user's API token.
    page.goto(f"{url}/agents")
    assert "/signin" in page.url
    shot("01-sign-in")
    page.fill("#token", server.env["FARM_TOKEN"])
    page.click("form[action='/signin'] button[type=submit]")
    page.wait_for_url(f"{url}/agents")

    # A broken agent: the error names the line, inline.
    page.fill("#name", "Broken <b>one</b>")
    page.set_input_files("#file", {"name": "bad.py", "mimeType": "text/x-python", "buffer": BROKEN})
    page.click("form[action='/agents'] button[type=submit]")
    error = page.locator("#upload-error")
    assert "line 4" in error.inner_text()
    assert "def next(self)" in error.inner_text()
    shot("02-upload-error")

    # A good one: its page, with highlighted code.
    page.fill("#name", "Swing")
    page.set_input_files("#file", {"name": "swing.py", "mimeType": "text/x-python", "buffer": GOOD})
    page.click("form[action='/agents'] button[type=submit]")
    page.wait_for_url(f"{url}/agents/*")
    agent_url = page.url
    agent_id = agent_url.rsplit("/", 1)[1]
    assert "class Swing(bt.Strategy)" in page.locator(".codebox").inner_text()
    assert page.locator(".codebox .k").count() > 0  # keywords highlighted
    shot("03-agent")

    # Start a backtest and watch it complete (the progress stream reloads the page).
    page.select_option("#symbols", ["AAPL", "SPY"])
    page.fill("#start_date", "2023-01-01")
    page.fill("#end_date", "2023-06-30")
    page.click("form[action$='/backtests'] button[type=submit]")
    page.wait_for_url(f"{url}/backtests/*")
    backtest_url = page.url
    page.wait_for_selector("#status:text('completed')", timeout=150_000)
    page.wait_for_function("() => window.farmCharts && window.farmCharts.equity")
    page.wait_for_timeout(300)  # one animation frame or two to paint
    assert canvas_is_drawn(page, "#equity-chart")
    assert canvas_is_drawn(page, "#price-chart")
    shot("04-backtest")

    # A decision, in words.
    page.click("text=Explore its decisions")
    page.wait_for_selector("table a[href^='/decisions/']")
    shot("05-decisions")
    page.locator("table a[href^='/decisions/']").first.click()
    words = page.locator("#in-words").inner_text()
    assert "Saw" in words
    assert "every third bar I flip" in words
    shot("06-decision")

    # Paper trading: start, see bars arrive without reloading, stop and liquidate.
    page.goto(f"{url}/paper?agent={agent_id}")
    page.select_option("#paper-symbols", ["AAPL"])
    page.click("form[action='/paper/start'] button[type=submit]")
    page.wait_for_url(f"{url}/paper/{agent_id}")
    page.evaluate("() => { window.__same_page = true; }")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-field=bars]').textContent) >= 2",
        timeout=60_000,
    )
    assert page.evaluate("() => window.__same_page") is True  # it came over SSE, not a reload
    page.wait_for_function(
        "() => window.farmCharts.live && window.farmCharts.live.data().length >= 2"
    )
    shot("07-paper-live")
    page.check("input[name=liquidate]")
    page.click("form[action$='/stop'] button[type=submit]")
    page.wait_for_selector("[data-field=status]:text('stopped')", timeout=60_000)
    assert page.locator("form[action$='/stop']").is_hidden()
    shot("08-paper-stopped")

    # Compare the backtest with the paper session, both picked by agent, kind and date.
    page.goto(f"{url}/decisions/compare")
    backtest_id = backtest_url.rsplit("/", 1)[1]
    picked = page.locator(f"#compare-a option[value='{backtest_id}']").inner_text()
    assert picked.startswith("Swing · backtest · ")
    paper_id = page.locator("#compare-b option", has_text="Swing · paper trading").first
    page.select_option("#compare-a", backtest_id)
    page.select_option("#compare-b", paper_id.get_attribute("value"))
    page.click("form[action='/decisions/compare'] button[type=submit]")
    page.wait_for_url(f"{url}/decisions/compare?a=*")
    assert page.locator(".two section").count() == 2
    assert page.locator(".two section", has_text="decisions:").count() == 2
    shot("08b-compare")

    # CSRF: a form post without the token is refused.
    status = page.evaluate(
        "() => fetch('/signout', {method: 'POST', body: new URLSearchParams({csrf: 'forged'})})"
        ".then(r => r.status)"
    )
    assert status == 403

    # The leaderboard (the agent's standard evaluation ranks it on the backtest board), and on
    # a phone-sized screen.
    deadline = time.monotonic() + 150
    while True:
        page.goto(f"{url}/?type=backtest")
        if page.locator(f"a[href='/a/{agent_id}']").count():
            break
        assert time.monotonic() < deadline, "the agent never reached the backtest board"
        page.wait_for_timeout(1000)
    assert page.locator("svg.spark polyline").count() >= 1
    shot("09-leaderboard")
    page.click(f"a[href='/a/{agent_id}']")
    assert "Ranks" in page.locator("main").inner_text()
    assert page.locator(".codebox").count() == 0  # the public page never shows the code
    shot("09b-public-agent")
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    small = phone.new_page()
    small.goto(f"{url}/?type=backtest")
    small.screenshot(path=str(SHOTS / "10-leaderboard-phone.png"), full_page=True)
    wide: int = small.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= 400, "the page must fit a phone's width (tables scroll inside their box)"

    # A long backtest, cancelled from its page while it runs; then its agent deleted (which
    # cancels the agent's standard evaluation, asleep too).
    page.goto(f"{url}/agents")
    page.fill("#name", "Sleeper")
    page.set_input_files(
        "#file", {"name": "sleeper.py", "mimeType": "text/x-python", "buffer": SLEEPER}
    )
    page.click("form[action='/agents'] button[type=submit]")
    page.wait_for_url(f"{url}/agents/*")
    sleeper_url = page.url
    page.select_option("#symbols", ["SPY"])
    page.click("form[action$='/backtests'] button[type=submit]")
    page.wait_for_url(f"{url}/backtests/*")
    page.wait_for_selector("[data-field=status]:text('running')", timeout=60_000)
    shot("10b-backtest-running")
    page.click("form[action$='/cancel'] button[type=submit]")
    page.wait_for_selector("#status:text('cancelled')")
    assert page.locator("form[action$='/cancel']").count() == 0
    shot("10c-backtest-cancelled")
    page.goto(f"{sleeper_url}/delete")
    page.click("form[action$='/delete'] button[type=submit]")
    page.wait_for_url(f"{url}/agents")

    # Another user sees none of it.
    made = farm(server.env, "users", "create", "bob")
    assert made.returncode == 0, made.stderr
    bob_token = made.stdout.strip().splitlines()[-1]
    small.goto(f"{url}/signin")
    small.fill("#token", bob_token)
    small.click("form[action='/signin'] button[type=submit]")
    small.wait_for_url(f"{url}/agents")
    for other in (agent_url, backtest_url, f"{url}/paper/{agent_id}"):
        response = small.goto(other)
        assert response is not None
        assert response.status == 404, other
    small.screenshot(path=str(SHOTS / "11-not-yours.png"), full_page=True)
    phone.close()
    context.close()
    assert not refused, refused
