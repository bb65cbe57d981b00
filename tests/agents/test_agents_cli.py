"""The CLI prints agent-controlled text inertly: ``farm agents list/show`` and ``farm results``
through typer's runner against the real app (issue 8)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner, Result

from farm.cli import app
from farm.cli_support import inert
from farm.context import Context
from farm.storage.models import Agent, BacktestSession, User
from farm.users.service import create_user
from support import route_cli

runner = CliRunner()
# Markup that crashed Rich, a fake status line drawn with \r and ANSI, a bidi override (no NUL:
# PostgreSQL cannot store one; SQLite could, and the API now refuses all of them).
HOSTILE = "[/]Evil[bold] \x1b[1A\x1b[2K\rBacktest completed\u202e \x1b]8;;http://x\x07ok"
RAW = ("\x1b", "\x07", "\r", "\x00", "\u202e")


@pytest.fixture
def token(client: TestClient, context: Context, monkeypatch: pytest.MonkeyPatch) -> str:
    route_cli(client, monkeypatch)
    with context.db.transaction() as session:
        _, clear = create_user(session, "alice")
    return clear


def farm(token: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--token", token], env={"COLUMNS": "300"})


def assert_inert(result: Result) -> None:
    assert result.exit_code == 0, result.output
    for raw in RAW:
        assert raw not in result.output
    assert "[/]Evil[bold]" in result.output  # shown, not applied
    assert not any(
        line.lstrip().startswith("Backtest completed") for line in result.output.split("\n")
    )


def hostile_agent(context: Context) -> str:
    """An agent stored before names were validated (the API now refuses this name)."""
    agent_id = str(uuid.uuid4())
    with context.db.transaction() as session:
        owner = session.scalars(select(User.id).where(User.name == "alice")).one()
        session.add(
            Agent(
                id=agent_id,
                user_id=owner,
                name=HOSTILE,
                description=HOSTILE,
                tags=HOSTILE.replace(",", ""),
                strategy_class="Strategy",
                code_sha256="0" * 64,
                code_bytes=1,
                artifact_key=f"agents/{owner}/{agent_id}.py",
            )
        )
    return agent_id


def test_agents_list_and_show_print_hostile_names_inertly(token: str, context: Context) -> None:
    agent_id = hostile_agent(context)
    assert_inert(farm(token, "agents", "list"))
    assert_inert(farm(token, "agents", "show", agent_id))


def test_results_print_hostile_failures_inertly(token: str, context: Context) -> None:
    agent_id = hostile_agent(context)
    session_id = str(uuid.uuid4())
    with context.db.transaction() as session:
        owner = session.get(Agent, agent_id)
        assert owner is not None
        session.add(
            BacktestSession(
                id=session_id,
                agent_id=agent_id,
                user_id=owner.user_id,
                kind="custom",
                status="failed",
                params={},
                failure_reason="agent_error",
                failure_message=HOSTILE,
                failure_traceback=f"Traceback (most recent call last):\n  {HOSTILE}\nValueError",
            )
        )
    result = farm(token, "results", session_id)
    assert_inert(result)
    assert "Traceback (most recent call last):\n" in result.output  # line breaks kept there


def test_inert_text_keeps_what_is_printable() -> None:
    assert inert("SMA cross — 10/30 [v2]") == "SMA cross — 10/30 \\[v2]"
    assert inert("a\nb\x00c") == "a b c"
    assert inert("a\nb", multiline=True) == "a\nb"
    assert inert("\x1b[31mred\x1b[0m\x1b]0;title\x1b\\ done") == "red done"


def test_an_id_with_control_characters_is_an_error_not_a_traceback() -> None:
    # the URL is refused before any connection is made (the real client, not the routed one)
    args = ["agents", "show", "\x01\x1b[2Jx", "--url", "http://127.0.0.1:9", "--token", "t"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "not a valid request" in result.output
    assert "\x1b" not in result.output
