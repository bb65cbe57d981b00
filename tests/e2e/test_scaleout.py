"""The platform as separate processes on PostgreSQL and Redis Streams (issue 13): two `farm
serve`, two `farm worker backtest`, a `farm worker paper` and a `farm feed`. Twenty agents
submitted through both APIs each get exactly one standard evaluation, although a backtest worker
is SIGKILLed mid-run: the other finishes its backtest, once, with one FMEL decision per step."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
from server_support import Server, migrated_platform, start_process
from sqlalchemy import func, select

from farm.storage.models import BacktestSession, OutboxEvent
from support import wait_until

SLOW = """import time
import backtrader as bt


class Slow{n}(bt.Strategy):
    def next(self):
        time.sleep(0.05)
"""
AGENTS = 20


@pytest.mark.sandbox
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(900)
def test_separate_processes_evaluate_every_agent_once_though_a_worker_is_killed(
    tmp_path: Path, real_bars: Path, postgres_url: str, bus_redis: str
) -> None:
    home = tmp_path / "farm"
    env = {
        "FARM_DATABASE_URL": postgres_url,
        "FARM_REDIS_URL": bus_redis,
        "FARM_BUS": "redis",
        "FARM_BUS_CLAIM_IDLE_S": "5",
        "FARM_BACKTEST_WORKERS": "1",
        "FARM_BACKTEST_LEASE_S": "6",
        "FARM_STANDARD_SYMBOLS": '["SPY"]',
        "FARM_STANDARD_START": "2024-01-02",
        "FARM_STANDARD_END": "2024-03-28",
        "FARM_RATE_LIMITS": "false",
        "FARM_SANDBOX_WALL_S": "120",
    }
    db, token = migrated_platform(home, real_bars, env)
    alice = {"Authorization": f"Bearer {token}"}

    processes: list[Server] = []
    try:
        apis = [start_process(home, ["serve"], **env) for _ in range(2)]
        workers = [start_process(home, ["worker", "backtest"], **env) for _ in range(2)]
        feed = start_process(home, ["feed"], **env, FARM_FEED="replay")
        paper = start_process(home, ["worker", "paper"], **env, FARM_FEED="replay")
        processes += [*apis, *workers, feed, paper]
        health = httpx.get(f"{apis[0].url}/health").json()["backends"]
        assert health["events:redis"] == "ok"
        assert health["sandbox"] == "not used here", "farm serve runs no backtest"

        agent_ids = []
        for n in range(AGENTS):
            answer = httpx.post(
                f"{apis[n % 2].url}/api/agents/submit",
                headers=alice,
                data={"agentName": f"slow {n}"},
                files={"file": ("agent.py", SLOW.format(n=n).encode())},
                timeout=30,
            )
            assert answer.status_code == 201, answer.text
            agent_ids.append(answer.json()["agentId"])

        def running_on(worker: Server) -> BacktestSession | None:
            with db.transaction() as session:
                return session.scalars(
                    select(BacktestSession).where(
                        BacktestSession.status == "running",
                        BacktestSession.lease_owner.like(f"%-{worker.process.pid}-%"),
                        BacktestSession.bars_done >= 5,
                    )
                ).first()

        wait_until(lambda: running_on(workers[0]) is not None, 120, "a backtest on worker 0")
        victim = running_on(workers[0])
        assert victim is not None
        os.kill(workers[0].process.pid, signal.SIGKILL)
        assert workers[0].process.wait(10) == -signal.SIGKILL

        def standard() -> list[BacktestSession]:
            with db.transaction() as session:
                return list(
                    session.scalars(
                        select(BacktestSession).where(BacktestSession.kind == "standard")
                    )
                )

        wait_until(
            lambda: sum(s.status == "completed" for s in standard()) == AGENTS, 300, "evaluations"
        )
        sessions = standard()
        assert sorted(s.agent_id for s in sessions) == sorted(agent_ids), "one each, no more"
        assert {s.status for s in sessions} == {"completed"}
        finished = next(s for s in sessions if s.id == victim.id)
        assert finished.attempts == 2
        assert str(workers[1].process.pid) in (finished.lease_owner or "")
        decisions = httpx.get(
            f"{apis[1].url}/api/fmel/decisions",
            params={"sessionId": victim.id, "limit": 1},
            headers=alice,
        ).json()
        assert decisions["total"] == finished.bars_total == finished.bars_done
        with db.transaction() as session:
            left = session.scalar(select(func.count()).select_from(OutboxEvent))
        assert left == 0, "every event was relayed"
        for server in (feed, paper):
            health = httpx.get(f"{server.url}/health").json()
            assert health["backends"]["feed"] == "ok"
            assert health["feed"]["state"] == "running", "the feed runs (in `farm feed`)"
            assert httpx.get(f"{server.url}/metrics").status_code == 200

        for server in [apis[0], apis[1], workers[1], paper, feed]:
            server.stop()  # SIGTERM: each stops cleanly
            assert server.process.returncode in (0, -signal.SIGTERM), server.output()[-2000:]
    finally:
        for server in processes:
            if server.process.poll() is None:
                server.process.kill()
                server.process.wait()
        db.dispose()
