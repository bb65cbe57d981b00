"""Leases on running backtests: a fenced-out worker writes nothing; a new worker never disturbs
live ones; a SIGKILLed worker's backtest is finished by another, once, one FMEL record a step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_support import app_settings, start, submit, wait_for
from sqlalchemy import select, update

from farm.app import create_app
from farm.backtest.scheduler import Scheduler
from farm.config import Settings
from farm.context import Context, backtest_job
from farm.fmel.layout import session_dir
from farm.leases import HOST
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, User, utcnow
from support import free_port, user_token, wait_until

SLOW = """import time
import backtrader as bt


class Slow(bt.Strategy):
    def next(self):
        time.sleep({})
"""
CAPTURE: Any = {"capture_output": True, "text": True, "check": True}
LEASE_S = 6  # (a shorter one can expire on a loaded machine: the heartbeat runs at nice 5)
YEAR = {"symbols": ["AAPL"], "startDate": "2024-01-01", "endDate": "2024-12-31"}


def row_of(context: Context, session_id: str) -> BacktestSession:
    with context.db.transaction() as session:
        row = session.get(BacktestSession, session_id)
        assert row is not None
        return row


def decisions(client: TestClient, headers: dict[str, str], session_id: str) -> int:
    answer = client.get(f"/api/fmel/decisions?sessionId={session_id}&limit=1", headers=headers)
    total: int = answer.json()["total"]
    return total


@contextmanager
def api(settings: Settings) -> Iterator[tuple[TestClient, Context, dict[str, str]]]:
    """The API (no workers of its own) and a user of it."""
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        yield client, context, {"Authorization": f"Bearer {user_token(context, 'alice')}"}


@pytest.mark.sandbox
def test_a_worker_that_lost_its_lease_writes_nothing_and_the_new_owner_finishes(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(tmp_path, real_bars, backtest_workers=0, standard_symbols=["SPY"])
    with api(settings) as (client, context, alice):
        agent_id = submit(client, alice, SLOW.format(0.04).encode())
        with context.db.transaction() as session:  # only the custom backtest runs here
            session.execute(update(BacktestSession).values(status="cancelled"))
        session_id = start(client, alice, agent_id, **YEAR).json()["sessionId"]
        first, second = (
            Scheduler(context.db, lambda *_: None, 1, max_running_per_user=2, lease_s=30)
            for _ in range(2)
        )
        job = backtest_job(settings)
        lease = first.claim()
        assert lease is not None
        assert lease.session_id == session_id
        stopping = threading.Event()
        run = threading.Thread(target=job, args=(lease, stopping))
        run.start()
        wait_until(lambda: row_of(context, session_id).bars_done >= 20, 60)

        # The first worker freezes (no heartbeat) past its lease: the other recovers the
        # backtest and claims it again; the first one wakes up to a lease that is not its own.
        with context.db.transaction() as session:
            session.execute(
                update(BacktestSession).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        assert second.recover() == 1
        taken = second.claim()
        assert taken is not None
        assert taken.token != lease.token
        run.join(60)
        assert not run.is_alive()
        row = row_of(context, session_id)
        assert (row.status, row.lease_token, row.attempts) == ("running", taken.token, 2)
        assert row.bars_done == 0, "the fenced-out worker's progress writes were refused"
        assert row.results_key is None
        fmel = session_dir(settings.fmel_dir, agent_id, session_id)
        assert not list(fmel.glob("**/*.parquet")), "nor did it write FMEL parts"

        job(taken, stopping)
        result = wait_for(client, alice, session_id)
        assert result["status"] == "completed"
        assert row_of(context, session_id).results_key.endswith(taken.token)  # type: ignore[union-attr]
        assert decisions(client, alice, session_id) == result["progress"]["barsTotal"] == 252


def _worker(settings: Settings, url: str) -> tuple[subprocess.Popen[bytes], str]:
    """A ``farm worker backtest`` process on ``settings``; its health URL."""
    port = free_port()
    env = {
        **os.environ,
        "FARM_HOME": str(settings.home),
        "FARM_DATABASE_URL": url,
        "FARM_BACKTEST_WORKERS": "1",
        "FARM_BACKTEST_LEASE_S": str(LEASE_S),
        "FARM_SANDBOX_WALL_S": "120",
    }
    command = [sys.executable, "-m", "farm", "worker", "backtest", "--port", str(port)]
    process = subprocess.Popen(command, env=env)
    health = f"http://127.0.0.1:{port}/health"

    def up() -> bool:
        assert process.poll() is None, "the worker exited"
        try:
            return httpx.get(health).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, 60)
    return process, health


def _owner_pid(context: Context, session_id: str) -> int | None:
    owner = row_of(context, session_id).lease_owner
    return int(owner.split("-")[-2]) if owner else None


@pytest.mark.sandbox
@pytest.mark.postgres
def test_a_sigkilled_workers_backtest_is_finished_by_another_once_and_new_workers_disturb_none(
    tmp_path: Path, real_bars: Path, postgres_url: str
) -> None:
    settings = app_settings(
        tmp_path,
        real_bars,
        database_url=postgres_url,
        backtest_workers=0,
        standard_symbols=["SPY"],
        standard_start="2024-01-02",
        standard_end="2024-01-05",
    )
    workers: list[subprocess.Popen[bytes]] = []
    try:
        with api(settings) as (client, context, alice):
            agent_id = submit(client, alice, SLOW.format(0.1).encode())
            session_id = start(client, alice, agent_id, **YEAR).json()["sessionId"]
            first, _ = _worker(settings, postgres_url)
            workers.append(first)
            wait_until(lambda: _owner_pid(context, session_id) == first.pid, 60)
            wait_until(lambda: row_of(context, session_id).bars_done >= 5, 60)
            token = row_of(context, session_id).lease_token

            second, health = _worker(settings, postgres_url)
            workers.append(second)
            time.sleep(2 * LEASE_S + 1)  # the newcomer's reaper ran several times meanwhile
            row = row_of(context, session_id)
            assert (row.status, row.lease_token, row.attempts) == ("running", token, 1)

            os.kill(first.pid, signal.SIGKILL)
            assert first.wait(10) == -signal.SIGKILL
            result = wait_for(client, alice, session_id, timeout=180)
            assert result["status"] == "completed", result
            row = row_of(context, session_id)
            assert row.attempts == 2
            assert _owner_pid(context, session_id) == second.pid
            assert decisions(client, alice, session_id) == result["progress"]["barsTotal"] == 252
            attempts = list((settings.artifacts_dir / "backtests" / session_id).iterdir())
            assert [a.name for a in attempts if a.is_dir()] == [row.lease_token]
            assert httpx.get(health).json()["backends"]["sandbox"] == "ok"

            second.send_signal(signal.SIGTERM)  # a clean stop (uvicorn re-raises the signal)
            assert second.wait(30) in (0, -signal.SIGTERM)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_only_expired_leases_and_those_of_ended_local_processes_are_recovered(
    db_settings: Settings,
) -> None:
    db = Database(db_settings.resolved_database_url)
    db.migrate()
    with db.transaction() as session:
        session.add(User(id="u", name="u"))
        session.flush()
        session.add(
            Agent(
                id="a",
                user_id="u",
                name="a",
                strategy_class="A",
                code_sha256="0" * 64,
                code_bytes=1,
                artifact_key="k",
            )
        )
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **CAPTURE)
    later, earlier = utcnow() + timedelta(minutes=5), utcnow() - timedelta(seconds=1)
    leases = {
        "live here": (f"{HOST}-{os.getpid()}-aaaaaa", later),
        "ended here": (f"{HOST}-{int(ended.stdout)}-bbbbbb", later),
        "elsewhere": ("other-host:1-4242-cccccc", later),
        "expired elsewhere": ("other-host:1-4242-dddddd", earlier),
    }
    with db.transaction() as session:
        for name, (owner, expires) in leases.items():
            session.add(
                BacktestSession(
                    id=name,
                    agent_id="a",
                    user_id="u",
                    kind="custom",
                    status="running",
                    params={},
                    attempts=1,
                    lease_owner=owner,
                    lease_token=str(uuid.uuid4()),
                    lease_expires_at=expires,
                )
            )
    newcomer = Scheduler(db, lambda *_: None, 1, max_running_per_user=2)
    assert newcomer.recover() == 2
    with db.transaction() as session:
        status = dict(session.execute(select(BacktestSession.id, BacktestSession.status)).all())
    assert status == {
        "live here": "running",
        "ended here": "queued",
        "elsewhere": "running",
        "expired elsewhere": "queued",
    }
    assert newcomer.recover() == 0
    db.dispose()
