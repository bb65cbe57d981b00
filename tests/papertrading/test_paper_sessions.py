"""Paper sessions through real HTTP, the real runtime process, real sandboxes and real bars."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.backtest.runner import BacktestConfig, run_backtest
from farm.config import Settings
from farm.context import Context
from farm.marketdata.store import BarStore
from farm.storage.models import PaperOrder
from farm.users.service import create_user
from support import cents

pytestmark = pytest.mark.sandbox

Headers = dict[str, str]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
AGENTS = Path(__file__).resolve().parents[1] / "backtest" / "agents"
STANDARD = ["SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM"]
REPLAY_START = date(2024, 11, 25)  # about 90 steps before the last stored bar

SPIN = b"""
import backtrader as bt


class Spin(bt.Strategy):
    def next(self):
        if len(self) >= 3:
            while True:
                pass
"""

CRASH = b"""
import backtrader as bt


class Crash(bt.Strategy):
    def next(self):
        if len(self) >= 3:
            explode_here()


def explode_here():
    raise RuntimeError("boom in the agent")
"""

# Buys on its first bars (warm-up bars below), then on its sixth (the first live one after five
# warm-up bars) places a limit order far below the market.
EAGER = b"""
import backtrader as bt


class Eager(bt.Strategy):
    def next(self):
        if len(self) <= 3:
            self.buy(data=self.datas[0], size=5)
        if len(self) == 6:
            self.buy(data=self.datas[0], size=1, exectype=bt.Order.Limit, price=1.0)
"""


def paper_settings(tmp_path: Path, real_bars: Path, **overrides: Any) -> Settings:
    home = tmp_path / "farm"
    shutil.copytree(real_bars, home / "bars")
    values: dict[str, Any] = {
        "home": home,
        "backtest_workers": 0,
        "feed": "replay",
        "feed_replay_start": REPLAY_START,
        "feed_interval_s": 0.15,
        "paper_step_timeout_s": 10.0,
        "paper_poll_s": 0.05,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture
def platform(
    tmp_path: Path, real_bars: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[TestClient, Context, Headers]]:
    settings = paper_settings(tmp_path, real_bars, **getattr(request, "param", {}))
    context = Context.build(settings)
    with TestClient(create_app(settings, context=context)) as client:
        with context.db.transaction() as session:
            _, token = create_user(session, "alice")
        yield client, context, {"Authorization": f"Bearer {token}"}


def submit(client: TestClient, headers: Headers, code: bytes, name: str = "agent") -> str:
    response = client.post(
        "/api/agents/submit",
        headers=headers,
        data={"agentName": name},
        files={"file": ("agent.py", code)},
    )
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["agentId"]
    return agent_id


def start(client: TestClient, headers: Headers, **body: Any) -> Any:
    return client.post("/api/paper-trading/start", headers=headers, json=body)


def status(client: TestClient, headers: Headers, agent_id: str) -> Any:
    response = client.get(f"/api/paper-trading/status/{agent_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def wait(
    client: TestClient,
    headers: Headers,
    agent_id: str,
    done: Callable[[Any], bool],
    timeout: float = 90,
) -> Any:
    deadline = time.monotonic() + timeout
    while not done(current := status(client, headers, agent_id)):
        assert time.monotonic() < deadline, current
        time.sleep(0.1)
    return current


def feed_ended(client: TestClient) -> bool:
    return bool(client.get("/api/feed").json()["state"] == "ended")


def test_a_paper_session_ends_with_the_numbers_of_a_backtest_over_the_bars_it_saw(
    platform: tuple[TestClient, Context, Headers],
) -> None:
    client, context, alice = platform
    agent_id = submit(client, alice, (EXAMPLES / "sma_cross.py").read_bytes())
    started = start(client, alice, agentId=agent_id, symbols=STANDARD)
    assert started.status_code == 202, started.text
    body = started.json()
    assert body["status"] == "starting"
    session_id = body["sessionId"]
    others = {}  # the other example agents, on the same bars at the same time
    for name in ("rsi_mean_reversion.py", "explained_momentum.py"):
        other_id = submit(client, alice, (EXAMPLES / name).read_bytes(), name)
        assert start(client, alice, agentId=other_id, symbols=STANDARD).status_code == 202
        others[name] = other_id

    running = wait(client, alice, agent_id, lambda s: s["status"] == "running")
    assert running["barsProcessed"] >= 1
    deadline = time.monotonic() + 120
    while not feed_ended(client):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    final = status(client, alice, agent_id)
    assert final["status"] == "running"
    assert final["barsProcessed"] > 40

    first = datetime.fromisoformat(final["firstBarTime"])
    last = datetime.fromisoformat(final["lastBarTime"])
    store = BarStore(context.settings.bars_dir)
    steps = [s for s in store.steps(STANDARD, first.date(), last.date()) if first <= s.ts <= last]
    assert len(steps) == final["barsProcessed"]
    outcome = run_backtest(
        steps,
        EXAMPLES / "sma_cross.py",
        BacktestConfig(symbols=tuple(STANDARD), initial_cash=100_000.0, commission=0.0),
    )
    assert outcome.failure is None
    assert outcome.trades or outcome.fills, "the comparison needs some trading"

    equity = client.get(f"/api/paper-trading/{session_id}/equity", headers=alice).json()["equity"]
    assert [(datetime.fromisoformat(p["timestamp"]), p["equity"]) for p in equity] == [
        (ts, value) for ts, value in outcome.equity
    ]
    assert final["equity"] == cents(outcome.value)
    trades = client.get(f"/api/paper-trading/{session_id}/trades", headers=alice).json()["trades"]
    assert [
        (t["symbol"], t["size"], t["entryPrice"], t["exitPrice"], t["pnl"]) for t in trades
    ] == [(t.symbol, t.size, t.entry_price, t.exit_price, t.pnl) for t in outcome.trades]
    # The same orders filled the same sizes; their client order ids are (session, step, n).
    with context.db.transaction() as session:
        orders = session.query(PaperOrder).filter_by(session_id=session_id).all()
        paper_filled = sorted(
            (int(o.client_order_id.removeprefix(f"{session_id}-").split("-")[0]), o.filled)
            for o in orders
            if o.filled
        )
    backtest_filled: dict[str, tuple[int, float]] = {}
    for f in outcome.fills:
        seq, size = backtest_filled.get(f.client_order_id, (f.decision_seq, 0.0))
        backtest_filled[f.client_order_id] = (seq, size + f.size)
    assert paper_filled == sorted(backtest_filled.values())

    # The paper_trading board ranks the agent with the session's numbers (one row per window).
    deadline = time.monotonic() + 20
    while True:  # the board follows the session within a few seconds (RANK_EVERY_S, 5 s)
        board = client.get(
            "/api/leaderboard", params={"type": "paper_trading", "metric": "returns"}
        ).json()
        (row,) = [r for r in board["leaderboard"] if r["agentId"] == agent_id]
        if row["returns"] == pytest.approx(outcome.value / 100_000 - 1):
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.5)
    assert row["sessionId"] == session_id
    assert row["returns"] == pytest.approx(outcome.value / 100_000 - 1)
    assert row["totalTrades"] == len(outcome.trades)

    for name, other_id in others.items():
        theirs = status(client, alice, other_id)
        lo = datetime.fromisoformat(theirs["firstBarTime"])
        hi = datetime.fromisoformat(theirs["lastBarTime"])
        seen = [s for s in store.steps(STANDARD, lo.date(), hi.date()) if lo <= s.ts <= hi]
        expected = run_backtest(
            seen,
            EXAMPLES / name,
            BacktestConfig(symbols=tuple(STANDARD), initial_cash=100_000.0, commission=0.0),
        )
        assert expected.failure is None
        curve = client.get(
            f"/api/paper-trading/{theirs['sessionId']}/equity", headers=alice
        ).json()["equity"]
        assert [p["equity"] for p in curve] == [v for _, v in expected.equity], name
        assert theirs["equity"] == cents(expected.value), name
        closed = client.get(
            f"/api/paper-trading/{theirs['sessionId']}/trades", headers=alice
        ).json()["trades"]
        assert [(t["symbol"], t["pnl"]) for t in closed] == [
            (t.symbol, t.pnl) for t in expected.trades
        ], name

    # A second session on the running agent, or on its account, is refused with the session.
    again = start(client, alice, agentId=agent_id, symbols=["SPY"])
    assert again.status_code == 409
    assert again.json()["sessionId"] == session_id
    other = submit(client, alice, (EXAMPLES / "sma_cross.py").read_bytes() + b"#", "other")
    taken = start(client, alice, agentId=other, accountId=final["accountId"], symbols=["SPY"])
    assert taken.status_code == 409
    assert taken.json()["sessionId"] == session_id

    stopped = client.post("/api/paper-trading/stop", headers=alice, json={"agentId": agent_id})
    assert stopped.status_code == 200, stopped.text
    wait(client, alice, agent_id, lambda s: s["status"] == "stopped")
    listed = client.get("/api/paper-trading/sessions", headers=alice).json()
    assert sorted(s["sessionId"] for s in listed["sessions"]) == sorted(
        [session_id, *(status(client, alice, a)["sessionId"] for a in others.values())]
    )


def test_unknown_symbols_and_symbols_the_feed_does_not_carry_are_400(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = paper_settings(tmp_path, real_bars, feed_symbols=STANDARD[:9], paper_runtime=False)
    settings = settings.model_copy(update={"paper_runtime": True, "feed": "replay"})
    context = Context.build(settings)
    context.db.migrate()
    with context.db.transaction() as session:
        _, token = create_user(session, "alice")
    alice = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings, context=context)) as client:
        agent_id = submit(client, alice, (EXAMPLES / "sma_cross.py").read_bytes())
        unknown = start(client, alice, agentId=agent_id, symbols=["SPY", "ZZZZ"])
        assert unknown.status_code == 400
        assert "ZZZZ" in unknown.json()["message"]
        absent = start(client, alice, agentId=agent_id, symbols=["SPY", "JPM"])
        assert absent.status_code == 400
        assert "JPM" in absent.json()["message"]


# A longer replay: the spinning agent's budget runs from the send of its step, which comes
# later than the step's publication while sessions are still catching up after their start.
@pytest.mark.parametrize("platform", [{"feed_replay_start": date(2024, 10, 1)}], indirect=True)
def test_a_spinning_or_crashing_agent_fails_alone_and_warm_up_orders_are_never_sent(
    platform: tuple[TestClient, Context, Headers],
) -> None:
    client, context, alice = platform
    spin = submit(client, alice, SPIN, "spin")
    crash = submit(client, alice, CRASH, "crash")
    eager = submit(client, alice, EAGER, "eager")
    honest = submit(client, alice, (EXAMPLES / "rsi_mean_reversion.py").read_bytes(), "honest")
    for agent_id in (spin, crash, honest):
        assert start(client, alice, agentId=agent_id, symbols=STANDARD[:3]).status_code == 202
    eager_start = start(client, alice, agentId=eager, symbols=["SPY"], warmupBars=5)
    assert eager_start.status_code == 202
    eager_session = eager_start.json()["sessionId"]

    failed = wait(client, alice, spin, lambda s: s["status"] == "failed")
    assert failed["failure"]["reason"] == "timeout"
    # While it spun for its whole step budget, the others kept getting their bars.
    assert status(client, alice, honest)["barsProcessed"] >= failed["barsProcessed"] + 20
    crashed = wait(client, alice, crash, lambda s: s["status"] == "failed")
    assert crashed["failure"]["reason"] == "agent_error"
    assert "boom in the agent" in crashed["failure"]["message"]
    assert "explode_here" in crashed["failure"]["traceback"]
    ok = status(client, alice, honest)
    assert ok["status"] == "running"
    before = ok["barsProcessed"]
    wait(client, alice, honest, lambda s: s["barsProcessed"] >= before + 3)

    # The eager agent bought on its first three bars, all of them warm-up bars: nothing sent.
    eager_status = wait(client, alice, eager, lambda s: s["barsProcessed"] >= 2)
    with context.db.transaction() as session:
        orders = session.query(PaperOrder).filter_by(session_id=eager_session).all()
        sizes = [o.size for o in orders]
    assert sizes == [1.0]  # only the limit order decided on its first live bar
    assert eager_status["openOrders"][0]["size"] == 1.0
    assert eager_status["positions"] == []

    # Stop cancels the open limit order and the agent stops.
    stopped = client.post("/api/paper-trading/stop", headers=alice, json={"agentId": eager})
    assert stopped.status_code == 200
    done = wait(client, alice, eager, lambda s: s["status"] == "stopped")
    assert done["openOrders"] == []
    with context.db.transaction() as session:
        statuses = [o.status for o in session.query(PaperOrder).filter_by(session_id=eager_session)]
    assert statuses == ["cancelled"]

    # FMEL has the session's decisions as PAPER records, its warm-up orders marked as never sent.
    decisions = client.get(
        "/api/fmel/decisions", headers=alice, params={"sessionId": eager_session, "limit": 100}
    ).json()["decisions"]
    assert {d["mode"] for d in decisions} == {"PAPER"}
    by_seq = {d["seq"]: [(o["size"], o["status"]) for o in d["orders"]] for d in decisions}
    assert by_seq[0] == by_seq[1] == by_seq[2] == [(5.0, "warmup")]
    assert by_seq[5] == [(1.0, "submitted")]
    assert sorted(by_seq) == list(range(len(by_seq)))
    params = {"agentId": eager, "sessionId": eager_session}
    analytics = client.get("/api/fmel/analytics", headers=alice, params=params)
    assert analytics.status_code == 200, analytics.text
    compare = client.get("/api/fmel/compare", headers=alice, params={"agentIds": eager})
    assert compare.status_code == 200, compare.text
    search = client.get("/api/fmel/search", headers=alice, params={"q": "x", **params})
    assert search.status_code == 200, search.text
    export = client.get(
        f"/api/fmel/export/{eager}",
        headers=alice,
        params={"sessionId": eager_session, "format": "jsonl"},
    )
    assert export.status_code == 200
    exported = [json.loads(line) for line in export.text.splitlines()]
    assert len(exported) == len(decisions)
    assert {r["mode"] for r in exported} == {"PAPER"}
    health = client.get("/health").json()
    assert health["status"] in {"ok", "degraded"}


HOLDER = b"""
import backtrader as bt


class Holder(bt.Strategy):
    def next(self):
        if len(self) == 1:
            self.buy(data=self.datas[0], size=10)
            self.buy(data=self.datas[0], size=1, exectype=bt.Order.Limit, price=1.0)
"""


def test_the_cli_starts_watches_and_stops_with_liquidate_which_flattens_the_account(
    platform: tuple[TestClient, Context, Headers], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from farm.cli import app
    from support import route_cli

    client, context, alice = platform
    route_cli(client, monkeypatch)
    token = alice["Authorization"].removeprefix("Bearer ")
    runner = CliRunner()

    def farm(*args: str) -> Any:
        result = runner.invoke(app, [*args, "--token", token], env={"COLUMNS": "250"})
        assert result.exit_code == 0, result.output
        return result

    agent_id = submit(client, alice, HOLDER, "holder")
    started = farm("paper", "start", agent_id, "--symbols", "spy")
    assert "Started paper session" in started.output
    held = wait(client, alice, agent_id, lambda s: bool(s["positions"]))
    assert held["positions"][0]["size"] == 10
    shown = farm("paper", "status", agent_id)
    assert "running" in shown.output
    assert "SPY" in shown.output

    farm("paper", "stop", agent_id, "--liquidate")
    watched = farm("paper", "watch", agent_id, "--interval", "0.1")
    assert "stopped" in watched.output
    done = status(client, alice, agent_id)
    assert done["status"] == "stopped"
    assert done["positions"] == []
    assert done["openOrders"] == []
    trades = client.get(f"/api/paper-trading/{done['sessionId']}/trades", headers=alice).json()
    assert [t["size"] for t in trades["trades"]] == [10.0]
    with context.db.transaction() as session:
        orders = session.query(PaperOrder).filter_by(session_id=done["sessionId"]).all()
        statuses = sorted((o.size, o.status) for o in orders)
    assert statuses == [(-10.0, "completed"), (1.0, "cancelled"), (10.0, "completed")]


def test_hostile_agents_are_contained_in_paper_mode_and_the_server_stays_healthy(
    tmp_path: Path, real_bars: Path
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "backtest"))
    from test_containment import ATTACKS, agent

    settings = paper_settings(
        tmp_path,
        real_bars,
        paper_step_timeout_s=4.0,
        sandbox_memory_mb=256,
        sandbox_pids=32,
        sandbox_file_mb=16,
        sandbox_output_kb=256,
    )
    context = Context.build(settings)
    with TestClient(create_app(settings, context=context)) as client:
        with context.db.transaction() as session:
            _, token = create_user(session, "mallory")
        mallory = {"Authorization": f"Bearer {token}"}
        honest = submit(client, mallory, (EXAMPLES / "rsi_mean_reversion.py").read_bytes())
        assert start(client, mallory, agentId=honest, symbols=["SPY"]).status_code == 202
        attackers = {}
        for name, (body, _, _) in ATTACKS.items():
            agent_id = submit(client, mallory, agent(body), name)
            assert start(client, mallory, agentId=agent_id, symbols=["SPY"]).status_code == 202
            attackers[name] = agent_id
        for name, agent_id in attackers.items():
            ended = wait(client, mallory, agent_id, lambda s: s["status"] == "failed")
            reasons = ATTACKS[name][1] | ({"output"} if "killed" in ATTACKS[name][1] else set())
            assert ended["failure"]["reason"] in reasons, (name, ended["failure"])
        ok = status(client, mallory, honest)
        assert ok["status"] == "running"
        health = client.get("/health").json()
        assert health["status"] == "ok", health


QUIET = b"""
import backtrader as bt


class Quiet(bt.Strategy):
    def next(self):
        pass
"""


def test_twenty_sessions_on_overlapping_symbols_each_get_every_bar_once_in_order(
    platform: tuple[TestClient, Context, Headers],
) -> None:
    client, context, alice = platform
    sessions = {}
    for i in range(20):
        symbols = [STANDARD[i % 10], STANDARD[(i + 1) % 10], STANDARD[(i + 3) % 10]]
        agent_id = submit(client, alice, QUIET + f"# {i}\n".encode(), f"quiet{i}")
        started = start(client, alice, agentId=agent_id, symbols=symbols)
        assert started.status_code == 202, started.text
        sessions[agent_id] = (started.json()["sessionId"], symbols)
    deadline = time.monotonic() + 180
    while not feed_ended(client):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    feed = client.get("/api/feed").json()
    store = BarStore(context.settings.bars_dir)
    for agent_id, (session_id, symbols) in sessions.items():
        final = wait(client, alice, agent_id, lambda s: s["lastBarTime"] == feed["lastBarTime"])
        assert final["status"] == "running"
        first = datetime.fromisoformat(final["firstBarTime"])
        last = datetime.fromisoformat(final["lastBarTime"])
        expected = [
            s.ts for s in store.steps(symbols, first.date(), last.date()) if first <= s.ts <= last
        ]
        equity = client.get(f"/api/paper-trading/{session_id}/equity", headers=alice).json()
        seen = [datetime.fromisoformat(p["timestamp"]) for p in equity["equity"]]
        assert seen == expected
        assert final["barsProcessed"] == len(expected)
