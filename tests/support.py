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


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every process under ``pid``: its parent's pid and its command line."""
    table: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        table[int(stat.parent.name)] = (parent, command)
    below = {pid}
    while grown := {p for p, (parent, _) in table.items() if parent in below} - below:
        below |= grown
    return {p: table[p] for p in below - {pid}}


def sandboxed_descendants(pid: int) -> dict[int, int]:
    """The outermost sandboxed agent processes under ``pid``, each with its parent's pid."""
    under = descendants(pid)
    agent = "farm.sandbox.runtime"
    return {
        p: parent
        for p, (parent, command) in under.items()
        if agent in command and agent not in under.get(parent, (0, ""))[1]
    }


def command_of(pid: int) -> str:
    """A process's command line ('' once it has ended)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
