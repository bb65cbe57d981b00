"""Start and stop a real `farm up` server for end-to-end tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from support import free_port

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
