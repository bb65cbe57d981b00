"""Where FMEL records live: ``<root>/agent=<id>/session=<id>/<kind>-<part>-<token>.parquet``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Agent and session ids are path segments: letters, digits, ``_`` and ``-`` only."""


def is_valid_id(value: str) -> bool:
    """True when ``value`` can safely be an agent or session path segment."""
    return ID_PATTERN.fullmatch(value) is not None


def check_id(name: str, value: str) -> str:
    """``value`` if it is a valid id; ValueError otherwise."""
    if not is_valid_id(value):
        raise ValueError(f"{name} must be 1 to 64 letters, digits, '_' or '-', got {value!r}")
    return value


def agent_dir(root: Path, agent_id: str) -> Path:
    """The folder of one agent's sessions."""
    return root / f"agent={check_id('agent_id', agent_id)}"


def session_dir(root: Path, agent_id: str, session_id: str) -> Path:
    """The folder of one session's part files."""
    return agent_dir(root, agent_id) / f"session={check_id('session_id', session_id)}"


def part_files(
    root: Path, agent_ids: list[str], kind: str, session_id: str | None = None
) -> list[str]:
    """Every committed part file of ``kind`` for these agents (optionally one session), sorted."""
    session = f"session={check_id('session_id', session_id)}" if session_id else "session=*"
    files: list[str] = []
    for agent_id in agent_ids:
        files.extend(str(p) for p in agent_dir(root, agent_id).glob(f"{session}/{kind}-*.parquet"))
    return sorted(files)


def agent_of_session(root: Path, session_id: str) -> str | None:
    """The agent whose folder holds ``session_id``, if any."""
    for path in root.glob(f"agent=*/session={check_id('session_id', session_id)}"):
        agent_id = path.parent.name.removeprefix("agent=")
        if is_valid_id(agent_id):
            return agent_id
    return None
