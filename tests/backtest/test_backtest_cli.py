"""CLI parity with the API: ``farm backtest`` options, ``backtests``, ``trades``, ``equity``,
``evaluate``, ``leaderboard`` and ``decisions --action``, through typer's runner against the app
(real sandboxed runs)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_support import app_settings, submit, wait_for
from typer.testing import CliRunner, Result

from farm.app import create_app
from farm.cli import app
from farm.users.service import create_user
from support import route_cli

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
SMA = (REPO / "examples/agents/sma_cross.py").read_bytes()
runner = CliRunner()


World = tuple[TestClient, str, str]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, real_bars: Path) -> Iterator[World]:
    """A server with one agent whose standard evaluation completed: (client, token, agent id)."""
    tmp = tmp_path_factory.mktemp("cli")
    with TestClient(create_app(app_settings(tmp, real_bars))) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, "alice")
        headers = {"Authorization": f"Bearer {token}"}
        agent_id = submit(client, headers, SMA)
        standard = client.get(f"/api/agents/{agent_id}/backtests", headers=headers).json()
        assert wait_for(client, headers, standard["sessions"][0]["sessionId"])["status"] == (
            "completed"
        )
        yield client, token, agent_id


@pytest.fixture
def farm(world: World, monkeypatch: pytest.MonkeyPatch) -> Any:
    client, token, _ = world
    route_cli(client, monkeypatch)

    def run(*args: str) -> Result:
        return runner.invoke(app, [*args, "--token", token])

    return run


def test_backtest_options_and_the_listings_match_the_api(world: World, farm: Any) -> None:
    _, _, agent_id = world
    ran = farm(
        "backtest", agent_id, "--symbols", "AAPL", "--start", "2023-01-01", "--end",
        "2023-12-31", "--commission", "0.002", "--slippage", "5", "--wait", "--json",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.output)
    session_id = result["sessionId"]
    assert result["parameters"]["commission"] == 0.002
    assert result["parameters"]["slippageBps"] == 5

    listed = farm("backtests", agent_id, "--json")
    assert session_id in [s["sessionId"] for s in json.loads(listed.output)["sessions"]]
    table = farm("backtests", agent_id)
    assert table.exit_code == 0, table.output
    line = next(row for row in table.output.splitlines() if session_id in row)
    assert "2023-01-01 to 2023-12-31" in line  # piped, each row stays on one line
    assert "completed" in line

    trades = json.loads(farm("trades", session_id, "--limit", "2", "--json").output)
    assert trades["limit"] == 2
    assert len(trades["trades"]) == min(2, trades["total"])
    assert trades["total"] > 0
    shown = farm("trades", session_id, "--limit", "2", "--offset", "1")
    assert f"(2-3 of {trades['total']})" in " ".join(shown.output.split())

    equity = farm("equity", session_id, "--csv")
    assert equity.exit_code == 0, equity.output
    rows = list(csv.DictReader(io.StringIO(equity.output)))
    assert len(rows) == 250  # every trading day of 2023, over several pages of the API
    page = json.loads(farm("equity", session_id, "--limit", "5", "--json").output)
    assert page["total"] == 250
    assert float(rows[0]["equity"]) == page["points"][0]["equity"]

    sells = json.loads(farm("decisions", session_id, "--action", "sell", "--json").output)
    assert sells["decisions"]
    assert {d["action"] for d in sells["decisions"]} == {"sell"}


def test_leaderboard_and_evaluate(world: World, farm: Any) -> None:
    _, _, agent_id = world
    board = farm("leaderboard", "--type", "backtest", "--metric", "returns", "--json")
    assert board.exit_code == 0, board.output
    assert [r["agentId"] for r in json.loads(board.output)["leaderboard"]] == [agent_id]
    shown = farm("leaderboard", "--type", "backtest", "--limit", "5")
    assert shown.exit_code == 0, shown.output
    assert "Leaderboard: backtest, sharpe, all_time" in " ".join(shown.output.split())
    assert agent_id in shown.output
    busy = farm("evaluate", agent_id)
    assert busy.exit_code == 1
    assert "FARM_EVALUATE_COOLDOWN_S" in " ".join(busy.output.split())


def test_quiet_prints_only_ids_for_scripts(world: World, farm: Any) -> None:
    """``ID=$(farm ... --quiet)``: the session id once the backtest ended, the decision ids."""
    client, token, agent_id = world
    ran = farm(
        "backtest", agent_id, "--symbols", "AAPL", "--start", "2023-01-01", "--end",
        "2023-03-31", "--wait", "--quiet",
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    session_id = ran.stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    result = client.get(f"/api/backtest/{session_id}/results", headers=headers).json()
    assert result["status"] == "completed"
    decisions = farm("decisions", session_id, "--limit", "3", "--quiet")
    assert decisions.exit_code == 0, decisions.output
    ids = decisions.stdout.split()
    assert len(ids) == 3
    assert farm("explain", ids[0]).exit_code == 0


def test_submit_wait_follows_the_standard_evaluation_and_fails_with_it(farm: Any) -> None:
    broken = REPO / "tests/backtest/agents/broken.py"
    ran = farm("agents", "submit", str(broken), "--name", "broken", "--wait", "--quiet")
    assert ran.exit_code == 1, ran.output
    agent_id = ran.stdout.strip()
    assert len(agent_id) == 36  # the id still comes out on stdout
    assert "its standard evaluation failed" in ran.stderr
    assert "boom at bar 7" in ran.stderr
