"""Retention: old FMEL sessions and backtest series go, newer ones stay (on both databases)."""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.fmel.layout import session_dir
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import Bar
from farm.retention import Swept, sweep
from farm.storage.models import Agent, BacktestSession
from farm.users.service import create_user

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DAY = 86_400


def record(
    root: Path, agent_id: str, session_id: str, *, age_days: float, now: datetime = NOW
) -> Path:
    """A one-decision FMEL session whose files were last written ``age_days`` before ``now``."""
    with FmelRecorder(root, agent_id, session_id, "u", "BACKTEST") as rec:
        rec.record_decision(
            seq=0,
            bar_ts=NOW,
            bars=[Bar(symbol="SPY", open=1, high=1, low=1, close=1, volume=1)],
            cash=1.0,
            value=1.0,
        )
    folder = session_dir(root, agent_id, session_id)
    stamp = now.timestamp() - age_days * DAY
    for path in [*folder.iterdir(), folder]:
        os.utime(path, (stamp, stamp))
    return folder


def backtest(context: Context, agent: Agent, *, age_days: float) -> str:
    """A completed backtest that finished ``age_days`` before NOW, with stored series."""
    session_id = str(uuid.uuid4())
    prefix = f"backtests/{session_id}"
    for name in ("equity", "fills", "trades"):
        context.artifacts.put(f"{prefix}/{name}.parquet", b"stored")
    with context.db.transaction() as session:
        session.add(
            BacktestSession(
                id=session_id,
                agent_id=agent.id,
                user_id=agent.user_id,
                kind="custom",
                status="completed",
                params={},
                metrics={"totalReturn": 0.1},
                results_key=prefix,
                finished_at=NOW - timedelta(days=age_days),
            )
        )
    return session_id


def test_sweep_deletes_what_is_past_retention_and_keeps_the_rest(
    client: TestClient, context: Context, db_settings: Settings
) -> None:
    settings = db_settings.model_copy(
        update={"fmel_retention_days": 30, "results_retention_days": 7}
    )
    root = settings.fmel_dir
    old = record(root, "agent-a", "old", age_days=31)
    new = record(root, "agent-a", "new", age_days=29)
    lonely = record(root, "agent-b", "old", age_days=400)
    with context.db.transaction() as session:
        user, token = create_user(session, "alice")
        agent = Agent(
            id=str(uuid.uuid4()),
            user_id=user.id,
            name="a",
            strategy_class="A",
            code_sha256="0" * 64,
            code_bytes=1,
            artifact_key="agents/a.py",
        )
        session.add(agent)
    stale = backtest(context, agent, age_days=8)
    fresh = backtest(context, agent, age_days=6)

    swept = sweep(settings, context.db, context.artifacts, NOW)

    assert (swept.fmel_sessions, swept.results) == (2, 1)
    assert not old.exists()
    assert not lonely.parent.exists()  # the agent folder left empty goes too
    assert new.is_dir()
    assert not (settings.artifacts_dir / "backtests" / stale).exists()
    assert (settings.artifacts_dir / "backtests" / fresh / "equity.parquet").is_file()
    with context.db.transaction() as session:
        assert session.get(BacktestSession, stale).results_key is None  # type: ignore[union-attr]
        assert session.get(BacktestSession, fresh).results_key == f"backtests/{fresh}"  # type: ignore[union-attr]
    gone = client.get(f"/api/backtest/{stale}/trades", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 404
    assert "FARM_RESULTS_RETENTION_DAYS" in gone.json()["message"]
    results = client.get(
        f"/api/backtest/{stale}/results", headers={"Authorization": f"Bearer {token}"}
    )
    assert results.json()["metrics"] == {"totalReturn": 0.1}  # the metrics stay
    assert sweep(settings, context.db, context.artifacts, NOW) == Swept(0, 0)


def test_without_retention_nothing_is_deleted(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=0)
    old = record(settings.fmel_dir, "agent-a", "old", age_days=10_000)
    with TestClient(create_app(settings)) as client:
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        assert sweep(settings, context.db, context.artifacts) == Swept(0, 0)
    assert old.is_dir()


def test_the_server_sweeps_at_start(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=0, fmel_retention_days=1)
    now = datetime.now(UTC)
    old = record(settings.fmel_dir, "agent-a", "old", age_days=2, now=now)
    new = record(settings.fmel_dir, "agent-a", "new", age_days=0.5, now=now)
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 10
        while old.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not old.exists()
        assert new.is_dir()
