"""Where FMEL records live: ``<root>/agent=<id>/session=<id>/<part file>``.

Part files are ``<kind>-<part>-<token>[-t<lo>_<hi>].parquet``: ``lo`` and ``hi`` (decision parts
only) are the part's first and last bar times in microseconds since the epoch, so newest-first
queries can skip parts without opening them.
"""

from __future__ import annotations

import os
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


def part_name(kind: str, part: int, token: str, span: tuple[int, int] | None = None) -> str:
    """The file name of a part (``span``: its first and last bar time in epoch microseconds)."""
    suffix = f"-t{span[0]}_{span[1]}" if span else ""
    return f"{kind}-{part:06d}-{token}{suffix}.parquet"


def part_span(path: str) -> tuple[int, int] | None:
    """The bar-time span a part's name declares, if any."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
    _, found, span = stem.rpartition("-t")
    lo, _, hi = span.partition("_")
    try:
        return (int(lo), int(hi)) if found else None
    except ValueError:
        return None


def part_files(
    root: Path, agent_ids: list[str], kind: str, session_id: str | None = None
) -> list[str]:
    """Every committed part file of ``kind`` for these agents (optionally one session), sorted."""
    prefix = f"{kind}-"
    files: list[str] = []
    for agent_id in agent_ids:
        if session_id is not None:
            folders = [str(session_dir(root, agent_id, session_id))]
        else:
            folders = [
                e.path for e in _entries(agent_dir(root, agent_id)) if e.name.startswith("session=")
            ]
        for folder in folders:
            files.extend(
                e.path
                for e in _entries(Path(folder))
                if e.name.startswith(prefix) and e.name.endswith(".parquet")
            )
    return sorted(files)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def agent_of_session(root: Path, session_id: str) -> str | None:
    """The agent whose folder holds ``session_id``, if any."""
    for path in root.glob(f"agent=*/session={check_id('session_id', session_id)}"):
        agent_id = path.parent.name.removeprefix("agent=")
        if is_valid_id(agent_id):
            return agent_id
    return None
