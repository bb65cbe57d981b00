"""Start and stop a real `farm up` server for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from farm.config import Settings
from farm.fmel.layout import part_names
from farm.storage.db import Database
from farm.users.service import create_user
from support import free_port, paper_runtimes

FARM = [sys.executable, "-m", "farm"]


@dataclass
class Server:
    """A running `farm up` process and the environment a CLI user would have."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return self.env["FARM_URL"]

    def output(self) -> str:
        return self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)


def start_server(home: Path, **env: str) -> Server:
    """`farm up` in ``home``; waits until /health answers. Reuses the port of ``FARM_PORT``."""
    server = start_process(home, ["up"], **env)
    token = re.search(r"FARM_TOKEN=(\S+)", server.output())
    if token:
        server.env["FARM_TOKEN"] = token.group(1)
    return server


def start_process(home: Path, command: list[str], **env: str) -> Server:
    """`farm COMMAND` (``up``, ``serve``, ``worker backtest``...) in ``home`` on ``FARM_PORT``
    (default: a free port); waits until its /health answers."""
    port = env.pop("FARM_PORT", None) or str(free_port())
    environment = {**os.environ, "FARM_HOME": str(home), "FARM_PORT": port, **env}
    log = home.with_name(f"{home.name}-{command[-1]}-{time.monotonic_ns()}.log")
    with log.open("w") as out:
        process = subprocess.Popen(
            [*FARM, *command], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"farm {' '.join(command)} did not start:\n{log.read_text()}")
        time.sleep(0.2)
    return Server(process, {**environment, "FARM_URL": url}, log)


def farm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Runs the `farm` CLI in ``env`` (a server's), capturing its output."""
    return subprocess.run([*FARM, *args], env=env, capture_output=True, text=True, timeout=60)


def copy_daily(shared_data: Path, data: Path, symbols: list[str]) -> Path:
    """Copies the symbols' real daily bars into a new folder ``data`` (for FARM_DATA_DIR)."""
    data.mkdir()
    for symbol in symbols:
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", data)
    return data


def replay_env(data: Path, shared_data: Path, symbols: list[str]) -> dict[str, str]:
    """Copies the symbols' daily bars into ``data``; the environment of a paper server replaying
    them fast from 2024-10-01, with no backtest workers."""
    copy_daily(shared_data, data, symbols)
    return {
        "FARM_DATA_DIR": str(data),
        "FARM_BACKTEST_WORKERS": "0",
        "FARM_FEED": "replay",
        "FARM_FEED_REPLAY_START": "2024-10-01",
        "FARM_FEED_INTERVAL_S": "0.12",
        "FARM_PAPER_POLL_S": "0.05",
        "FARM_PAPER_STEP_TIMEOUT_S": "20",
    }


def api_client(server: Server) -> httpx.Client:
    """An HTTP client of the server, with its bearer token."""
    headers = {"Authorization": f"Bearer {server.env['FARM_TOKEN']}"}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def start_paper(api: httpx.Client, name: str, code: bytes, symbols: list[str]) -> tuple[str, str]:
    """Submits the agent and starts it paper trading; its agent id and session id."""
    agent_id = api.post(
        "/api/agents/submit", data={"agentName": name}, files={"file": ("a.py", code)}
    ).json()["agentId"]
    started = api.post("/api/paper-trading/start", json={"agentId": agent_id, "symbols": symbols})
    assert started.status_code == 202, started.text
    return agent_id, started.json()["sessionId"]


def wait_until(api: httpx.Client, agent_id: str, done: Any, timeout: float = 120) -> Any:
    """Polls the agent's paper status until ``done(status)``; that status."""
    deadline = time.monotonic() + timeout
    while not done(status := api.get(f"/api/paper-trading/status/{agent_id}").json()):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    return status


def crash(server: Server) -> None:
    """SIGKILL the paper runtime and `farm up` together: nothing is cleaned up."""
    runtime = paper_runtimes(server.process.pid)
    assert runtime, "no paper runtime process under farm up"
    for pid in runtime:
        os.kill(pid, signal.SIGKILL)
    server.stop(signal.SIGKILL)


def restart_to_feed_end(
    home: Path, killed: Server, env: dict[str, str], api: httpx.Client, agent_id: str
) -> tuple[Server, Any]:
    """Restarts `farm up` on the killed server's port, waits until the replay ended and the
    agent's session processed its last bar; the new server and that status."""
    server = start_server(home, FARM_PORT=killed.env["FARM_PORT"], **env)
    deadline = time.monotonic() + 120
    while api.get("/api/feed").json()["state"] != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    feed = api.get("/api/feed").json()
    final = wait_until(api, agent_id, lambda s: s["lastBarTime"] == feed["lastBarTime"], timeout=60)
    return server, final


def fmel_decisions(folder: Path) -> list[dict[str, Any]]:
    """The decision records in an FMEL session folder (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return [
        record
        for name in part_names(os.listdir(folder), "decisions")
        for record in pq.read_table(folder / name).to_pylist()
    ]


def migrated_platform(home: Path, real_bars: Path, env: dict[str, str]) -> tuple[Database, str]:
    """``home`` holding the real bars and the database of ``env`` migrated by `farm migrate`, as
    an operator prepares separate processes; that database and the token of its user alice."""
    shutil.copytree(real_bars, home / "bars")
    environment = {**os.environ, "FARM_HOME": str(home), **env}
    subprocess.run([*FARM, "migrate"], env=environment, check=True, timeout=120)
    db = Database(Settings(database_url=env["FARM_DATABASE_URL"]).resolved_database_url)
    with db.transaction() as session:
        _, token = create_user(session, "alice")
    return db, token
