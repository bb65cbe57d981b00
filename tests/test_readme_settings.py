"""The README's configuration table names every setting, and only settings (or the CLI's)."""

from __future__ import annotations

import re
from pathlib import Path

from farm.config import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
CLI_VARIABLES = {"FARM_URL", "FARM_TOKEN"}  # read by the CLI, not by the server's settings


def documented() -> set[str]:
    """The variables of the table's first column; `FARM_A_B_C` / `_D_E` names `FARM_A_D_E`."""
    names: set[str] = set()
    for line in README.read_text().splitlines():
        if not line.startswith("| `FARM_"):
            continue
        first, *others = re.findall(r"`(_?[A-Z0-9_]+)`", line.split("|")[1])
        names.add(first)
        prefix = first.rsplit("_", 2)[0]
        names |= {prefix + o if o.startswith("_") else o for o in others}
    return names


def test_the_configuration_table_matches_the_settings() -> None:
    settings = {f"FARM_{name.upper()}" for name in Settings.model_fields}
    table = documented()
    assert settings - table == set(), "settings missing from README's configuration table"
    assert table - settings - CLI_VARIABLES == set(), "README documents settings that do not exist"
