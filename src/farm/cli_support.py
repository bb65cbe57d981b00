"""What every ``farm`` sub-command shares: output, API options and the API client."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from farm.client import ApiError, FarmClient

console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)

UrlOpt = Annotated[str, typer.Option("--url", envvar="FARM_URL", help="API base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="FARM_TOKEN", help="API token")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print raw JSON for scripts")]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="Print only the id, for scripts: ID=$(farm ... -q)"),
]


def client_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches a server bound to ``host:port`` at (a
    wildcard bind address is reached on the loopback)."""
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 - recognising a bind address, not binding
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _default_url() -> str:
    """Without FARM_URL: the server `farm up` would start here (FARM_HOST, FARM_PORT)."""
    host = os.environ.get("FARM_HOST", "127.0.0.1")
    port = os.environ.get("FARM_PORT", "8000")
    return client_url(host, int(port)) if port.isdigit() else "http://127.0.0.1:8000"


DEFAULT_URL = _default_url()
PIPED_WIDTH = 200


@contextmanager
def api(url: str, token: str | None) -> Iterator[FarmClient]:
    """A client for one command; an API error exits 1 with the server's message."""
    try:
        with FarmClient(url, token) as client:
            yield client
    except ApiError as exc:
        errors.print(f"[red]error[/red] ({exc.status}): {inert(exc.message)}")
        raise typer.Exit(1) from None


def respond(
    url: str,
    token: str | None,
    method: str,
    path: str,
    *,
    as_json: bool,
    show: Callable[[Any], object],
    **request: Any,
) -> None:
    """One API request for a command (``request`` goes to :meth:`FarmClient.request`, e.g.
    ``params=`` or ``json=``): its JSON body printed as is with ``--json``, else rendered by
    ``show``; an API error exits 1 with the server's message (see :func:`api`)."""
    with api(url, token) as client:
        result = client.request(method, path, **request)
    if as_json:
        print_json(result)
    else:
        show(result)


def print_id(key: str, *, each_of: str | None = None) -> Callable[[Any], None]:
    """For --quiet: print an answer's ``key`` (``print_id("accountId")``), or that of each item
    of its list ``each_of``, one a line (``print_id("decisionId", each_of="decisions")``)."""

    def show(result: Any) -> None:
        for item in result[each_of] if each_of else [result]:
            typer.echo(item[key])

    return show


def print_json(data: Any) -> None:
    """Machine-readable output."""
    typer.echo(json.dumps(data, indent=2, default=str))


def numbered_title(title: str, pagination: Any) -> str:
    """A table title for one page of a numbered list (the API's ``pagination`` object)."""
    p = pagination
    return f"{title} (page {p['page']} of {max(p['pages'], 1)}, {p['total']} in all)"


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a readable table; the first column is kept whole (ids must stay copyable)."""
    out = make_table(title, columns, rows)
    # Piped (not a terminal), Rich would fold every cell to 80 columns: lay the table out wide.
    wide = max(console.width, PIPED_WIDTH)
    (console if console.is_terminal else Console(emoji=False, width=wide)).print(out)


def make_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    """The table :func:`table` prints, every cell inert (e.g. for a live view)."""
    out = Table(title=inert(title))
    for n, column in enumerate(columns):  # the first column (an id) is never cut
        out.add_column(column, no_wrap=n == 0, overflow="fold")
    for row in rows:
        out.add_row(*("" if v is None else inert(v) for v in row))
    return out


# ESC and C1 sequences (CSI ... final byte, OSC/DCS/APC/PM ... BEL or ST, and two-byte ones).
_ESCAPES = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]P^_X]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def inert(value: object, *, multiline: bool = False) -> str:
    """Text from the API (agent names, reasoning, failure messages...) made inert for a terminal
    printed with Rich markup: escape sequences removed, every other control or invisible
    formatting character (``\\r``, bidirectional overrides, NUL...) shown as a space, line
    breaks kept only when ``multiline``, and Rich markup escaped (``[/]`` prints as itself)."""
    text = _ESCAPES.sub("", str(value))
    text = "".join(
        c if (multiline and c == "\n") or unicodedata.category(c) not in _INVISIBLE else " "
        for c in text
    )
    return escape(text)
