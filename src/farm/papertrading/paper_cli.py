"""``farm paper``: start, watch, show and stop an agent's paper session (through the API).

Every string that comes from the API is printed inertly: failure messages and tracebacks come
from agents.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    TokenOpt,
    UrlOpt,
    api,
    console,
    inert,
    make_table,
    print_json,
    respond,
)
from farm.papertrading.cli import money

app = typer.Typer(
    help="Paper trading: run an agent on the live feed with a paper account (through the API).",
    no_args_is_help=True,
)

ENDED = {"stopped", "failed", "not_running"}
IntervalOpt = Annotated[float, typer.Option("--interval", help="Seconds between refreshes")]
BarsOpt = Annotated[
    int | None,
    typer.Option("--bars", min=1, help="Stop watching once the session took this many live bars"),
]


@app.command("start")
def start(
    agent_id: str,
    symbols: Annotated[str, typer.Option(help="Comma separated, e.g. SPY,AAPL")],
    account: Annotated[
        str | None, typer.Option("--account", help="Default: a new $100,000 account")
    ] = None,
    warmup: Annotated[int, typer.Option("--warmup", help="Stored bars before live ones")] = 0,
    commission: Annotated[float, typer.Option(help="Fraction of traded value")] = 0.0,
    watch_: Annotated[bool, typer.Option("--watch", help="Then show the live view")] = False,
    interval: IntervalOpt = 1.0,
    bars: BarsOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an agent on the live feed."""
    body: dict[str, Any] = {
        "agentId": agent_id,
        "symbols": [s.strip() for s in symbols.split(",") if s.strip()],
        "warmupBars": warmup,
        "commission": commission,
    }
    if account is not None:
        body["accountId"] = account
    with api(url, token) as client:
        started = client.request("POST", "/api/paper-trading/start", json=body)
    if as_json and not watch_:
        print_json(started)
        return
    console.print(
        f"Started paper session [bold]{inert(started['sessionId'])}[/] on account "
        f"{inert(started['accountId'])} ({inert(started['status'])})"
    )
    if watch_:
        watch(agent_id, interval=interval, bars=bars, url=url, token=token)


@app.command("status")
def status(
    agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """The agent's latest session: status, bars, account, positions, orders, failure."""
    path = f"/api/paper-trading/status/{agent_id}"
    respond(url, token, "GET", path, as_json=as_json, show=_print_status)


def _print_status(result: Any) -> None:
    console.print(view(result))
    failure = result.get("failure")
    if failure and failure.get("traceback"):
        console.print(inert(failure["traceback"], multiline=True), highlight=False)


@app.command("stop")
def stop(
    agent_id: str,
    liquidate: Annotated[
        bool, typer.Option("--liquidate", help="Close the positions at the next bar")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop the agent's session: cancel its open orders (and close its positions)."""
    respond(
        url,
        token,
        "POST",
        "/api/paper-trading/stop",
        as_json=as_json,
        show=lambda r: console.print(f"Stopping paper session {inert(r['sessionId'])}"),
        json={"agentId": agent_id, "liquidate": liquidate},
    )


@app.command("watch")
def watch(
    agent_id: str,
    interval: IntervalOpt = 1.0,
    bars: BarsOpt = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
) -> None:
    """A live view of the session: last bar, positions, orders and P&L, until it ends (or,
    with --bars N, until it took N live bars; the session goes on)."""
    with api(url, token) as client, Live(console=console, auto_refresh=False) as live:
        while True:
            result = client.request("GET", f"/api/paper-trading/status/{agent_id}")
            live.update(view(result), refresh=True)
            if result["status"] in ENDED:
                return
            if bars is not None and result.get("barsProcessed", 0) >= bars:
                return
            time.sleep(interval)


def view(result: Any) -> Group:
    """The status as tables: the session, its positions and its open orders."""
    failure = result.get("failure")
    rows = [
        ("agent", result["agentId"]),
        ("session", result.get("sessionId") or "none"),
        ("status", result["status"]),
        ("account", result.get("accountId") or ""),
        ("symbols", ",".join(result.get("symbols") or [])),
        ("last bar", result.get("lastBarTime") or ""),
        ("bars", result.get("barsProcessed", 0)),
        ("missing at last bar", ",".join(result.get("missingAtLastStep") or []) or "none"),
    ]
    if result.get("equity") is not None:
        rows += [
            ("cash", money(result["cash"])),
            ("equity", money(result["equity"])),
            ("total P&L", money(result["totalPnl"])),
            ("total return", f"{result['totalReturn']:.2%}"),
        ]
    if failure:
        rows.append(("failure", f"{failure['reason']}: {failure['message']}"))
    parts: list[Table] = [make_table("Paper session", ["field", "value"], rows)]
    if result.get("positions"):
        parts.append(
            make_table(
                "Positions",
                ["symbol", "size", "average price", "last price", "unrealized P&L"],
                [
                    (
                        p["symbol"],
                        p["size"],
                        p["averagePrice"],
                        p["lastPrice"],
                        money(p["unrealizedPnl"]),
                    )
                    for p in result["positions"]
                ],
            )
        )
    if result.get("openOrders"):
        parts.append(
            make_table(
                "Open orders",
                ["client order id", "symbol", "size", "type", "status"],
                [
                    (o["clientOrderId"], o["symbol"], o["size"], o["type"], o["status"])
                    for o in result["openOrders"]
                ],
            )
        )
    return Group(*parts)
