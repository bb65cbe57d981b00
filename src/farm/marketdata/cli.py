"""``farm data``: import and list market data, working on the bar store directly."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm.config import Settings
from farm.errors import FarmError

if TYPE_CHECKING:
    from farm.marketdata.importer import ImportReport
    from farm.marketdata.store import BarStore

app = typer.Typer(
    help="Import and list market data (the bar store: FARM_BARS_URL, default FARM_HOME/bars).",
    no_args_is_help=True,
)

_MAX_FILE_ROWS = 50
_MAX_FAILURES_SHOWN = 20


def _store() -> BarStore:
    from farm.marketdata.store import open_bar_store

    return open_bar_store(Settings())


@app.command("import")
def import_command(
    path: Annotated[
        Path, typer.Argument(help="A folder of per-symbol CSVs, a CSV file or a long Parquet file")
    ],
    synthetic: Annotated[
        bool, typer.Option("--synthetic", help="Label the bars synthetic (never ranked)")
    ] = False,
) -> None:
    """Validate and import bars; exits 1 if any file or symbol was not imported."""
    from farm.marketdata.importer import import_path

    console = Console()
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("symbols"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            report = import_path(
                _store(),
                path,
                progress=advance,
                source="synthetic" if synthetic else "real",
                max_gap_days=Settings().import_gap_days,
            )
        except FarmError as exc:
            Console(stderr=True).print(f"[red]error[/red]: {exc.message}")
            raise typer.Exit(1) from None
    _print_report(console, report)
    if report.imported:
        queued = _requeue_standard(report)
        if queued:
            console.print(
                f"The standard universe changed: {queued} standard evaluations queued "
                "(they run when the server's workers are up)."
            )
    if not report.ok:
        raise typer.Exit(1)


def _requeue_standard(report: ImportReport) -> int:
    """Queue every agent's standard evaluation again when the import changed a standard symbol."""
    from farm.context import Context

    context = Context.build(Settings())
    try:
        context.db.migrate()
        changed = [str(r.symbol) for r in report.imported]
        return context.backtests.requeue_standard_evaluations(changed)
    finally:
        context.close()


def _print_report(console: Console, report: ImportReport) -> None:
    by_file: dict[Path, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in report.reports:
        counts = by_file[r.path]
        counts[("imported", "unchanged", "failed").index(r.status)] += 1
        counts[3] += r.bars if r.status != "failed" else 0
    table = Table(title="Import")
    for name in ("file", "imported", "unchanged", "failed", "bars"):
        table.add_column(name, justify="left" if name == "file" else "right")
    shown = [p for p, c in by_file.items() if c[2]] if len(by_file) > _MAX_FILE_ROWS else by_file
    for path in shown:
        imported, unchanged, failed, bars = by_file[path]
        style = "red" if failed else None
        table.add_row(
            path.name, str(imported), str(unchanged), str(failed), f"{bars:,}", style=style
        )
    if len(shown) < len(by_file):
        table.caption = f"{len(by_file) - len(shown)} more files imported without problems"
    console.print(table)
    warned = [r for r in report.imported if r.warnings]
    for symbol in warned[:_MAX_FAILURES_SHOWN]:
        for warning in symbol.warnings:
            console.print(f"warning {symbol.symbol}: {warning}", markup=False)
    if len(warned) > _MAX_FAILURES_SHOWN:
        console.print(f"... and {len(warned) - _MAX_FAILURES_SHOWN} more symbols with gaps")
    for failure in report.failed[:_MAX_FAILURES_SHOWN]:
        what = f"{failure.path.name} {failure.symbol or ''}".strip()
        console.print(f"[red]not imported[/red] {what}: {failure.problem_count} problem(s)")
        for problem in failure.problems:
            console.print(f"  {problem}", markup=False)
        if failure.problem_count > len(failure.problems):
            console.print(f"  ... and {failure.problem_count - len(failure.problems)} more")
    if len(report.failed) > _MAX_FAILURES_SHOWN:
        console.print(f"... and {len(report.failed) - _MAX_FAILURES_SHOWN} more failed symbols")
    console.print(
        f"Imported {len(report.imported)} symbols ({report.bars_imported:,} bars) "
        f"in {report.seconds:.1f}s; {len(report.unchanged)} unchanged, "
        f"{len(report.failed)} failed."
    )


@app.command("symbols")
def symbols_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print raw JSON for scripts")] = False,
) -> None:
    """List stored symbols: first and last date, bars, source."""
    from farm.marketdata.schemas import SymbolList, SymbolOut

    symbols = [SymbolOut.of(info) for info in _store().symbols()]
    if as_json:
        body = SymbolList(symbols=symbols, total=len(symbols))
        typer.echo(body.model_dump_json(by_alias=True, indent=2))
        return
    table = Table(title=f"{len(symbols)} symbols")
    for name in ("symbol", "first", "last", "bars", "source"):
        table.add_column(name, justify="right" if name == "bars" else "left")
    for s in symbols:
        style = "yellow" if s.source == "synthetic" else None
        first, last = s.first_date.isoformat(), s.last_date.isoformat()
        table.add_row(s.symbol, first, last, f"{s.bars:,}", s.source, style=style)
    Console().print(table)
