"""``farm backtest``, ``farm results`` and ``farm logs``: start a backtest, follow it, cancel it,
read its metrics and what its agent printed."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    QuietOpt,
    TokenOpt,
    UrlOpt,
    api,
    console,
    errors,
    inert,
    print_json,
    respond,
    table,
)

POLL_SECONDS = 0.5
CSV_PAGE = 1000  # the API's largest page
PageLimit = Annotated[int, typer.Option(help="Page size (1 to 1000)")]
PageOffset = Annotated[int, typer.Option(help="Items to skip")]
DONE = {"completed", "failed", "cancelled"}


class _StartByDefault(typer.core.TyperGroup):
    """``farm backtest AGENT_ID ...`` means ``farm backtest start AGENT_ID ...``."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands:
            args = ["start", *args]
        return super().resolve_command(ctx, args)


backtest_app = typer.Typer(
    cls=_StartByDefault,
    help="Start a backtest (farm backtest AGENT_ID ...), or cancel one (farm backtest cancel ID).",
)


@backtest_app.command("start")
def backtest(
    agent_id: str,
    symbols: Annotated[str | None, typer.Option(help="Comma separated, e.g. SPY,AAPL")] = None,
    start: Annotated[str | None, typer.Option(help="First date, YYYY-MM-DD")] = None,
    end: Annotated[str | None, typer.Option(help="Last date, YYYY-MM-DD")] = None,
    cash: Annotated[float | None, typer.Option(help="Initial cash")] = None,
    commission: Annotated[
        float | None, typer.Option(help="Commission per trade, 0.001 = 0.1%")
    ] = None,
    slippage: Annotated[float | None, typer.Option(help="Slippage in basis points")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", help="A strategy parameter, key=value (repeatable)"),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until it ends")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Backtest one of your agents (defaults: SPY,QQQ,AAPL over 2023). With --quiet only the
    session id is printed (with --wait, once it ended; progress goes to stderr)."""
    body: dict[str, Any] = {
        "symbols": [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None,
        "startDate": start,
        "endDate": end,
        "initialCash": cash,
        "commission": commission,
        "slippageBps": slippage,
        "params": dict(_param(p) for p in param) if param else None,
    }
    body = {key: value for key, value in body.items() if value is not None}
    with api(url, token) as client:
        started = client.request("POST", f"/api/backtest/{agent_id}/start", json=body)
        session_id = started["sessionId"]
        if wait:
            result = follow(client, session_id, progress_on=progress_console(as_json, quiet))
        else:
            result = started
    if quiet:
        typer.echo(session_id)
    elif as_json:
        print_json(result)
    elif not wait:
        console.print(f"Queued backtest {inert(session_id)}")
    else:
        _print_results(result)
    if wait and result["status"] != "completed":
        raise typer.Exit(1)


@backtest_app.command("cancel")
def cancel(
    session_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a queued or running backtest (a running agent is stopped at once)."""
    respond(
        url,
        token,
        "POST",
        f"/api/backtest/{session_id}/cancel",
        as_json=as_json,
        show=lambda _: console.print(f"Cancelled backtest {session_id}"),
    )


def _param(text: str) -> tuple[str, Any]:
    """``key=value``; the value as JSON when it parses (numbers, true/false), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"expected key=value, got {text!r}", param_hint="--param")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def progress_console(as_json: bool, quiet: bool) -> Console | None:
    """Where a command that follows a backtest shows its progress: stdout, stderr when stdout
    carries only an id (--quiet), nowhere with --json."""
    if as_json:
        return None
    return errors if quiet else console


def follow(client: Any, session_id: str, *, progress_on: Console | None) -> Any:
    """Poll a backtest until it ends (a progress bar on ``progress_on``); its results."""
    path = f"/api/backtest/{session_id}/results"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    shown = progress_on or console
    with Progress(*columns, TimeElapsedColumn(), console=shown, disable=progress_on is None) as bar:
        task = bar.add_task(f"backtest {inert(session_id[:8])} queued", total=None)
        while True:
            result = client.request("GET", path)
            progress = result["progress"]
            bar.update(
                task,
                description=f"backtest {inert(session_id[:8])} {inert(result['status'])}",
                completed=progress["barsDone"],
                total=progress["barsTotal"] or None,
            )
            if result["status"] in DONE:
                return result
            time.sleep(POLL_SECONDS)


def results(
    session_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a backtest's status and metrics."""
    path = f"/api/backtest/{session_id}/results"
    respond(url, token, "GET", path, as_json=as_json, show=_print_results)


def logs(
    session_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show what a backtest's agent printed (the first and the last 32 KiB)."""

    def show(result: Any) -> None:
        if not result["totalBytes"]:
            console.print(f"The agent of backtest {inert(session_id)} printed nothing.")
            return
        head, tail = result["head"], result["tail"]
        console.print(inert(head, multiline=True), highlight=False, soft_wrap=True, end="")
        if result["omittedBytes"]:
            console.print(f"\n[dim][... {result['omittedBytes']:,} bytes not kept ...][/]")
        console.print(inert(tail, multiline=True), highlight=False, soft_wrap=True, end="")
        console.print()

    respond(url, token, "GET", f"/api/backtest/{session_id}/logs", as_json=as_json, show=show)


def evaluate(
    agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Re-run an agent's standard evaluation (e.g. after new data); rate-limited."""
    respond(
        url,
        token,
        "POST",
        f"/api/agents/{agent_id}/evaluate",
        as_json=as_json,
        show=lambda r: console.print(f"Queued standard evaluation {inert(r['sessionId'])}"),
    )


def backtests(
    agent_id: str,
    limit: PageLimit = 20,
    offset: PageOffset = 0,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List an agent's backtests, newest first."""

    def show(result: Any) -> None:
        rows = [
            (
                s["sessionId"],
                s["kind"],
                s["status"],
                s["dataSource"] or "-",
                f"{s['parameters']['startDate']} to {s['parameters']['endDate']}",
                _fmt((s.get("metrics") or {}).get("sharpeRatio")),
                s["createdAt"],
            )
            for s in result["sessions"]
        ]
        columns = ["session", "kind", "status", "data", "dates", "sharpe", "created"]
        _page_table(f"Backtests of agent {agent_id}", result, columns, rows)

    path = f"/api/agents/{agent_id}/backtests"
    _get_page(url, token, path, limit=limit, offset=offset, as_json=as_json, show=show)


def trades(
    session_id: str,
    limit: PageLimit = 100,
    offset: PageOffset = 0,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List a page of a completed backtest's closed trades."""

    def show(result: Any) -> None:
        keys = ("symbol", "size", "entryTime", "exitTime", "entryPrice", "exitPrice", "pnlNet")
        rows = [[_fmt(t[k]) for k in keys] for t in result["trades"]]
        columns = ["symbol", "size", "entry", "exit", "entry price", "exit price", "net pnl"]
        _page_table(f"Trades of backtest {session_id}", result, columns, rows)

    path = f"/api/backtest/{session_id}/trades"
    _get_page(url, token, path, limit=limit, offset=offset, as_json=as_json, show=show)


def equity(
    session_id: str,
    as_csv: Annotated[
        bool, typer.Option("--csv", help="Every point as CSV (timestamp,equity,drawdown)")
    ] = False,
    limit: PageLimit = 100,
    offset: PageOffset = 0,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a page of a completed backtest's equity curve, or all of it with --csv."""
    path = f"/api/backtest/{session_id}/equity"
    if as_csv:
        with api(url, token) as client:
            out = csv.writer(sys.stdout, lineterminator="\n")
            out.writerow(["timestamp", "equity", "drawdown"])
            start, total = 0, 1
            while start < total:
                page = client.request("GET", path, params={"limit": CSV_PAGE, "offset": start})
                out.writerows((p["timestamp"], p["equity"], p["drawdown"]) for p in page["points"])
                start, total = start + CSV_PAGE, page["total"]
        return

    def show(result: Any) -> None:
        rows = [(p["timestamp"], _fmt(p["equity"]), _fmt(p["drawdown"])) for p in result["points"]]
        columns = ["timestamp", "equity", "drawdown"]
        _page_table(f"Equity of backtest {session_id}", result, columns, rows)

    _get_page(url, token, path, limit=limit, offset=offset, as_json=as_json, show=show)


def _get_page(
    url: str,
    token: str | None,
    path: str,
    *,
    limit: int,
    offset: int,
    as_json: bool,
    show: Callable[[Any], None],
) -> None:
    """GET one page (``limit``, ``offset``) of a paged list and print it (see ``respond``)."""
    params = {"limit": limit, "offset": offset}
    respond(url, token, "GET", path, as_json=as_json, show=show, params=params)


def _page_table(title: str, page: Any, columns: list[str], rows: Sequence[Sequence[Any]]) -> None:
    """A table of one page of a list, titled with the items it shows out of the total."""
    shown = len(rows)
    first = page["offset"] + 1 if shown else page["offset"]
    table(f"{title} ({first}-{page['offset'] + shown} of {page['total']})", columns, rows)


def _print_results(result: Any) -> None:
    status = result["status"]
    progress = result["progress"]
    console.print(f"Backtest {inert(result['sessionId'])}: [bold]{inert(status)}[/]")
    console.print(
        inert(f"{progress['barsDone']}/{progress['barsTotal']} bars, data: {result['dataSource']}")
    )
    if result.get("failure"):
        failure = result["failure"]
        console.print(f"[red]{inert(failure['reason'])}[/]: {inert(failure['message'])}")
        if failure.get("traceback"):
            console.print(inert(failure["traceback"], multiline=True), highlight=False)
    if result.get("dataRange"):
        used = result["dataRange"]
        console.print(inert(f"dates used: {used['startDate']} to {used['endDate']}"))
    for warning in result.get("warnings") or []:
        console.print(f"[yellow]warning[/]: {inert(warning)}")
    metrics = result.get("metrics") or {}
    benchmark = result.get("benchmark") or {}
    if metrics:
        rows = [(k, _fmt(v), _fmt(benchmark.get(k))) for k, v in metrics.items()]
        table("Metrics", ["metric", "agent", "benchmark"], rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)
