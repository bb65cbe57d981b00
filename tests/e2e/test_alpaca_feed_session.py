"""Live sessions on ``FARM_FEED=alpaca`` under `farm up`, against the local Alpaca server: the
minute bars it streams reach the agents (one on an Alpaca account, one on a simulated one),
their orders reach the brokers; a SIGKILL of the platform while the server goes on emitting
bars, then a restart: the feed backfills the minutes it missed from the historical bars, the
sessions resume on the stored minute bars, and each bar has exactly one FMEL decision."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from server_support import (
    api_client,
    copy_daily,
    crash,
    fmel_decisions,
    start_server,
    wait_until,
)

from alpaca_server import FakeAlpaca, alpaca_server
from farm.fmel.layout import session_dir

SYMBOLS = ["SPY", "AAPL"]
USER_KEY = "PKUSERKEY"

FLIPPER = b"""
import backtrader as bt


class Flipper(bt.Strategy):
    def next(self):
        if self.getposition(self.datas[0]).size:
            self.sell(data=self.datas[0], size=1)
        else:
            self.buy(data=self.datas[0], size=1)
"""


def _minute(t0: datetime, n: int) -> datetime:
    return t0 + timedelta(minutes=n)


def _start(api: httpx.Client, alpaca_account: str) -> tuple[dict[str, str], dict[str, str]]:
    """FLIPPER on the Alpaca account and on a simulated one: agent and session ids by name."""
    agents, sessions = {}, {}
    for name, account in (("on-alpaca", alpaca_account), ("simulated", None)):
        code = FLIPPER + f"# {name}\n".encode()  # the same code is refused twice
        submitted = api.post(
            "/api/agents/submit", data={"agentName": name}, files={"file": ("a.py", code)}
        )
        assert submitted.status_code == 201, submitted.text
        agents[name] = submitted.json()["agentId"]
        start = {"agentId": agents[name], "symbols": SYMBOLS, "warmupBars": 2}
        if account:
            start["accountId"] = account
        started = api.post("/api/paper-trading/start", json=start)
        assert started.status_code == 202, started.text
        sessions[name] = started.json()["sessionId"]
    return agents, sessions


def _subscribed(fake: FakeAlpaca) -> None:
    """Wait until the platform's data connection is up and subscribed to the symbols."""
    deadline = time.monotonic() + 30
    while not (fake.data_connected and fake.subscribed == set(SYMBOLS)):
        assert time.monotonic() < deadline, "the feed never subscribed"
        time.sleep(0.05)


@pytest.mark.sandbox
def test_live_sessions_on_the_alpaca_feed_survive_a_drop_and_a_kill(
    tmp_path: Path, shared_data: Path
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    fake = FakeAlpaca(
        secret_key="operator-data-secret",
        cash=Decimal(100_000),
        prices={"SPY": Decimal(450), "AAPL": Decimal(190)},
        auto_fill=True,
        other_keys={USER_KEY: secret},
    )
    # The warm-up: three minutes before now, from the historical bars. The live minutes are
    # dated an hour ahead, so however fast they come none of them can be taken for the warm-up
    # (which reads the bars before now).
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    t0 = now + timedelta(hours=1)

    def emit(n: int, at: datetime = t0) -> None:
        for symbol, base in (("SPY", 450.0), ("AAPL", 190.0)):
            fake.push_bar(symbol, _minute(at, n), base + n / 4)

    for n in range(-3, 0):
        emit(n, now)  # history only: no data connection yet
    with alpaca_server(fake) as (_, url):
        env = {
            "FARM_DATA_DIR": str(copy_daily(shared_data, tmp_path / "data", SYMBOLS)),
            "FARM_BACKTEST_WORKERS": "0",
            "FARM_FEED": "alpaca",
            "FARM_PAPER_POLL_S": "0.05",
            "FARM_PAPER_STEP_TIMEOUT_S": "20",
            "FARM_ALPACA_KEY_ID": fake.key_id,
            "FARM_ALPACA_SECRET_KEY": fake.secret_key,
            "FARM_ALPACA_TRADING_URL": url,
            "FARM_ALPACA_HISTORY_URL": url,
            "FARM_ALPACA_DATA_URL": url.replace("http://", "ws://"),
            "FARM_ALPACA_RECONCILE_S": "2",
        }
        home = tmp_path / "home"
        server = start_server(home, **env)
        api = api_client(server)
        try:
            created = api.post(
                "/api/accounts", json={"broker": "alpaca", "keyId": USER_KEY, "secretKey": secret}
            )
            assert created.status_code == 201, created.text
            agents, sessions = _start(api, created.json()["accountId"])
            _subscribed(fake)

            def live(minutes: range, bars: int) -> None:
                for n in minutes:
                    emit(n)
                    time.sleep(0.05)
                for agent_id in agents.values():
                    wait_until(api, agent_id, lambda s: s["barsProcessed"] >= bars, timeout=60)

            live(range(5), 5)
            user_book = fake.book(USER_KEY)
            assert user_book.posted, "no order reached the Alpaca account"
            simulated = api.get(f"/api/paper-trading/status/{agents['simulated']}").json()
            assert simulated["barsProcessed"] == 5

            # The data stream drops while three minutes go by: backfilled on the reconnect.
            fake.drop_data_stream(stay_down=True)
            for n in range(5, 8):
                emit(n)
            fake.restore_data_stream()
            live(range(8, 10), 10)

            # The platform is killed; the server goes on emitting four minutes meanwhile.
            crash(server)
            for n in range(10, 14):
                emit(n)
            server = start_server(home, FARM_PORT=server.env["FARM_PORT"], **env)
            _subscribed(fake)
            live(range(14, 16), 16)
            feed = api.get("/api/feed").json()
            assert feed["source"] == "alpaca"
            assert feed["lastBarTime"].startswith(_minute(t0, 15).isoformat()[:16])
            assert "backfilled" in (feed["message"] or "")
            for name, agent_id in agents.items():
                status = api.get(f"/api/paper-trading/status/{agent_id}").json()
                assert status["status"] == "running", status
                assert status["barsProcessed"] == 16, (name, status)
                assert f"paper session {sessions[name]} resumed" in server.output()
            assert len(user_book.posted) == len(set(user_book.posted))  # none sent twice
            assert fake.posted == []  # the operator's data key has a book of its own

            for agent_id in agents.values():
                api.post("/api/paper-trading/stop", json={"agentId": agent_id})
                wait_until(api, agent_id, lambda s: s["status"] == "stopped")
            # One decision per live minute, in order, none twice, none lost.
            for name, agent_id in agents.items():
                folder = session_dir(home / "fmel", agent_id, sessions[name])
                decisions = fmel_decisions(folder)
                warm = {d["bar_ts"] for d in decisions if d["bar_ts"] < t0}
                assert warm == {_minute(now, -2), _minute(now, -1)}, name  # warmupBars: 2
                decided = sorted((d["seq"], d["bar_ts"]) for d in decisions if d["bar_ts"] >= t0)
                assert [ts for _, ts in decided] == [_minute(t0, n) for n in range(16)], name
                assert len({seq for seq, _ in decided}) == 16
        finally:
            api.close()
            server.stop()
