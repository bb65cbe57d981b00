"""Helpers every test folder may import: backend URLs, the skip-or-fail rule, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

POSTGRES_URL = os.environ.get("FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def require_backend(name: str, problem: str | None) -> None:
    """Skip a test whose backend is unreachable, except under CI=true where that is a failure."""
    if problem is None:
        return
    message = f"{name} is not available ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(f"{message}; these tests run when it is (they are required under CI=true)")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def sandboxed_descendants(pid: int) -> dict[int, int]:
    """The outermost sandboxed agent processes under ``pid``, each with its parent's pid."""
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        parents[int(stat.parent.name)] = int(fields[1])
        commands[int(stat.parent.name)] = command
    below = {pid}
    changed = True
    while changed:
        grown = below | {p for p, parent in parents.items() if parent in below}
        changed, below = grown != below, grown
    agent = "farm.sandbox.runtime"
    return {
        p: parents[p]
        for p in below - {pid}
        if agent in commands[p] and agent not in commands.get(parents[p], "")
    }


def command_of(pid: int) -> str:
    """A process's command line ('' once it has ended)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
