"""The README's walkthrough, run verbatim against a real `farm up` on a non-default port.

How blocks are picked: every fenced ```` ```bash ```` block between the HTML comments
``<!-- walkthrough: start ... -->`` and ``<!-- walkthrough: end -->`` in README.md (invisible to
readers), in order, as one bash script with ``set -euo pipefail``: the ids one block keeps in
shell variables are used by the next, as in a user's terminal. Other blocks (``text``, the
`make` commands) are not run.

The server is started the way the README says a user starts it: ``farm up`` (what ``make run``
runs once installed) with ``FARM_PORT`` set to a free port, ``FARM_DATA_DIR`` pointing at real
bars of the standard universe, in a fresh ``FARM_HOME``. The script's environment is a
terminal's with the two ``export`` lines `farm up` printed pasted in, and nothing else of the
platform's settings. It runs in a scratch folder holding only what the README's commands name
(``.venv`` and ``examples``), so ``equity.csv`` lands there, not in the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_support import Server, start_server

from support import require_backend

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
START, END = "<!-- walkthrough: start", "<!-- walkthrough: end -->"
MARK = "::walkthrough block {}::"
STANDARD = ["SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM"]


def walkthrough_blocks(readme: str) -> list[str]:
    """The bash blocks between the walkthrough markers, in order."""
    assert readme.count(START) == 1, "the walkthrough's start marker is missing"
    assert readme.count(END) == 1, "the walkthrough's end marker is missing"
    section = readme[readme.index(START) : readme.index(END)]
    return re.findall(r"^```bash\n(.*?)^```$", section, flags=re.DOTALL | re.MULTILINE)


def test_the_walkthrough_markers_pick_the_bash_blocks_only() -> None:
    blocks = walkthrough_blocks(README.read_text())
    assert len(blocks) >= 3
    assert all("export FARM_TOKEN=farm_..." not in b for b in blocks)  # the sample is text
    # No placeholder a user would have to replace: ids are used as $VARIABLES only.
    placeholders = [re.findall(r"(?<![$\w])[A-Z]+_ID\b(?!=)", b) for b in blocks]
    assert placeholders == [[]] * len(blocks)


@pytest.fixture
def server(tmp_path: Path, shared_data: Path) -> Iterator[Server]:
    """`farm up` on a free port with the standard universe's real bars (FARM_DATA_DIR) and the
    live feed on (the test suite turns it off by default)."""
    bars = tmp_path / "bars"
    bars.mkdir()
    for symbol in STANDARD:
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", bars)
    running = start_server(tmp_path / "home", FARM_DATA_DIR=str(bars), FARM_FEED="replay")
    try:
        yield running
    finally:
        running.stop()


def terminal(server: Server) -> dict[str, str]:
    """A user's terminal: no FARM_ settings but the two exports `farm up` printed."""
    exports = dict(re.findall(r"^\s*export (FARM_URL|FARM_TOKEN)=(\S+)$", server.output(), re.M))
    assert set(exports) == {"FARM_URL", "FARM_TOKEN"}, server.output()
    assert exports["FARM_URL"] != "http://127.0.0.1:8000"  # the non-default port is printed
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    return {**env, **exports, "COLUMNS": "200"}


@pytest.mark.sandbox
def test_the_readme_walkthrough_runs_verbatim(server: Server, tmp_path: Path) -> None:
    require_backend("the project's .venv (make .venv/.installed)", _venv_problem())
    blocks = walkthrough_blocks(README.read_text())
    script = "set -euo pipefail\n" + "".join(
        f"printf '\\n{MARK.format(n)}\\n'\n{block}" for n, block in enumerate(blocks)
    )
    folder = tmp_path / "checkout"
    folder.mkdir()
    for name in (".venv", "examples"):
        (folder / name).symlink_to(REPO / name)
    ran = subprocess.run(
        ["bash", "-c", script],
        cwd=folder,
        env=terminal(server),
        capture_output=True,
        text=True,
        timeout=300,
    )
    shown = f"stdout:\n{ran.stdout[-6000:]}\nstderr:\n{ran.stderr[-4000:]}"
    assert ran.returncode == 0, shown
    outputs = re.split(r"^::walkthrough block \d+::$", ran.stdout, flags=re.M)[1:]
    assert len(outputs) == len(blocks), shown

    backtests, boards, paper, cleanup = outputs
    assert re.search(r"Backtest \S+: completed", backtests), shown  # farm results
    assert "SMA cross" in backtests  # farm agents list
    assert "class SmaCross(bt.Strategy):" in backtests  # agents show --source
    equity = (folder / "equity.csv").read_text().splitlines()
    assert equity[0] == "timestamp,equity,drawdown"
    assert len(equity) > 700  # 2022-01-03 to 2024-12-31, one point a bar
    ranked = [line for line in boards.splitlines() if "SMA cross" in line and "ranked" in line]
    assert ranked, shown  # the standard evaluation on real data ranks it on the backtest board
    assert '"source":"replay"' in paper
    assert '"state":"running"' in paper
    assert re.search(r"bars\s+│\s+[3-9]\d*\s", paper), shown  # watched 3 live bars
    assert "Stopping paper session" in paper
    assert re.search(r"Cancelled backtest \S+", cleanup), shown
    assert "Deleted agent" in cleanup


def _venv_problem() -> str | None:
    farm = REPO / ".venv" / "bin" / "farm"
    return None if farm.exists() else f"{farm} does not exist"
