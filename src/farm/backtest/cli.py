"""``farm backtest``, ``farm results`` and ``farm logs``: start a backtest, follow it, cancel it,
read its metrics and what its agent printed."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    api,
    console,
    inert,
    print_json,
    table,
)

POLL_SECONDS = 0.5
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
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until it ends")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Backtest one of your agents (defaults: SPY,QQQ,AAPL over 2023)."""
    body: dict[str, Any] = {}
    if symbols:
        body["symbols"] = [s.strip() for s in symbols.split(",") if s.strip()]
    if start:
        body["startDate"] = start
    if end:
        body["endDate"] = end
    if cash is not None:
        body["initialCash"] = cash
    with api(url, token) as client:
        started = client.request("POST", f"/api/backtest/{agent_id}/start", json=body)
        session_id = started["sessionId"]
        if not wait:
            if as_json:
                print_json(started)
            else:
                console.print(f"Queued backtest {inert(session_id)}")
            return
        result = _follow(client, session_id, quiet=as_json)
    if as_json:
        print_json(result)
    else:
        _print_results(result)
    if result["status"] != "completed":
        raise typer.Exit(1)


@backtest_app.command("cancel")
def cancel(
    session_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel a queued or running backtest (a running agent is stopped at once)."""
    with api(url, token) as client:
        result = client.request("POST", f"/api/backtest/{session_id}/cancel")
    if as_json:
        print_json(result)
    else:
        console.print(f"Cancelled backtest {session_id}")


def _follow(client: Any, session_id: str, *, quiet: bool) -> Any:
    path = f"/api/backtest/{session_id}/results"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=quiet) as bar:
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
    with api(url, token) as client:
        result = client.request("GET", f"/api/backtest/{session_id}/results")
    if as_json:
        print_json(result)
    else:
        _print_results(result)


def logs(
    session_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show what a backtest's agent printed (the first and the last 32 KiB)."""
    with api(url, token) as client:
        result = client.request("GET", f"/api/backtest/{session_id}/logs")
    if as_json:
        print_json(result)
        return
    if not result["totalBytes"]:
        console.print(f"The agent of backtest {inert(session_id)} printed nothing.")
        return
    console.print(inert(result["head"], multiline=True), highlight=False, soft_wrap=True, end="")
    if result["omittedBytes"]:
        console.print(f"\n[dim][... {result['omittedBytes']:,} bytes not kept ...][/]")
    console.print(inert(result["tail"], multiline=True), highlight=False, soft_wrap=True, end="")
    console.print()


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
