"""``farm decisions`` and ``farm explain`` through typer's runner against the real app."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from fmel_helpers import T0, AddSession, World, new_id
from typer.testing import CliRunner, Result

from farm.cli import app
from farm.context import Context
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import Bar
from support import route_cli

runner = CliRunner()


@pytest.fixture(autouse=True)
def routed(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's API client talks to the in-process app instead of a socket."""
    route_cli(client, monkeypatch)


def farm(world: World, *args: str) -> Result:
    token = world.alice.headers["Authorization"].removeprefix("Bearer ")
    return runner.invoke(app, [*args, "--token", token], env={"COLUMNS": "300"})


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def test_decisions_lists_a_session_newest_first(world: World) -> None:
    result = farm(world, "decisions", world.small, "--limit", "3")
    assert result.exit_code == 0, result.output
    assert "(3 of 8, newest first)" in flat(result)
    text = flat(result)
    assert (
        text.index(f"{world.small}:7")
        < text.index(f"{world.small}:6")
        < text.index(f"{world.small}:5")
    )
    assert "rotate from MSFT into AAPL" in text
    listed = json.loads(farm(world, "decisions", world.small, "--json").output)
    assert listed["total"] == 8
    assert len(listed["decisions"]) == 8


def test_explain_gives_a_readable_account_of_one_decision(world: World) -> None:
    result = farm(world, "explain", f"{world.small}:6")
    assert result.exit_code == 0, result.output
    text = result.output
    for expected in [
        f"Decision {world.small}:6 — step 6 of session {world.small} (BACKTEST)",
        "Bar time 2024-01-04T14:30:00Z",
        "Portfolio: cash 99,994.00, value 100,006.00",
        "  AAPL: open 106.00 high 108.00 low 105.00 close 107.00 volume 1,000,000",
        "What the agent reported (not verified by the platform):",
        "  It read: nothing",
        "  Indicators: sma = 106.5, bands = n/a, bands[1] = 1",
        "  Reasoning: rotate from MSFT into AAPL",
        "  Confidence: 100%",
        "Action: MIXED",
        "  order buy 10 AAPL market [submitted]",
        "  order sell 10 MSFT limit (limit 99.50) [submitted]",
        "  filled buy 10 AAPL @ 107.00, commission 1.01, at 2024-01-05T14:30:00Z",
        "  sell MSFT ended margin: insufficient cash at 2024-01-04T14:30:00Z",
        "  opened a AAPL trade (2024-01-05T14:30:00Z -> 2024-01-05T15:30:00Z, 1 bars): "
        "net P&L -10.00 (gross -8.00)",
    ]:
        assert expected in text, expected
    assert (
        "Hook error: get_decision_confidence raised"
        in farm(world, "explain", f"{world.small}:4").output
    )
    as_json = json.loads(farm(world, "explain", f"{world.small}:6", "--json").output)
    assert as_json["decisionId"] == f"{world.small}:6"


HOSTILE = (
    "[red]alarm[/red] [/] \x1b[2J\x1b]8;;http://x\x07link\r\x1b[1A\x1b[2KBacktest completed"
    "\u202eevil\x00"
)


def test_agent_text_cannot_drive_the_terminal(
    world: World, context: Context, add_session: AddSession
) -> None:
    session = new_id()
    add_session(world.alice, world.agent, session)
    with FmelRecorder(
        context.fmel.root, world.agent, session, world.alice.user_id, "BACKTEST"
    ) as rec:
        rec.record_decision(
            seq=0,
            bar_ts=T0,
            bars=[Bar(symbol="AAPL", open=1, high=1, low=1, close=1, volume=1)],
            cash=float("nan"),
            value=1,
            reasoning=HOSTILE,
            hook_errors=["line one\nBacktest completed\r[/]"],
        )
    explained = farm(world, "explain", f"{session}:0")
    listed = farm(world, "decisions", session)
    for result in (explained, listed):
        assert result.exit_code == 0, result.output
        output = result.output
        for raw in ("\x1b", "\x07", "\r", "\x00", "\u202e"):
            assert raw not in output
        assert "[red]alarm[/red] [/]" in output  # markup shown as text, not applied
        assert not any(
            line.lstrip().startswith("Backtest completed") for line in output.splitlines()
        )
    assert "Portfolio: cash n/a, value 1.00" in explained.output
    assert "Hook error: line one Backtest completed [/]" in flat(explained)


def test_unknown_decision_exits_1_with_the_servers_message(world: World) -> None:
    result = farm(world, "explain", f"{new_id()}:0")
    assert result.exit_code == 1
    assert "no decision with id" in flat(result)
