"""Where FMEL records live: ``<root>/agent=<id>/session=<id>/<part file>``.

Part files are ``<kind>-<part>-<token>[-t<lo>_<hi>].parquet``: ``lo`` and ``hi`` (decision parts
only) are the part's first and last bar times in microseconds since the epoch, so newest-first
queries can skip parts without opening them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from farm.storage.objects import LocalRoot, Root

ID_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Agent and session ids are path segments: letters, digits, ``_`` and ``-`` only."""
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ROW_GROUP_ROWS: Final = 1000
"""Rows per Parquet row group: a newest-first page decodes only the row groups it needs."""
CAPPED_NAME: Final = "_capped.json"
"""Written in a session folder when its recording reached the byte cap."""
ROW_GROUP_BYTES: Final = 8 * 1024 * 1024
"""At most this many bytes (in memory) per row group: wide rows make shorter groups."""
ZSTD_MIN_BYTES: Final = 16 * 1024
"""Parts smaller than this in memory are written uncompressed: zstd doubles the CPU of writing
a few rows (a paper session's flush) and makes the file no smaller."""
STATS_MIN: Final = ("seq", "bar_ts")
"""The columns a small part keeps statistics for (the order its rows are read in)."""


def micros(ts: datetime) -> int:
    """``ts`` in microseconds since the epoch (the unit of part spans)."""
    return (ts - EPOCH) // timedelta(microseconds=1)


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


def commit(folder: Path, name: str, write: Callable[[Path], object]) -> Path:
    """Write ``folder/name`` atomically: ``write`` fills ``.<name>.tmp``, renamed into place.

    Readers only ever see whole files (or none).
    """
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.tmp"
    write(temp)
    return temp.replace(folder / name)


def write_part(folder: Path, name: str, table: pa.Table) -> Path:
    """Commit a Parquet part: zstd, dictionaries and statistics on every column, row groups of
    ``ROW_GROUP_ROWS`` (pruned by bar-time stats), fewer when that many rows would pass
    ``ROW_GROUP_BYTES``. Below ``ZSTD_MIN_BYTES`` (a paper session's few rows) it is plain:
    no compression or dictionaries, statistics on the ordering columns only (``STATS_MIN``),
    which writes it in about half the time."""
    rows = max(1, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES * table.num_rows // max(table.nbytes, 1)))
    if table.nbytes >= ZSTD_MIN_BYTES:
        options: dict[str, Any] = {"compression": "zstd"}
    else:
        stats = [c for c in STATS_MIN if c in table.column_names]
        options = {"compression": "none", "use_dictionary": False, "write_statistics": stats}
    return commit(
        folder,
        name,
        lambda path: pq.write_table(table, path, row_group_size=rows, **options),
    )


def part_span(path: str) -> tuple[int, int] | None:
    """The bar-time span a part's name declares, if any."""
    stem = path.rsplit("/", 1)[-1].removesuffix(".parquet")
    _, found, span = stem.rpartition("-t")
    lo, _, hi = span.partition("_")
    try:
        return (int(lo), int(hi)) if found else None
    except ValueError:
        return None


def as_root(root: Path | Root) -> Root:
    """``root`` as a :class:`Root` (a bare folder is read without a listing cache)."""
    return LocalRoot(root, cache=False) if isinstance(root, Path) else root


def session_folder(root: Root, agent_id: str, session_id: str) -> str:
    """The path of one session's folder below ``root`` (local or object storage)."""
    agent = f"agent={check_id('agent_id', agent_id)}"
    return root.join(agent, f"session={check_id('session_id', session_id)}")


def part_files(
    root: Path | Root, agent_ids: list[str], kind: str, session_id: str | None = None
) -> list[str]:
    """Every committed part file of ``kind`` for these agents (optionally one session), sorted."""
    return sorted(
        f"{folder}/{name}"
        for folder, names in session_folders(root, agent_ids, session_id)
        for name in part_names(names, kind)
    )


def session_folders(
    root: Path | Root, agent_ids: list[str], session_id: str | None
) -> list[tuple[str, tuple[str, ...]]]:
    """The session folders of these agents (or the one session) and the names in each."""
    found = as_root(root)
    folders: list[str] = []
    for agent_id in agent_ids:
        if session_id is not None:
            folders.append(session_folder(found, agent_id, session_id))
        else:
            folder = found.join(f"agent={check_id('agent_id', agent_id)}")
            folders.extend(
                f"{folder}/{name}" for name in found.names(folder) if name.startswith("session=")
            )
    return [(folder, found.names(folder)) for folder in folders]


def part_names(names: Iterable[str], kind: str) -> list[str]:
    """The committed part files of ``kind`` among a session folder's ``names``."""
    prefix = f"{kind}-"
    return [n for n in names if n.startswith(prefix) and n.endswith(".parquet")]


def agent_of_session(root: Path | Root, session_id: str) -> str | None:
    """The agent whose folder holds ``session_id``, if any."""
    found = as_root(root)
    wanted = f"session={check_id('session_id', session_id)}"
    for name in found.names(found.url):
        agent_id = name.removeprefix("agent=")
        if name.startswith("agent=") and is_valid_id(agent_id):
            if wanted in found.names(found.join(name)):
                return agent_id
    return None
