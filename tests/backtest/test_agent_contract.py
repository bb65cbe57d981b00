"""The agent contract through real HTTP (issue 12): params checked and passed to the strategy,
the scientific stack in the real sandbox, and what an agent prints kept (head and tail) and
readable through the API and ``farm logs``."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from backtest_support import AGENTS
from fastapi.testclient import TestClient
from service_support import Headers, app_settings, start, submit, wait_for
from typer.testing import CliRunner

from farm.app import create_app
from farm.cli import app as cli_app
from farm.sandbox.launcher import LOG_PART_BYTES
from farm.users.service import create_user
from support import route_cli

RANGE = {"symbols": ["SPY"], "startDate": "2023-01-03", "endDate": "2023-03-31"}
FLOOD_KB = 256


@pytest.fixture
def client(tmp_path: Path, real_bars: Path) -> Iterator[TestClient]:
    settings = app_settings(tmp_path, real_bars, sandbox_output_kb=FLOOD_KB)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def user(client: TestClient) -> Callable[[str], tuple[Headers, str]]:
    def make(name: str) -> tuple[Headers, str]:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            _, token = create_user(session, name)
        return {"Authorization": f"Bearer {token}"}, token

    return make


def agent(name: str) -> bytes:
    return (AGENTS / name).read_bytes()


def run(client: TestClient, headers: Headers, name: str, timeout: float = 120) -> tuple[str, Any]:
    """Submit the agent file ``name``, backtest it on ``RANGE``; its session id and result."""
    agent_id = submit(client, headers, agent(name))
    session_id = start(client, headers, agent_id, **RANGE).json()["sessionId"]
    return session_id, wait_for(client, headers, session_id, timeout=timeout)


def reasoning(client: TestClient, headers: Headers, session_id: str) -> list[str]:
    response = client.get(
        "/api/fmel/decisions", headers=headers, params={"sessionId": session_id, "limit": 100}
    )
    assert response.status_code == 200, response.text
    reported = [d["agentReported"]["reasoning"] for d in response.json()["decisions"]]
    return [r for r in reported if r]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        (
            {"size": 1, "sise": 2},
            "unknown strategy params: sise; the strategy declares: label, ratio, size",
        ),
        ({"size": "two"}, "param size must be an int"),
        ({"size": 1.5}, "param size must be an int"),
        ({"ratio": True}, "param ratio must be a float"),
        ({"label": 3}, "param label must be a str"),
    ],
)
def test_params_the_strategy_does_not_declare_or_of_another_type_are_400(
    client: TestClient,
    user: Callable[[str], tuple[Headers, str]],
    params: dict[str, object],
    fragment: str,
) -> None:
    alice, _ = user("alice")
    agent_id = submit(client, alice, agent("param_echo.py"))
    response = start(client, alice, agent_id, params=params, **RANGE)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["message"]


@pytest.mark.sandbox
def test_valid_params_reach_the_strategy(
    client: TestClient, user: Callable[[str], tuple[Headers, str]]
) -> None:
    alice, _ = user("alice")
    agent_id = submit(client, alice, agent("param_echo.py"))
    params = {"size": 7, "label": "run-b", "ratio": 2}
    response = start(client, alice, agent_id, params=params, **RANGE)
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    result = wait_for(client, alice, session_id)
    assert result["status"] == "completed", result
    assert result["parameters"]["params"] == params
    assert set(reasoning(client, alice, session_id)) == {"size=7 label=run-b ratio=2"}
    fills = client.get(f"/api/backtest/{session_id}/fills", headers=alice).json()["fills"]
    assert [f["size"] for f in fills] == [7]


@pytest.mark.sandbox
def test_scipy_sklearn_statsmodels_and_ta_run_in_the_sandbox(
    client: TestClient, user: Callable[[str], tuple[Headers, str]]
) -> None:
    alice, _ = user("alice")
    session_id, result = run(client, alice, "scientific.py", timeout=240)
    assert result["status"] == "completed", result
    said = reasoning(client, alice, session_id)
    computed = [s for s in said if s.startswith("slope=")]
    assert computed, said
    assert "nan" not in computed[-1]
    assert any(s.endswith(" parallel=14") and " forest=" in s for s in computed), computed
    assert result["metrics"]["totalTrades"] is not None


@pytest.mark.sandbox
@pytest.mark.skipif(
    importlib.util.find_spec("torch") is None,
    reason="PyTorch is an opt-in, not installed here (`make torch-cpu` installs the CPU wheel)",
)
def test_an_agent_importing_torch_runs_in_the_sandbox(
    client: TestClient, user: Callable[[str], tuple[Headers, str]]
) -> None:
    """With the opt-in installed, submission accepts ``import torch`` and the agent trains in
    the sandbox within the default memory limit; it reports its import time and peak memory."""
    alice, _ = user("alice")
    runtime = client.get("/api/runtime").json()
    assert any(p["name"] == "torch" for p in runtime["packages"]), runtime
    session_id, result = run(client, alice, "torch_agent.py", timeout=240)
    assert result["status"] == "completed", result
    said = [s for s in reasoning(client, alice, session_id) if s.startswith("torch=")]
    assert said, reasoning(client, alice, session_id)
    fitted = re.fullmatch(
        r"torch=\S+ slope=(\S+) loss=(\S+) import_s=(\S+) peak_mb=(\d+)", said[-1]
    )
    assert fitted, said[-1]
    slope, loss, import_s, peak_mb = (float(v) for v in fitted.groups())
    assert abs(slope) > 0.01, said[-1]  # it learned something from the closes
    assert loss < 1.0, said[-1]  # better than predicting the mean
    print(f"in the sandbox: import torch {import_s:.2f} s, peak memory {peak_mb:.0f} MB")
    assert result["metrics"]["totalTrades"] is not None


@pytest.mark.sandbox
def test_a_failing_agents_output_is_readable_through_the_api_and_the_cli(
    client: TestClient,
    user: Callable[[str], tuple[Headers, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (alice, token), (bob, _) = user("alice"), user("bob")
    session_id, result = run(client, alice, "chatty_failure.py")
    assert result["status"] == "failed"
    assert result["failure"]["reason"] == "agent_error"

    logs = client.get(f"/api/backtest/{session_id}/logs", headers=alice)
    assert logs.status_code == 200, logs.text
    body = logs.json()
    assert body["status"] == "failed"
    assert "bar 1 close" in body["head"]
    assert "bar 3 close" in body["head"]
    assert "a warning on stderr" in body["head"]
    assert "bar 4" not in body["head"]
    assert body["omittedBytes"] == 0
    assert body["totalBytes"] == len((body["head"] + body["tail"]).encode())
    assert client.get(f"/api/backtest/{session_id}/logs", headers=bob).status_code == 403
    assert client.get("/api/backtest/nope/logs", headers=alice).status_code == 404

    route_cli(client, monkeypatch)
    printed = CliRunner().invoke(cli_app, ["logs", session_id, "--token", token])
    assert printed.exit_code == 0, printed.output
    assert "bar 3 close" in printed.output
    assert "a warning on stderr" in printed.output


@pytest.mark.sandbox
def test_an_output_flood_is_killed_at_the_cap_and_its_head_and_tail_are_kept(
    client: TestClient,
    user: Callable[[str], tuple[Headers, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alice, token = user("alice")
    session_id, result = run(client, alice, "flood.py")
    assert result["status"] == "failed"
    assert "output limit exceeded" in result["failure"]["message"]

    body = client.get(f"/api/backtest/{session_id}/logs", headers=alice).json()
    assert body["head"].startswith("FIRST LINE\nline 000000000 ")
    assert len(body["head"].encode()) == LOG_PART_BYTES
    assert len(body["tail"].encode()) == LOG_PART_BYTES
    assert body["totalBytes"] > FLOOD_KB * 1024
    assert body["omittedBytes"] == body["totalBytes"] - 2 * LOG_PART_BYTES
    last = [line for line in body["tail"].splitlines() if line.startswith("line ")]
    assert int(last[-2].split()[1]) > FLOOD_KB * 1024 // 120  # printed near the cap

    route_cli(client, monkeypatch)
    printed = CliRunner().invoke(cli_app, ["logs", session_id, "--token", token])
    assert printed.exit_code == 0, printed.output
    assert printed.output.startswith("FIRST LINE\n")
    assert f"[... {body['omittedBytes']:,} bytes not kept ...]" in printed.output
    assert last[-2] in printed.output


@pytest.mark.sandbox
def test_params_of_a_strategy_with_computed_params_are_checked_when_it_runs(
    client: TestClient, user: Callable[[str], tuple[Headers, str]]
) -> None:
    alice, _ = user("alice")
    agent_id = submit(client, alice, agent("computed_params.py"))
    response = start(client, alice, agent_id, params={"sise": 3}, **RANGE)
    assert response.status_code == 202, response.text  # not known before it runs
    result = wait_for(client, alice, response.json()["sessionId"])
    assert result["status"] == "failed"
    assert result["failure"]["message"].endswith(
        "unknown strategy params: sise; the strategy declares: size"
    )
