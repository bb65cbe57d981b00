"""What each process role starts: `farm serve` (api) neither migrates, imports bars nor runs
workers; `farm up` (all) does all three."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect

from farm.config import Settings
from farm.context import Context
from farm.health import health
from support import paper_runtimes


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_an_api_process_serves_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=2, feed="off")
    context = Context.build(settings, role="api")
    context.start()
    try:
        assert inspect(context.db.engine).get_table_names() == [], "no migration"
        assert context.bars.is_empty(), "no data import"
        assert not any(name.startswith("backtest-") for name in _threads()), "no workers"
        assert "outbox-relay" in _threads(), "but it relays events"
    finally:
        context.close()


@pytest.mark.sandbox
def test_the_embedded_process_prepares_everything(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=1, feed="off", sandbox="bwrap")
    context = Context.build(settings)
    context.start()
    try:
        assert "outbox" in inspect(context.db.engine).get_table_names()
        assert not context.bars.is_empty(), "the synthetic demo universe"
        assert context.backtests.refusal is None
        assert {"backtest-reaper", "backtest-worker-0"} <= _threads()
    finally:
        context.close()


def test_farm_up_migrates_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`farm up` migrates before creating the demo user; its start does not migrate again."""
    from alembic import command
    from typer.testing import CliRunner

    from farm import cli

    upgrades: list[str] = []
    upgrade = command.upgrade
    monkeypatch.setattr(command, "upgrade", lambda c, r: upgrades.append(r) or upgrade(c, r))
    started: list[Context] = []

    def run(context: Context, *_: object, **__: object) -> None:  # the server's lifespan
        context.start()
        started.append(context)
        context.close()

    monkeypatch.setattr(cli, "_run", run)
    monkeypatch.setenv("FARM_HOME", str(tmp_path / "farm"))
    monkeypatch.setenv("FARM_BACKTEST_WORKERS", "0")
    result = CliRunner().invoke(cli.app, ["up"])
    assert result.exit_code == 0, result.output
    assert "Created user 'demo'" in result.output
    assert started, "the server started"
    assert upgrades == ["head"]


def test_a_paper_worker_whose_sandbox_fails_runs_nothing_and_says_why(tmp_path: Path) -> None:
    """It claims no session (they wait for a worker whose sandbox works) and `/health` says
    why; agents must never run as root, so uid 0 breaks the sandbox."""
    settings = Settings(home=tmp_path / "farm", sandbox_uid=0, feed="replay")
    migrated = Context.build(settings)  # as `farm migrate` does before the workers start
    migrated.migrate()
    migrated.close()
    context = Context.build(settings, role="paper")
    context.start()
    try:
        assert paper_runtimes(os.getpid()) == [], "no paper runtime was started"
        sandbox = health(context).backends["sandbox"]
        assert sandbox.startswith("down: the agent sandbox cannot be set up")
        assert "must not run as root" in sandbox
        assert health(context).status == "degraded"
    finally:
        context.close()
