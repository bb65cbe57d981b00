"""The ``farm`` command: run the platform, manage users, and use the API from a terminal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from farm.backtest.cli import (
    backtest_app,
    backtests,
    equity,
    evaluate,
    follow,
    logs,
    progress_console,
    results,
    trades,
)
from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    QuietOpt,
    TokenOpt,
    UrlOpt,
    api,
    client_url,
    console,
    errors,
    inert,
    numbered_title,
    print_json,
    respond,
    table,
)
from farm.config import Settings
from farm.errors import FarmError
from farm.fmel.cli import decisions, explain
from farm.leaderboard.cli import leaderboard
from farm.marketdata.cli import app as data_app
from farm.papertrading.cli import app as accounts_app
from farm.papertrading.paper_cli import app as paper_app

app = typer.Typer(help="The Farm: backtest, paper trade, explain and rank trading agents.")
T = TypeVar("T")

users_app = typer.Typer(
    help="Manage users and API tokens (directly on the configured database, no server needed)."
)
worker_app = typer.Typer(
    help="Run workers in this process, without the API (docs/architecture.md)."
)
app.add_typer(worker_app, name="worker")
agents_app = typer.Typer(help="Submit, list, show and delete agents (through the API).")
app.add_typer(users_app, name="users")
app.add_typer(agents_app, name="agents")
app.add_typer(data_app, name="data")
app.add_typer(accounts_app, name="accounts")
app.add_typer(paper_app, name="paper")
app.add_typer(backtest_app, name="backtest")
app.command()(results)
app.command()(logs)
app.command()(decisions)
app.command()(explain)
for _command in (leaderboard, backtests, trades, equity, evaluate):  # API parity (issue 12)
    app.command()(_command)


HostOption = Annotated[str | None, typer.Option(help="Bind address (FARM_HOST)")]
PortOption = Annotated[int | None, typer.Option(help="Port (FARM_PORT)")]


@app.command()
def up(host: HostOption = None, port: PortOption = None) -> None:
    """Serve every service until Ctrl-C (migrates, and creates a demo user on first start)."""
    from farm.context import Context

    settings = Settings()
    context = Context.build(settings)
    context.migrate()  # once: the demo user needs the tables; start() will not migrate again
    host, port = host or settings.host, port or settings.port
    _ensure_demo_user(context, client_url(host, port))
    _run(context, host, port, services=None)


@app.command()
def serve(
    services: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated services to serve (default all): agents, backtest, data, "
            "fmel, leaderboard, paper-trading, web"
        ),
    ] = None,
    host: HostOption = None,
    port: PortOption = None,
) -> None:
    """Serve the HTTP API only: no workers, no data import, no migrations (`farm migrate`)."""
    from farm.context import Context

    chosen = [s.strip() for s in services.split(",") if s.strip()] if services else None
    _run(Context.build(Settings(), role="api"), host, port, services=chosen)


@worker_app.command("backtest")
def worker_backtest(host: HostOption = None, port: PortOption = None) -> None:
    """Run FARM_BACKTEST_WORKERS backtests at a time from the shared queue until SIGTERM, which
    hands running ones back to the queue. Serves /health and /metrics on PORT."""
    from farm.context import Context

    _run(Context.build(Settings(), role="backtest"), host, port, services=[])


@worker_app.command("paper")
def worker_paper(host: HostOption = None, port: PortOption = None) -> None:
    """Run a paper runtime until SIGTERM, which hands its sessions back (another paper worker
    resumes them). It claims up to FARM_PAPER_MAX_SESSIONS_PER_WORKER sessions; on the
    in-process bus it runs the live feed too (with FARM_BUS=redis, `farm feed` does). Serves
    /health and /metrics on PORT."""
    from farm.context import Context

    _run(Context.build(Settings(), role="paper"), host, port, services=[])


@app.command()
def feed(host: HostOption = None, port: PortOption = None) -> None:
    """Run the live feed (one per platform) until SIGTERM, fanning its steps out over Redis
    Streams to every paper worker (FARM_BUS=redis). Serves /health and /metrics on PORT."""
    from farm.context import Context

    settings = Settings()
    if settings.bus != "redis":
        errors.print("[red]error[/red]: `farm feed` needs FARM_BUS=redis (`farm up` runs it)")
        raise typer.Exit(2)
    _run(Context.build(settings, role="feed"), host, port, services=[])


@app.command()
def migrate() -> None:
    """Apply the database migrations (before starting `farm serve` and the workers)."""
    from farm.storage.db import Database

    Database(Settings().resolved_database_url).migrate()
    console.print("the database is up to date")


def _run(context: Any, host: str | None, port: int | None, services: list[str] | None) -> None:
    """Serve ``services`` (an empty list: only /health and /metrics) over ``context`` until
    SIGINT or SIGTERM, then stop its work cleanly (the app's lifespan closes the context)."""
    import uvicorn

    from farm.app import create_app
    from farm.logs import configure

    settings = context.settings
    configure(settings.log_format)
    uvicorn.run(
        create_app(settings, services=services, context=context),
        host=host or settings.host,
        port=port or settings.port,
        proxy_headers=True,  # the client's address and scheme as the proxies named here saw them
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_level="info",
        log_config=None,  # uvicorn's lines go through the root logger (FARM_LOG_FORMAT)
    )


def _ensure_demo_user(context: Any, url: str) -> None:
    from farm.users.service import count_users, create_user

    with context.db.transaction() as session:
        if count_users(session):
            return
        user, token = create_user(session, "demo")
    console.print(
        f"[bold green]Created user {user.name!r}.[/] Point the CLI at this server with its "
        f"API token (shown once, keep it; `farm users token {user.name}` issues another):\n"
        f"  export FARM_URL={url}\n"
        f"  export FARM_TOKEN={token}"
    )


@users_app.command("create")
def users_create(name: str) -> None:
    """Create a user and print its API token (shown once)."""
    from farm.users.service import create_user

    user, token = _on_home(lambda s: create_user(s, name))
    console.print(f"Created user {user.name!r} ({user.id}). API token (shown once):")
    typer.echo(token)


@users_app.command("token")
def users_token(
    name: str,
    revoke_others: Annotated[
        bool, typer.Option("--revoke-others", help="Revoke every older token of the user")
    ] = False,
) -> None:
    """Issue a new API token for user NAME and print it (shown once)."""
    from farm.users.service import reissue_token

    user, token, revoked = _on_home(lambda s: reissue_token(s, name, revoke_others=revoke_others))
    note = f"; {revoked} older token(s) revoked" if revoke_others else ""
    console.print(f"New API token for {user.name!r} (shown once{note}):")
    typer.echo(token)


@users_app.command("revoke")
def users_revoke(name: str) -> None:
    """Revoke every API token of user NAME (`farm users token NAME` issues a new one)."""
    from farm.users.service import revoke_tokens, user_named

    revoked = _on_home(lambda s: revoke_tokens(s, user_named(s, name)))
    console.print(f"Revoked {revoked} API token(s) of {name!r}.")


def _on_home(work: Callable[[Any], T]) -> T:
    """Run ``work(session)`` in one transaction on FARM_HOME's database (migrated first); a
    FarmError exits 1 with its message."""
    from farm.context import Context

    context = Context.build(Settings())
    try:
        context.db.migrate()
        with context.db.transaction() as session:
            return work(session)
    except FarmError as exc:
        errors.print(f"[red]error[/red]: {inert(exc.message)}")
        raise typer.Exit(1) from None
    finally:
        context.close()


@agents_app.command("submit")
def agents_submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    name: Annotated[str, typer.Option("--name", help="Agent name (1-100 chars)")],
    description: Annotated[str, typer.Option(help="Up to 500 chars")] = "",
    tags: Annotated[str, typer.Option(help="Comma separated")] = "",
    wait: Annotated[
        bool, typer.Option("--wait", help="Follow its standard evaluation until it ends")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Submit an agent file (--quiet: print only its id)."""
    with api(url, token) as client:
        result = client.submit_agent(file, name, description, tags)
        agent_id = result["agentId"]
        if not (quiet or as_json):
            console.print(f"Submitted agent [bold]{inert(agent_id)}[/]")
        evaluation = None
        if wait:
            evaluation = _standard_evaluation(client, agent_id, progress_console(as_json, quiet))
    if quiet:
        typer.echo(agent_id)
    elif as_json:
        print_json(result)
    if evaluation is not None and evaluation["status"] != "completed":
        failure = evaluation.get("failure") or {}
        errors.print(
            f"[red]its standard evaluation {inert(evaluation['status'])}[/]: "
            f"{inert(failure.get('message', ''))} (farm results {inert(evaluation['sessionId'])})"
        )
        raise typer.Exit(1)


def _standard_evaluation(client: Any, agent_id: str, progress_on: Console | None) -> Any:
    """Wait for the standard evaluation queued by the agent's submission to end; its results."""
    sessions = client.request("GET", f"/api/agents/{agent_id}/backtests")["sessions"]
    standard = [s["sessionId"] for s in sessions if s["kind"] == "standard"]
    if not standard:
        errors.print("[red]no standard evaluation was queued[/] (no stored bars?)")
        raise typer.Exit(1)
    return follow(client, standard[0], progress_on=progress_on)


@agents_app.command("list")
def agents_list(
    page: int = 1,
    limit: int = 20,
    status: Annotated[str | None, typer.Option(help="active or paper_trading")] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your agents, newest first."""
    params: dict[str, Any] = {"page": page, "limit": limit}
    if status:
        params["status"] = status
    respond(
        url, token, "GET", "/api/agents/list", as_json=as_json, show=_print_agents, params=params
    )


def _print_agents(result: Any) -> None:
    table(
        numbered_title("Agents", result["pagination"]),
        ["id", "name", "status", "tags", "created"],
        [
            (a["agentId"], a["agentName"], a["status"], ",".join(a["tags"]), a["createdAt"])
            for a in result["agents"]
        ],
    )


@agents_app.command("show")
def agents_show(
    agent_id: str,
    source: Annotated[bool, typer.Option("--source", help="Also print the code")] = False,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one agent."""
    params = {"include": "source"} if source else {}

    def show(agent: Any) -> None:
        code = agent.pop("source", None)
        table(f"Agent {agent_id}", ["field", "value"], [(k, v) for k, v in agent.items()])
        if code:
            console.print(inert(code, multiline=True), highlight=False)

    respond(url, token, "GET", f"/api/agents/{agent_id}", as_json=as_json, show=show, params=params)


@agents_app.command("delete")
def agents_delete(
    agent_id: str, url: UrlOpt = DEFAULT_URL, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Delete one of your agents."""
    respond(
        url,
        token,
        "DELETE",
        f"/api/agents/{agent_id}",
        as_json=as_json,
        show=lambda _: console.print(f"Deleted agent {inert(agent_id)}"),
    )


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it")] = Path("docs/openapi.json"),
) -> None:
    """Write the API's OpenAPI 3 document (the committed contract)."""
    from farm.app import create_app

    output.write_text(openapi_json(create_app))
    console.print(f"wrote {output}")


def openapi_json(factory: Callable[[], Any]) -> str:
    """The OpenAPI document of the app, as stable, sorted JSON."""
    return json.dumps(factory().openapi(), indent=2, sort_keys=True) + "\n"
