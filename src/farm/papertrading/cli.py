"""``farm accounts``: create, list, show, fund and reset paper accounts (through the API).

Every string that comes from the API is printed inertly (control characters replaced, Rich
markup escaped): account names are chosen by users.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    QuietOpt,
    TokenOpt,
    UrlOpt,
    console,
    inert,
    numbered_title,
    print_id,
    respond,
    table,
)

app = typer.Typer(
    help="Paper-trading accounts: create, list, show, fund, reset (through the API).",
    no_args_is_help=True,
)


@app.command("create")
def create(
    name: Annotated[str | None, typer.Option(help="1 to 100 characters")] = None,
    cash: Annotated[
        str | None,
        typer.Option(help="Initial cash, to the cent: 25000 or 2500.50 (default 100000)"),
    ] = None,
    broker: Annotated[
        str, typer.Option(help="simulated, or alpaca (bound to your Alpaca paper key pair)")
    ] = "simulated",
    key_id: Annotated[
        str | None, typer.Option(help="Alpaca paper key id (with --broker alpaca)")
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option(
            envvar="ALPACA_SECRET_KEY",
            show_envvar=True,
            help="Alpaca paper secret key; better from the environment or the hidden prompt "
            "than on the command line",
        ),
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Open a paper account: simulated, or bound to an Alpaca paper key pair (--quiet: print
    only its id). The Alpaca secret is asked for, hidden, when neither --secret-key nor
    ALPACA_SECRET_KEY gives it."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if cash is not None:
        body["initialCash"] = cash  # sent as written: the API parses it exactly
    if broker != "simulated":
        body["broker"] = broker
    if broker == "alpaca":
        if key_id is None:
            raise typer.BadParameter("--key-id is required with --broker alpaca")
        if secret_key is None:
            secret_key = typer.prompt("Alpaca secret key", hide_input=True)
        body["keyId"] = key_id
        body["secretKey"] = secret_key
    show = print_id("accountId") if quiet else _print_created
    respond(
        url, token, "POST", "/api/accounts", as_json=as_json and not quiet, show=show, json=body
    )


def _print_created(account: Any) -> None:
    console.print(
        f"Created account [bold]{inert(account['accountId'])}[/] "
        f"({inert(account['name'])}) with {money(account['cash'])}"
    )


@app.command("list")
def list_accounts(
    page: int = 1,
    limit: int = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your accounts, newest first."""
    params = {"page": page, "limit": limit}
    respond(
        url, token, "GET", "/api/accounts", as_json=as_json, show=_print_accounts, params=params
    )


def _print_accounts(result: Any) -> None:
    table(
        numbered_title("Accounts", result["pagination"]),
        ["id", "name", "broker", "cash", "equity", "created"],
        [
            (
                a["accountId"],
                a["name"],
                a["broker"],
                money(a["cash"]),
                money(a["equity"]),
                a["createdAt"],
            )
            for a in result["accounts"]
        ],
    )


@app.command("show")
def show(
    account_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show an account: cash, equity, positions, open orders and the session trading it."""
    respond(url, token, "GET", f"/api/accounts/{account_id}", as_json=as_json, show=print_account)


@app.command("fund")
def fund(
    account_id: str,
    amount: Annotated[str, typer.Argument(help="Cash to add, in whole cents, e.g. 2500.50")],
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add cash to an account (refused while a paper session trades it)."""
    respond(
        url,
        token,
        "POST",
        f"/api/accounts/{account_id}/fund",
        as_json=as_json,
        show=lambda account: console.print(f"Cash is now {money(account['cash'])}"),
        json={"amount": amount},
    )


@app.command("reset")
def reset(
    account_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put an account back to its initial cash with no positions or orders."""
    if not yes:
        typer.confirm(f"Reset account {account_id}? Positions and orders are dropped", abort=True)
    respond(
        url,
        token,
        "POST",
        f"/api/accounts/{account_id}/reset",
        as_json=as_json,
        show=lambda account: console.print(f"Reset: cash is {money(account['cash'])}"),
    )


def print_account(account: Any) -> None:
    """An account's numbers, positions, open orders and session, as tables."""
    session = account["session"]
    rows = [
        ("id", account["accountId"]),
        ("name", account["name"]),
        ("broker", account["broker"]),
        ("initial cash", money(account["initialCash"])),
        ("funded", money(account["funded"])),
        ("cash", money(account["cash"])),
        ("equity", money(account["equity"])),
        ("total P&L", money(account["totalPnl"])),
        ("session", session["sessionId"] if session else "none"),
        ("created", account["createdAt"]),
    ]
    table("Account", ["field", "value"], rows)
    if account["positions"]:
        table(
            "Positions",
            ["symbol", "size", "average price", "last price", "market value", "unrealized P&L"],
            [
                (
                    p["symbol"],
                    p["size"],
                    p["averagePrice"],
                    p["lastPrice"],
                    money(p["marketValue"]),
                    money(p["unrealizedPnl"]),
                )
                for p in account["positions"]
            ],
        )
    if account["openOrders"]:
        table(
            "Open orders",
            ["client order id", "symbol", "size", "type", "price", "status", "filled"],
            [
                (
                    o["clientOrderId"],
                    o["symbol"],
                    o["size"],
                    o["type"],
                    o["price"] if o["price"] is not None else o["limitPrice"],
                    o["status"],
                    o["filled"],
                )
                for o in account["openOrders"]
            ],
        )


def money(value: float) -> str:
    """``$1,234.56`` (negative amounts as ``-$1,234.56``)."""
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"
