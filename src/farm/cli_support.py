"""What every ``farm`` sub-command shares: output, API options and the API client."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from farm.client import ApiError, FarmClient

console = Console()
errors = Console(stderr=True)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FARM_URL", help="API base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="FARM_TOKEN", help="API token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print raw JSON for scripts")]
DEFAULT_URL = "http://127.0.0.1:8000"


@contextmanager
def api(url: str, token: str | None) -> Iterator[FarmClient]:
    """A client for one command; an API error exits 1 with the server's message."""
    try:
        with FarmClient(url, token) as client:
            yield client
    except ApiError as exc:
        errors.print(f"[red]error[/red] ({exc.status}): {inert(exc.message)}")
        raise typer.Exit(1) from None


def inert(text: str) -> str:
    """Untrusted text made safe to print: control characters become spaces, markup is escaped."""
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Cf") and c != "\n" else c for c in text
    )
    return escape(cleaned)


def print_json(data: Any) -> None:
    """Machine-readable output."""
    typer.echo(json.dumps(data, indent=2, default=str))


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A readable table; the first column is kept whole (ids must stay copyable)."""
    out = Table(title=title)
    for n, column in enumerate(columns):  # the first column (an id) is never cut
        out.add_column(column, no_wrap=n == 0, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else str(v) for v in row))
    console.print(out)
