"""A paper session on an Alpaca account under `farm up`, against the local Alpaca server: orders
under unique client ids, partial fills booked on the host account and in FMEL, refusals (403
buying power, 422) reaching the agent's notify_order, a SIGKILL mid-session after which no order
is sent twice and the account equals Alpaca's, and a hostile agent that finds no key."""

from __future__ import annotations

import os
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from server_support import api_client, crash, replay_env, start_server, wait_until

from alpaca_server import FakeAlpaca, alpaca_server
from farm.fmel.layout import part_names, session_dir

SYMBOLS = ["SPY", "AAPL", "MSFT"]  # MSFT is not tradable at the local Alpaca: 422

TRADER = b"""
import backtrader as bt


class Trader(bt.Strategy):
    def __init__(self):
        self.seen = []

    def notify_order(self, order):
        if order.status == order.Rejected:
            self.seen.append("rejected " + order.data._name)

    def next(self):
        n = len(self)
        spy, aapl, msft = self.datas
        if n % 3 == 0:
            self.buy(data=spy, size=4)
        elif n % 3 == 2 and self.getposition(spy).size:
            self.sell(data=spy, size=2)
        if n == 4:
            self.buy(data=aapl, size=10_000_000)
        if n == 5:
            self.buy(data=msft, size=1)

    def get_decision_reasoning(self):
        return "; ".join(self.seen) or None
"""

# Looks for anything shaped like the Alpaca secret in its environment, every file it can read,
# every process it can see and its own memory; reports what it found in its reasoning.
SEEKER = b"""
import gc
import os
import re

import backtrader as bt

PATTERN = re.compile(rb"s3cret-[0-9a-f]{32}")


def scan(data, where, found):
    if PATTERN.search(data):
        found.append(where)


class Seeker(bt.Strategy):
    def __init__(self):
        self.report = None

    def next(self):
        if self.report is not None:
            return
        found, files = [], 0
        for key, value in os.environ.items():
            scan((key + "=" + value).encode(), "env " + key, found)
        for root, dirs, names in os.walk("/"):
            if root in ("/proc", "/sys", "/dev"):
                dirs[:] = []
                continue
            for name in names[:2000]:
                path = os.path.join(root, name)
                try:
                    with open(path, "rb") as fh:
                        scan(fh.read(1 << 18), path, found)
                    files += 1
                except OSError:
                    pass
        procs = 0
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                for part in ("environ", "cmdline"):
                    try:
                        with open(f"/proc/{pid}/{part}", "rb") as fh:
                            scan(fh.read(), f"/proc/{pid}/{part}", found)
                        procs += 1
                    except OSError:
                        pass
        for obj in gc.get_objects():
            if isinstance(obj, (str, bytes)):
                scan(obj.encode() if isinstance(obj, str) else obj, "memory", found)
        self.report = f"found {found}" if found else f"nothing in {files} files, {procs} proc"

    def get_decision_reasoning(self):
        return self.report
"""


def _records(home: Path, agent_id: str, session_id: str, kind: str) -> list[dict[str, Any]]:
    folder = session_dir(home / "fmel", agent_id, session_id)
    rows: list[dict[str, Any]] = []
    for name in part_names(os.listdir(folder), kind):
        rows += pq.read_table(folder / name).to_pylist()
    return rows


def _submit(api: httpx.Client, code: bytes, name: str) -> str:
    response = api.post(
        "/api/agents/submit", data={"agentName": name}, files={"file": ("a.py", code)}
    )
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["agentId"]
    return agent_id


@pytest.mark.sandbox
def test_an_alpaca_session_survives_a_kill_and_keeps_its_key_secret(
    tmp_path: Path, shared_data: Path
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    fake = FakeAlpaca(
        secret_key=secret,
        cash=Decimal(1_000_000),
        prices={"SPY": Decimal("450.25"), "AAPL": Decimal("190.5")},
        auto_fill=True,
        split_fills=True,  # every market order fills in two partial fills
    )
    with alpaca_server(fake) as (_, url):
        env = {
            **replay_env(tmp_path / "data", shared_data, SYMBOLS),
            "FARM_FEED_INTERVAL_S": "0.25",
            "FARM_PAPER_STEP_TIMEOUT_S": "60",
            "FARM_ALPACA_TRADING_URL": url,
            "FARM_ALPACA_RECONCILE_S": "2",
        }
        home = tmp_path / "home"
        server = start_server(home, **env)
        api = api_client(server)
        try:
            created = api.post(
                "/api/accounts",
                json={"broker": "alpaca", "keyId": fake.key_id, "secretKey": secret},
            )
            assert created.status_code == 201, created.text
            account_id = created.json()["accountId"]
            trader = _submit(api, TRADER, "trader")
            started = api.post(
                "/api/paper-trading/start",
                json={"agentId": trader, "accountId": account_id, "symbols": SYMBOLS},
            )
            assert started.status_code == 202, started.text
            session_id = started.json()["sessionId"]
            seeker = _submit(api, SEEKER, "seeker")
            hostile = api.post(
                "/api/paper-trading/start", json={"agentId": seeker, "symbols": ["SPY"]}
            )
            assert hostile.status_code == 202, hostile.text
            wait_until(api, trader, lambda s: s["barsProcessed"] >= 30)
            crash(server)
            placed_before = list(fake.posted)

            server = start_server(home, FARM_PORT=server.env["FARM_PORT"], **env)
            wait_until(api, trader, lambda s: s["barsProcessed"] >= 38, timeout=180)
            time.sleep(3)  # a periodic reconciliation
            status = wait_until(api, trader, lambda s: s["barsProcessed"] >= 39, timeout=60)
            assert status["status"] == "running"
            assert status["broker"]["broker"] == "alpaca"
            assert status["broker"]["reconciliations"] >= 1

            # No client order id reached Alpaca twice; every one is the session's.
            assert len(fake.posted) == len(set(fake.posted)), sorted(fake.posted)
            assert all(c.startswith(session_id) for c in fake.posted)
            assert set(placed_before) < set(fake.posted)
            assert f"paper session {session_id} resumed" in server.output()

            # The host account is Alpaca's once the last orders' fills are booked (a step
            # where the agent places nothing; orders keep going out in between).
            def agrees() -> bool:
                account = api.get(f"/api/accounts/{account_id}").json()
                held = {p["symbol"]: p["size"] for p in account["positions"]}
                with fake.lock:
                    cash = fake.cash.quantize(Decimal("0.01"))
                    positions = {s: float(q) for s, (q, _) in fake.positions.items()}
                return Decimal(str(account["cash"])) == cash and held == positions

            deadline = time.monotonic() + 60
            while not agrees():
                assert time.monotonic() < deadline, "the account never equalled Alpaca's"
                time.sleep(0.05)

            api.post("/api/paper-trading/stop", json={"agentId": trader})
            api.post("/api/paper-trading/stop", json={"agentId": seeker})
            wait_until(api, trader, lambda s: s["status"] == "stopped")
            wait_until(api, seeker, lambda s: s["status"] == "stopped")

            # FMEL: the partial fills and the refusals, with Alpaca's reasons.
            executions = _records(home, trader, session_id, "executions")
            filled = [e for e in executions if e["status"] == "filled"]
            assert len(filled) >= 4
            assert any(e["size"] == 2 for e in filled if e["side"] == "buy")  # 4 in two fills
            rejected = {e["symbol"]: e["reason"] for e in executions if e["status"] == "rejected"}
            assert "insufficient buying power" in rejected["AAPL"]
            assert "not active" in rejected["MSFT"]
            decisions = _records(home, trader, session_id, "decisions")
            reasons = " ".join(d["reasoning"] or "" for d in decisions)
            assert "rejected AAPL" in reasons  # notify_order saw them
            assert "rejected MSFT" in reasons

            hunted = api.get(f"/api/paper-trading/status/{seeker}").json()
            seeker_session = hunted["sessionId"]
            notes = [
                d["reasoning"]
                for d in _records(home, seeker, seeker_session, "decisions")
                if d["reasoning"]
            ]
            assert notes, "the seeker reported nothing"
            assert all(n.startswith("nothing in") for n in notes), notes
            assert secret not in server.output()
        finally:
            api.close()
            server.stop()
