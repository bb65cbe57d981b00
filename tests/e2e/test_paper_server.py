"""End to end: `farm accounts` against a real `farm up`, whose replay feed survives a restart."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from server_support import FARM, Server, start_server

NAME = "[red]Swing[/red] [link=http://x]"  # markup must be printed as written


def farm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**env, "COLUMNS": "250"}
    return subprocess.run(
        [*FARM, *args], env=environment, capture_output=True, text=True, timeout=60
    )


def feed(server: Server) -> Any:
    return httpx.get(f"{server.url}/api/feed").json()


def wait_for_steps(server: Server, count: int) -> Any:
    deadline = time.monotonic() + 60
    while (status := feed(server))["stepsPublished"] < count:
        assert time.monotonic() < deadline, status
        time.sleep(0.05)
    return status


def test_accounts_cli_round_trip_and_the_feed_resumes_after_a_restart(
    tmp_path: Path, shared_data: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("SPY", "AAPL"):
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", data)
    env = {
        "FARM_DATA_DIR": str(data),
        "FARM_BACKTEST_WORKERS": "0",
        "FARM_FEED": "replay",
        "FARM_FEED_INTERVAL_S": "0.05",
        "FARM_FEED_REPLAY_START": "2020-01-02",  # ~60 s of replay: never ends mid-test
    }
    home = tmp_path / "home"
    server = start_server(home, **env)
    try:
        user = server.env
        created = farm(user, "accounts", "create", "--name", NAME, "--cash", "2500.55", "--json")
        assert created.returncode == 0, created.stderr
        account_id = json.loads(created.stdout)["accountId"]

        listed = farm(user, "accounts", "list")
        assert listed.returncode == 0, listed.stderr
        assert account_id in listed.stdout
        assert NAME in listed.stdout
        assert "$2,500.55" in listed.stdout

        for amount in ("0.10", "0.20", "1234.56"):
            assert farm(user, "accounts", "fund", account_id, amount).returncode == 0
        shown = farm(user, "accounts", "show", account_id)
        assert "$3,735.41" in shown.stdout
        assert NAME in shown.stdout
        as_json = json.loads(farm(user, "accounts", "show", account_id, "--json").stdout)
        assert as_json["cash"] == 3735.41
        assert as_json["funded"] == 1234.86

        bad = farm(user, "accounts", "fund", account_id, "0.001")
        assert bad.returncode == 1
        assert "no more than 2 decimal places" in bad.stderr
        missing = farm(user, "accounts", "show", "[bold]nope")
        assert missing.returncode == 1
        assert "no account with id [bold]nope" in missing.stderr
        hostile = farm(user, "accounts", "show", "%1B]0;pwned%07x")  # the server decodes it
        assert hostile.returncode == 1
        assert "no account with id x" in hostile.stderr  # the escape sequence removed whole

        reset = farm(user, "accounts", "reset", account_id, "--yes")
        assert reset.returncode == 0, reset.stderr
        assert "$2,500.55" in reset.stdout
        refused = subprocess.run(
            [*FARM, "accounts", "reset", account_id],
            env=user,
            input="n\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1  # not confirmed: nothing sent

        before = wait_for_steps(server, 5)
        assert before["state"] == "running"
        assert before["symbols"] == ["AAPL", "SPY"]
        server.stop()  # a clean stop saves where the feed was
        server = start_server(home, FARM_PORT=server.env["FARM_PORT"], **env)
        stopped_at = server.output()
        after = wait_for_steps(server, before["stepsPublished"] + 3)
        assert after["state"] == "running"
        assert after["lastBarTime"] > before["lastBarTime"]
        assert "feed replay: 2 symbols from 2020-01-02, after 20" in stopped_at
        health = httpx.get(f"{server.url}/health").json()
        assert health["backends"]["feed"] == "ok"
    finally:
        server.stop()
