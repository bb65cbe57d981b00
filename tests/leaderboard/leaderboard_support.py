"""Leaderboard test helpers: results recorded as the backtest service does, a private Redis."""

from __future__ import annotations

import math
import random
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from farm.context import Context
from farm.events import BACKTEST_COMPLETED, FORWARD_RECORDED
from farm.leaderboard.forward import ForwardBar, ForwardRecorded
from farm.leaderboard.service import record_backtest_result, record_forward_result
from farm.storage.models import Agent, BacktestSession, User
from support import free_port, redis_problem

METRICS = {
    "initialValue": 100_000.0,
    "finalValue": 110_000.0,
    "totalReturn": 0.10,
    "sharpeRatio": 1.0,
    "sortinoRatio": 1.5,
    "calmarRatio": 0.8,
    "maxDrawdown": 0.12,
    "winRate": 0.55,
    "totalTrades": 20,
}


def daily_returns(n: int = 252, drift: float = 0.0008, seed: int = 7) -> list[float]:
    """A reproducible daily return series."""
    rng = random.Random(seed)
    return [rng.gauss(drift, 0.01) for _ in range(n)]


@dataclass
class Farm:
    """Creates users, agents and completed backtests the way the backtest service does."""

    context: Context
    users: dict[str, str] = field(default_factory=dict)
    clock: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=365))

    def user(self, name: str) -> str:
        if name not in self.users:
            with self.context.db.transaction() as session:
                user = User(id=str(uuid.uuid4()), name=name)
                session.add(user)
            self.users[name] = user.id
        return self.users[name]

    def agent(self, name: str, owner: str = "alice", submitted_at: datetime | None = None) -> str:
        """A new agent; submissions are one second apart unless ``submitted_at`` is given."""
        self.clock += timedelta(seconds=1)
        agent_id = str(uuid.uuid4())
        with self.context.db.transaction() as session:
            session.add(
                Agent(
                    id=agent_id,
                    user_id=self.user(owner),
                    name=name,
                    strategy_class="Strategy",
                    code_sha256=uuid.uuid4().hex * 2,
                    code_bytes=1,
                    artifact_key=f"agents/{agent_id}.py",
                    created_at=submitted_at or self.clock,
                )
            )
        return agent_id

    def result(
        self,
        agent_id: str,
        *,
        kind: str = "standard",
        data_source: str = "real",
        age: timedelta = timedelta(hours=1),
        returns: Sequence[float] | None = None,
        publish: bool = True,
        **metrics: Any,
    ) -> str:
        """Complete a backtest of ``agent_id`` (``age`` ago): hook in the transaction, event
        after commit. Metrics that are not finite reach the hook only (PostgreSQL's JSON
        cannot store them, as a broken run's metrics could not be either)."""
        values = {**METRICS, **metrics}
        storable = all(not isinstance(v, float) or math.isfinite(v) for v in values.values())
        with self.context.db.transaction() as session:
            user_id = session.get(Agent, agent_id).user_id  # type: ignore[union-attr]
            row = BacktestSession(
                id=str(uuid.uuid4()),
                agent_id=agent_id,
                user_id=user_id,
                kind=kind,
                status="completed",
                params={},
                data_source=data_source,
                metrics=values,
                finished_at=datetime.now(UTC) - age,
            )
            if storable:
                session.add(row)
                session.flush()
            record_backtest_result(session, row, daily_returns() if returns is None else returns)
        if publish:
            event = {"sessionId": row.id, "agentId": agent_id, "userId": user_id, "kind": kind}
            self.context.bus.publish(BACKTEST_COMPLETED, event)
        return row.id

    def submitted_at(self, agent_id: str) -> datetime:
        with self.context.db.transaction() as session:
            agent = session.get(Agent, agent_id)
            assert agent is not None
            return agent.created_at

    def forward(
        self,
        agent_id: str,
        returns: Sequence[float],
        *,
        first: datetime | None = None,
        session_id: str = "paper-1",
        publish: bool = True,
    ) -> ForwardRecorded:
        """Record daily bars of a paper session with these returns, as the paper loop would:
        bar ``i`` is dated ``first + i`` days (default: the day after the submission)."""
        start = first or self.submitted_at(agent_id) + timedelta(days=1)
        equity, bars = 100_000.0, []
        for i, r in enumerate(returns):
            bars.append(ForwardBar(start + timedelta(days=i), equity, equity * (1 + r)))
            equity *= 1 + r
        with self.context.db.transaction() as session:
            recorded = record_forward_result(session, agent_id, session_id, bars)
        if publish:
            self.context.bus.publish(FORWARD_RECORDED, {"agentId": agent_id})
        return recorded


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port, to stop and restart mid-test."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while redis_problem(self.url) is not None:
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
