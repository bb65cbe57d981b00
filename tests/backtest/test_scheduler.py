"""The backtest queue: fair claim order, per-user caps, no double claims, restart recovery,
concurrency, cancellation."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for

from farm.app import create_app
from farm.backtest.scheduler import Scheduler
from farm.config import Settings
from farm.leases import Lease
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, User, utcnow
from farm.users.service import create_user
from support import wait_until

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(db_settings: Settings) -> Iterator[Database]:
    database = Database(db_settings.resolved_database_url)
    database.migrate()
    add_user(database, "u", agent_id="a")
    yield database
    database.dispose()


def add_user(db: Database, user_id: str, *, agent_id: str) -> None:
    with db.transaction() as session:
        session.add(User(id=user_id, name=user_id))
        session.flush()
        session.add(
            Agent(
                id=agent_id,
                user_id=user_id,
                name=agent_id,
                strategy_class="A",
                code_sha256="0" * 64,
                code_bytes=1,
                artifact_key="k",
            )
        )


def add_session(
    db: Database,
    status: str,
    *,
    priority: int = 0,
    attempts: int = 0,
    age_s: float = 0,
    user: str = "u",
    kind: str = "custom",
) -> str:
    session_id = str(uuid.uuid4())
    with db.transaction() as session:
        session.add(
            BacktestSession(
                id=session_id,
                agent_id="a" if user == "u" else f"{user}-agent",
                user_id=user,
                kind=kind,
                status=status,
                priority=priority,
                params={},
                attempts=attempts,
                created_at=utcnow() - timedelta(seconds=age_s),
            )
        )
    return session_id


def next_id(scheduler: Scheduler) -> str | None:
    """Claim the next session; its id."""
    lease = scheduler.claim()
    return lease.session_id if lease else None


def status_of(db: Database, session_id: str) -> BacktestSession:
    with db.transaction() as session:
        row = session.get(BacktestSession, session_id)
        assert row is not None
        return row


def test_claims_follow_priority_then_age(db: Database) -> None:
    newest = add_session(db, "queued", age_s=1)
    oldest = add_session(db, "queued", age_s=3)
    urgent = add_session(db, "queued", priority=-1, age_s=0)
    standard = add_session(db, "queued", priority=10, age_s=9)
    add_session(db, "running")
    scheduler = Scheduler(db, lambda *_: None, workers=1, max_running_per_user=100)
    order = [next_id(scheduler) for _ in range(5)]
    assert order == [urgent, oldest, newest, standard, None]
    claimed = status_of(db, oldest)
    assert claimed.status == "running"
    assert claimed.attempts == 1
    assert claimed.started_at is not None


def test_claims_go_round_robin_across_users(db: Database) -> None:
    add_user(db, "v", agent_id="v-agent")
    first = [add_session(db, "queued", age_s=100 - i) for i in range(50)]
    second = add_session(db, "queued", user="v", age_s=1)
    scheduler = Scheduler(db, lambda *_: None, workers=1, max_running_per_user=100)
    order = [next_id(scheduler) for _ in range(4)]
    assert order == [first[0], second, first[1], first[2]]


def test_a_user_never_runs_more_than_the_cap(db: Database) -> None:
    add_user(db, "v", agent_id="v-agent")
    mine = [add_session(db, "queued", age_s=10 - i) for i in range(5)]
    theirs = add_session(db, "queued", user="v", age_s=0)
    scheduler = Scheduler(db, lambda *_: None, workers=4, max_running_per_user=2)
    assert {next_id(scheduler) for _ in range(3)} == {mine[0], mine[1], theirs}
    assert next_id(scheduler) is None, "u has 2 running already"
    with db.transaction() as session:
        session.get(BacktestSession, mine[0]).status = "completed"  # type: ignore[union-attr]
    assert next_id(scheduler) == mine[2]


def test_standard_evaluations_take_turns_with_custom_backtests(db: Database) -> None:
    add_user(db, "v", agent_id="v-agent")
    add_user(db, "w", agent_id="w-agent")
    custom = [add_session(db, "queued", age_s=100 - i) for i in range(10)]
    v_standard = [
        add_session(db, "queued", user="v", kind="standard", priority=10, age_s=50 - i)
        for i in range(3)
    ]
    w_standard = add_session(db, "queued", user="w", kind="standard", priority=10, age_s=0)
    scheduler = Scheduler(db, lambda *_: None, workers=1, max_running_per_user=100)
    order = [next_id(scheduler) for _ in range(6)]
    # the standard lane alternates with u's custom lane; inside it v and w take turns
    assert order == [custom[0], v_standard[0], custom[1], w_standard, custom[2], v_standard[1]]


def test_concurrent_schedulers_never_claim_a_session_twice(db: Database) -> None:
    ids = {add_session(db, "queued", age_s=i) for i in range(40)}
    schedulers = [
        Scheduler(db, lambda *_: None, workers=2, max_running_per_user=100) for _ in range(4)
    ]
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(scheduler: Scheduler) -> None:
        while (session_id := next_id(scheduler)) is not None:
            with lock:
                claimed.append(session_id)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(drain, schedulers * 2))
    assert sorted(claimed) == sorted(ids)


def test_restart_requeues_interrupted_sessions_once_then_fails_them(db: Database) -> None:
    first_time = add_session(db, "running", attempts=1)
    second_time = add_session(db, "running", attempts=2)
    queued = add_session(db, "queued")
    done = add_session(db, "completed", attempts=1)
    Scheduler(db, lambda *_: None, workers=1, max_running_per_user=100).recover()
    assert status_of(db, first_time).status == "queued"
    failed = status_of(db, second_time)
    assert failed.status == "failed"
    assert failed.failure_reason == "interrupted"
    assert status_of(db, queued).status == "queued"
    assert status_of(db, done).status == "completed"


def test_an_api_only_process_runs_and_recovers_nothing(db: Database) -> None:
    running = add_session(db, "running", attempts=1)
    ran: list[str] = []
    scheduler = Scheduler(
        db, lambda lease, _: ran.append(lease.session_id), workers=0, max_running_per_user=100
    )
    scheduler.start()
    add_session(db, "queued")
    scheduler.notify()
    time.sleep(0.3)
    scheduler.stop()
    assert ran == []
    assert status_of(db, running).status == "running"


def test_a_crashing_job_does_not_stop_the_workers(db: Database) -> None:
    sessions = [add_session(db, "queued", age_s=3 - i) for i in range(3)]
    seen: list[str] = []

    def job(lease: Lease, _: threading.Event) -> None:
        seen.append(lease.session_id)
        if len(seen) == 1:
            raise RuntimeError("boom")

    scheduler = Scheduler(db, job, workers=1, max_running_per_user=100)
    scheduler.start()
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    assert seen == sessions


@pytest.mark.sandbox
def test_twenty_concurrent_submissions_all_complete(tmp_path: Path, real_bars: Path) -> None:
    settings = app_settings(
        tmp_path,
        real_bars,
        max_queued_backtests_per_user=20,
        standard_symbols=["SPY"],
        standard_start="2024-01-01",
        standard_end="2024-03-31",
    )
    code = (REPO / "examples/agents/sma_cross.py").read_bytes()
    with TestClient(create_app(settings)) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "alice")
        alice: Headers = {"Authorization": f"Bearer {token}"}

        def submit_and_start(n: int) -> str:
            agent_id = submit(client, alice, code + f"\n# {n}\n".encode(), name=f"sma {n}")
            started = start(
                client,
                alice,
                agent_id,
                symbols=["AAPL"],
                startDate="2024-01-01",
                endDate="2024-06-30",
            )
            assert started.status_code == 202
            return agent_id

        def sessions_of(agent_id: str) -> list[str]:
            listed = client.get(f"/api/agents/{agent_id}/backtests", headers=alice).json()
            return [s["sessionId"] for s in listed["sessions"]]

        with ThreadPoolExecutor(20) as pool:
            agents = list(pool.map(submit_and_start, range(20)))
        # The standard evaluations are queued by the agent.submitted event, relayed after
        # each commit by whichever request's relay claims it: soon, not within the request.
        wait_until(lambda: sum(len(sessions_of(a)) for a in agents) >= 40, 30, "40 sessions")
        sessions = [s for a in agents for s in sessions_of(a)]
        assert len(sessions) == 40  # a standard evaluation and a custom backtest each
        results = [wait_for(client, alice, s, timeout=300) for s in sessions]
    assert [r["status"] for r in results] == ["completed"] * 40
    kinds = sorted(r["kind"] for r in results)
    assert kinds == ["custom"] * 20 + ["standard"] * 20


SLOW = b"""import time
import backtrader as bt


class Slow(bt.Strategy):
    def next(self):
        time.sleep(0.02)
"""


@pytest.mark.sandbox
def test_a_graceful_stop_requeues_the_running_backtest_and_a_rerun_records_once(
    tmp_path: Path, real_bars: Path
) -> None:
    settings = app_settings(
        tmp_path,
        real_bars,
        backtest_workers=1,
        standard_symbols=["SPY"],
        standard_start="2024-01-02",
        standard_end="2024-01-05",
    )
    with TestClient(create_app(settings)) as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            _, token = create_user(session, "alice")
        alice = {"Authorization": f"Bearer {token}"}
        agent_id = submit(client, alice, SLOW)
        time.sleep(1)  # the standard evaluation: four bars
        session_id = start(client, alice, agent_id, symbols=["SPY"]).json()["sessionId"]
        deadline = time.monotonic() + 30
        while (
            client.get(f"/api/backtest/{session_id}/results", headers=alice).json()["progress"][
                "barsDone"
            ]
            < 5
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 3, "stopping must not wait for the backtest to finish"
    with context.db.transaction() as session:
        row = session.get(BacktestSession, session_id)
        assert row is not None
        assert (row.status, row.attempts, row.bars_done) == ("queued", 0, 0)

    with TestClient(create_app(settings)) as client:
        result = wait_for(client, alice, session_id)
        assert result["status"] == "completed", result
        decisions = client.get(
            f"/api/fmel/decisions?sessionId={session_id}&limit=1", headers=alice
        ).json()
        assert decisions["total"] == result["progress"]["barsTotal"] == 250
