"""Scale-out figures (issue 13): backtests per minute with 1 and 2 `farm worker backtest`
processes on one queue, and event delivery latency through Redis Streams vs the in-process bus.

Backtests: queues N custom backtests of the SMA example (one symbol, one year of the real bars
in ../shared/data or FARM_TEST_DATA) in a fresh database, starts K worker processes (each with
FARM_BACKTEST_WORKERS=1) and times the queue until every backtest has completed; K = 1, then 2,
on the same N. The scaling ratio is the second rate over the first (2.0 is perfect; a machine
with fewer free cores than workers caps it).

Events: publishes one event at a time and times publish-to-handler (p50, p99): on the
in-process bus (the handler runs in the publisher's thread), and on Redis Streams (XADD, a
consumer group's blocked XREADGROUP in another thread, the handler, XACK). Then the same through
the outbox: commit of a transaction that wrote the event to its handler having run.

    .venv/bin/python bench/scale.py [--backtests 12] [--rounds 2] [--database-url postgresql://...]
        [--redis-url redis://127.0.0.1:6379/15] [--events 500]

PostgreSQL runs the backtests in a fresh schema (dropped at the end); without it, SQLite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select

from farm.app import create_app
from farm.config import Settings
from farm.events import Event, EventBus, InProcessBus
from farm.marketdata.importer import import_path
from farm.marketdata.store import BarStore
from farm.outbox import OutboxRelay, emit
from farm.storage.db import Database
from farm.storage.models import BacktestSession
from farm.streams import RedisStreamsBus
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "tests"))
from support import free_port, fresh_schema  # noqa: E402

BACKTEST = {"symbols": ["AAPL"], "startDate": "2023-01-01", "endDate": "2023-12-31"}


@contextmanager
def database(url: str | None) -> Iterator[str | None]:
    """A fresh PostgreSQL schema (dropped afterwards), or None for SQLite."""
    if url is None:
        yield None
        return
    with fresh_schema(url, "farm_bench") as schema_url:
        yield schema_url


def queue_backtests(settings: Settings, count: int) -> list[str]:
    """Submit the SMA example and queue ``count`` custom backtests of it (no workers run)."""
    code = (REPO / "examples" / "agents" / "sma_cross.py").read_bytes()
    with TestClient(create_app(settings)) as client:
        context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            _, token = create_user(session, f"bench-{uuid.uuid4().hex[:6]}")
        headers = {"Authorization": f"Bearer {token}"}
        answer = client.post(
            "/api/agents/submit",
            headers=headers,
            data={"agentName": "sma"},
            files={"file": ("agent.py", code)},
        )
        agent_id = answer.json()["agentId"]
        with context.db.transaction() as session:  # only the custom backtests are timed
            session.query(BacktestSession).delete()
        ids = []
        for _ in range(count):
            started = client.post(f"/api/backtest/{agent_id}/start", headers=headers, json=BACKTEST)
            assert started.status_code == 202, started.text
            ids.append(started.json()["sessionId"])
        return ids


def time_workers(settings: Settings, env: dict[str, str], ids: list[str], workers: int) -> float:
    """Seconds until ``workers`` worker processes have completed every backtest in ``ids``."""
    db = Database(settings.resolved_database_url)
    processes = []
    try:
        ports = [free_port() for _ in range(workers)]
        for port in ports:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "farm", "worker", "backtest", "--port", str(port)],
                    env=env,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:  # ready: their worker processes are warm
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        requeue(db, ids, "queued")  # the queue opens now that every worker is warm
        started = time.perf_counter()
        while True:
            with db.transaction() as session:
                done = session.scalar(
                    select(func.count()).where(
                        BacktestSession.id.in_(ids), BacktestSession.status == "completed"
                    )
                )
                failed = session.scalar(
                    select(func.count()).where(
                        BacktestSession.id.in_(ids), BacktestSession.status == "failed"
                    )
                )
            assert not failed, "a backtest failed"
            if done == len(ids):
                return time.perf_counter() - started
            time.sleep(0.05)
    finally:
        for process in processes:
            process.terminate()
            process.wait(30)
        db.dispose()


def requeue(db: Database, ids: list[str], status: str) -> None:
    """Put the backtests back in ``status`` (``cancelled`` holds them out of the queue)."""
    with db.transaction() as session:
        session.query(BacktestSession).filter(BacktestSession.id.in_(ids)).update(
            {"status": status, "attempts": 0, "bars_done": 0, "lease_token": None}
        )


def bench_backtests(count: int, rounds: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(database_url) as url:
        home = Path(tmp) / "farm"
        csvs = Path(tmp) / "csv"
        csvs.mkdir()
        for symbol in ("AAPL", "SPY"):
            shutil.copy(DATA / "daily" / f"{symbol}.csv", csvs)
        import_path(BarStore(home / "bars"), csvs)
        settings = Settings(
            home=home,
            database_url=url,
            backtest_workers=0,
            feed="off",
            standard_symbols=["SPY"],
            max_queued_backtests_per_user=count,
            max_running_backtests_per_user=2,
            rate_limits=False,
            secret_key=SecretStr("bench-only-server-key"),  # scaled out: required at start
        )
        ids = queue_backtests(settings, count)
        env = {
            **os.environ,
            "FARM_HOME": str(home),
            "FARM_FEED": "off",
            "FARM_BACKTEST_WORKERS": "1",
            "FARM_MAX_RUNNING_BACKTESTS_PER_USER": "2",
        }
        if url:
            env["FARM_DATABASE_URL"] = url
        rates: dict[int, list[float]] = {1: [], 2: []}
        db = Database(settings.resolved_database_url)
        for _ in range(rounds):  # alternated, so a change of the machine's load hits both
            for workers in (1, 2):
                requeue(db, ids, "cancelled")
                seconds = time_workers(settings, env, ids, workers)
                rates[workers].append(count / seconds * 60)
                print(
                    f"{workers} worker process(es): {count} backtests in {seconds:.1f} s = "
                    f"{rates[workers][-1]:.1f} backtests/minute",
                    flush=True,
                )
        db.dispose()
        one, two = (statistics.median(rates[n]) for n in (1, 2))
        print(
            f"median {one:.1f} vs {two:.1f} backtests/minute: scaling ratio 2/1 {two / one:.2f} "
            f"(os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f})"
        )


def latencies(bus: EventBus, count: int, publish: Callable[[int], None]) -> list[float]:
    """Publish ``count`` events one at a time; each one's publish-to-handler time."""
    arrived = threading.Event()
    times: list[float] = []
    sent = [0.0]

    def handler(_: Event) -> None:
        times.append(time.perf_counter() - sent[0])
        arrived.set()

    bus.subscribe("bench.ping", handler, group="bench")
    bus.start()
    try:
        for n in range(count):
            arrived.clear()
            sent[0] = time.perf_counter()
            publish(n)
            assert arrived.wait(10), "an event was not delivered"
    finally:
        bus.close()
    return times


def report(name: str, times: list[float]) -> None:
    ms = sorted(t * 1000 for t in times)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{name}: p50 {statistics.median(ms):.3f} ms, p99 {p99:.3f} ms ({len(ms)} events)")


def bench_events(count: int, redis_url: str) -> None:
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    memory: EventBus = InProcessBus()
    report("in-process bus", latencies(memory, count, lambda n: memory.publish("bench.ping", {})))
    streams = RedisStreamsBus(redis_url, prefix=prefix)
    report(
        "Redis Streams bus", latencies(streams, count, lambda n: streams.publish("bench.ping", {}))
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in (
            ("outbox + in-process bus (SQLite)", InProcessBus),
            (
                "outbox + Redis Streams bus (SQLite)",
                lambda: RedisStreamsBus(redis_url, prefix=prefix),
            ),
        ):
            db = Database(f"sqlite:///{tmp}/{uuid.uuid4().hex}.db")
            db.migrate()
            bus: EventBus = make()
            OutboxRelay(db, bus).hook()

            def commit(n: int, db: Database = db) -> None:
                with db.transaction() as session:
                    emit(session, "bench.ping", {"n": n})

            report(name, latencies(bus, count, commit))
            db.dispose()
    cleanup = RedisStreamsBus(redis_url, prefix=prefix)
    client = cleanup._redis
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    cleanup.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backtests", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="1-then-2-worker runs, alternated")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    args = parser.parse_args()
    bench_events(args.events, args.redis_url)
    bench_backtests(args.backtests, args.rounds, args.database_url)


if __name__ == "__main__":
    main()
