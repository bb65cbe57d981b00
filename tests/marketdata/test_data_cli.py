"""``farm data import`` and ``farm data symbols`` through typer's runner, on FARM_HOME."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from marketdata_helpers import WriteCsv, good_rows
from typer.testing import CliRunner, Result

from farm.config import Settings
from farm.marketdata.cli import app
from farm.marketdata.store import BarStore

runner = CliRunner()


def output(result: Result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FARM_HOME", str(home))
    return home


def test_import_reports_failures_per_file_and_row_and_exits_1(
    home: Path, write_csv: WriteCsv
) -> None:
    write_csv("GOOD.csv", good_rows(4))
    bad = write_csv("BAD.csv", [*good_rows(2), "2024-07-09,5,4,6,5,5,100"])

    result = runner.invoke(app, ["import", str(bad.parent)])

    assert result.exit_code == 1
    assert "BAD.csv" in output(result)
    assert "GOOD.csv" in output(result)
    assert "row 4: high 4.0 is below low 6.0" in output(result)
    assert "Imported 1 symbols (4 bars)" in output(result)
    assert [i.symbol for i in BarStore(Settings().bars_dir).symbols()] == ["GOOD"]


def test_import_then_list_symbols_as_table_and_json(home: Path, shared_data: Path) -> None:
    result = runner.invoke(app, ["import", str(shared_data / "daily" / "JPM.csv")])
    assert result.exit_code == 0, result.output
    assert "Imported 1 symbols" in output(result)

    table = runner.invoke(app, ["symbols"])
    assert table.exit_code == 0
    assert "JPM" in output(table)
    assert "2020-07-27" in output(table)
    assert "real" in output(table)

    listed = json.loads(runner.invoke(app, ["symbols", "--json"]).output)
    assert listed["total"] == 1
    (jpm,) = listed["symbols"]
    assert jpm["symbol"] == "JPM"
    assert jpm["firstDate"] == "2020-07-27"
    assert jpm["lastDate"] == "2025-04-04"
    assert jpm["source"] == "real"
    assert jpm["bars"] > 1000


def test_synthetic_flag_labels_the_import(home: Path, write_csv: WriteCsv) -> None:
    path = write_csv("FAKE.csv", good_rows())
    assert runner.invoke(app, ["import", "--synthetic", str(path)]).exit_code == 0
    listed = json.loads(runner.invoke(app, ["symbols", "--json"]).output)
    assert listed["symbols"][0]["source"] == "synthetic"


def test_a_missing_path_exits_1_with_a_message(home: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "does not exist" in output(result)


def test_import_warns_about_gaps_past_farm_import_gap_days(
    home: Path, write_csv: WriteCsv, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_csv("GAPPY.csv", [*good_rows(3), *good_rows(2, start_day=22)])
    monkeypatch.setenv("FARM_IMPORT_GAP_DAYS", "12")
    assert "warning" not in runner.invoke(app, ["import", str(path)]).output
    monkeypatch.setenv("FARM_IMPORT_GAP_DAYS", "11")
    result = runner.invoke(app, ["import", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning GAPPY: no bars for 12 weekdays between 2024-07-03 and 2024-07-22" in output(
        result
    )
