"""Paper sessions spread over separate paper workers (issue 13): a `farm feed` fans its steps out
over Redis Streams to two `farm worker paper`. The first worker claims only as many sessions as
it may run; the second, started later, takes the others without disturbing the first's. The
first is SIGKILLed mid-session: its sessions resume on the second, each ending as an
uninterrupted run over the same bars, no order placed twice, one FMEL decision per bar."""

from __future__ import annotations

import os
import signal
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from server_support import Server, fmel_decisions, migrated_platform, start_process
from sqlalchemy import select

from farm.backtest.runner import BacktestConfig, run_backtest
from farm.fmel.layout import session_dir
from farm.marketdata.store import BarStore
from farm.storage.db import Database
from farm.storage.models import PaperOrder, PaperSession
from support import descendants, paper_runtimes, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "agents"
SYMBOLS = ["SPY", "AAPL", "MSFT"]
SESSIONS = 4


def _kill_tree(server: Server) -> None:
    """SIGKILL a worker and everything under it (its runtime, its agents): nothing cleans up."""
    tree = descendants(server.process.pid)
    server.process.kill()
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(10)


@pytest.mark.sandbox
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_paper_sessions_spread_over_workers_and_move_when_one_is_killed(
    tmp_path: Path, real_bars: Path, postgres_url: str, bus_redis: str
) -> None:
    home = tmp_path / "farm"
    env = {
        "FARM_DATABASE_URL": postgres_url,
        "FARM_REDIS_URL": bus_redis,
        "FARM_BUS": "redis",
        "FARM_BACKTEST_WORKERS": "0",
        "FARM_RATE_LIMITS": "false",
        "FARM_FEED": "replay",
        "FARM_FEED_SYMBOLS": '["SPY","AAPL","MSFT"]',
        "FARM_FEED_REPLAY_START": "2024-05-01",
        "FARM_FEED_INTERVAL_S": "0.2",
        "FARM_PAPER_POLL_S": "0.05",
        "FARM_PAPER_STEP_TIMEOUT_S": "20",
        "FARM_PAPER_LEASE_S": "3",
    }
    db, token = migrated_platform(home, real_bars, env)

    def leases() -> dict[str, tuple[str | None, str | None, int]]:
        with db.transaction() as session:
            rows = session.execute(
                select(
                    PaperSession.id,
                    PaperSession.lease_owner,
                    PaperSession.lease_token,
                    PaperSession.bars_processed,
                )
            ).all()
        return {r.id: (r.lease_owner, r.lease_token, r.bars_processed) for r in rows}

    def runtime_of(worker: Server) -> int:
        runtimes = paper_runtimes(worker.process.pid)
        assert len(runtimes) == 1, runtimes
        return runtimes[0]

    def held_by(pid: int, bars: int = 0) -> set[str]:
        return {
            sid
            for sid, (owner, _, done) in leases().items()
            if owner and f"-{pid}-" in owner and done >= bars
        }

    processes: list[Server] = []
    api = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    try:
        feed = start_process(home, ["feed"], **env)
        api_server = start_process(home, ["serve"], **env)
        first = start_process(
            home, ["worker", "paper"], **env, FARM_PAPER_MAX_SESSIONS_PER_WORKER="2"
        )
        processes += [feed, api_server, first]
        api.base_url = httpx.URL(api_server.url)
        wait_until(lambda: api.get("/api/feed").json()["state"] == "running", 30, "the feed")
        assert httpx.get(f"{first.url}/health").json()["backends"]["feed"] == "ok"

        code = (EXAMPLES / "sma_cross.py").read_bytes()
        agents: dict[str, str] = {}  # session id -> agent id
        for n in range(SESSIONS):
            agent_id = api.post(
                "/api/agents/submit",
                data={"agentName": f"sma {n}"},
                files={"file": ("a.py", code + f"# {n}\n".encode())},
            ).json()["agentId"]
            started = api.post(
                "/api/paper-trading/start", json={"agentId": agent_id, "symbols": SYMBOLS}
            )
            assert started.status_code == 202, started.text
            agents[started.json()["sessionId"]] = agent_id

        # The first worker runs as many as it may; the others wait, unleased.
        first_runtime = runtime_of(first)
        wait_until(lambda: len(held_by(first_runtime, bars=3)) == 2, 60, "two sessions running")
        on_first = held_by(first_runtime)
        before = leases()
        assert {sid for sid, (owner, _, _) in before.items() if owner is None} == (
            agents.keys() - on_first
        )

        # A second worker takes the waiting ones and disturbs none of the first's.
        second = start_process(home, ["worker", "paper"], **env)
        processes.append(second)
        second_runtime = runtime_of(second)
        wait_until(lambda: len(held_by(second_runtime, bars=3)) == 2, 60, "the other two")
        now = leases()
        for sid in on_first:
            assert now[sid][:2] == before[sid][:2], "the first worker's lease was not touched"
            assert now[sid][2] > before[sid][2], "and its session went on"

        # The first worker dies mid-session: its sessions resume on the second.
        assert api.get("/api/feed").json()["state"] == "running"
        at_kill = leases()
        _kill_tree(first)
        wait_until(
            lambda: (
                len(held_by(second_runtime)) == SESSIONS
                and all(leases()[sid][2] > at_kill[sid][2] for sid in on_first)
                and all(f"paper session {sid} resumed" in second.output() for sid in on_first)
            ),
            60,
            "the killed worker's sessions resumed on the other",
        )

        wait_until(lambda: api.get("/api/feed").json()["state"] == "ended", 90, "the replay end")
        last = api.get("/api/feed").json()["lastBarTime"]
        _check_sessions(api, db, home, agents, last)
        assert "lost its lease" not in second.output()

        for server in [second, feed, api_server]:
            server.stop()  # SIGTERM: each stops cleanly
            assert server.process.returncode in (0, -signal.SIGTERM), server.output()[-2000:]
    finally:
        api.close()
        for server in processes:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()
        db.dispose()


def _check_sessions(
    api: httpx.Client, db: Database, home: Path, agents: dict[str, str], last: str
) -> None:
    """Every session (its agent in ``agents``) processed every bar up to ``last`` as an
    uninterrupted run would have, placed no order twice, and has one FMEL decision per bar."""

    def status(agent_id: str) -> dict[str, object]:
        answer: dict[str, object] = api.get(f"/api/paper-trading/status/{agent_id}").json()
        return answer

    wait_until(
        lambda: all(status(a)["lastBarTime"] == last for a in agents.values()), 60, "last bar"
    )
    store = BarStore(home / "bars")
    bars: dict[str, int] = {}  # live bars per session
    for sid, agent_id in agents.items():
        final = status(agent_id)
        assert final["status"] == "running"
        firstbar = datetime.fromisoformat(str(final["firstBarTime"]))
        lastbar = datetime.fromisoformat(str(final["lastBarTime"]))
        steps = [
            s
            for s in store.steps(SYMBOLS, firstbar.date(), lastbar.date())
            if firstbar <= s.ts <= lastbar
        ]
        assert len(steps) == final["barsProcessed"]
        bars[sid] = len(steps)
        # Each account is an uninterrupted run's over the bars its session saw.
        outcome = run_backtest(
            steps, EXAMPLES / "sma_cross.py", BacktestConfig(symbols=tuple(SYMBOLS), commission=0.0)
        )
        assert outcome.fills, "the comparison needs some trading"
        equity = api.get(f"/api/paper-trading/{sid}/equity").json()["equity"]
        assert [p["equity"] for p in equity] == [v for _, v in outcome.equity], sid
        with db.transaction() as session:
            placed = session.scalars(
                select(PaperOrder.client_order_id).where(PaperOrder.session_id == sid)
            ).all()
        assert len(placed) == len(set(placed)), "no client order id used twice"
        seqs = sorted(int(c.removeprefix(f"{sid}-").split("-")[0]) for c in placed)
        assert seqs == sorted(f.decision_seq for f in outcome.fills), sid
        api.post("/api/paper-trading/stop", json={"agentId": agent_id})

    wait_until(lambda: all(status(a)["status"] == "stopped" for a in agents.values()), 60, "stops")
    for sid, agent_id in agents.items():
        # FMEL: one decision per bar the strategy's next() ran on, none twice.
        folder = session_dir(home / "fmel", agent_id, sid)
        decided = sorted(r["seq"] for r in fmel_decisions(folder))
        assert decided == list(range(decided[0], bars[sid])), sid
