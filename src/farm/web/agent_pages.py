"""My agents: upload (errors inline, with line and column), list, an agent's page with its
highlighted code, its backtests and paper sessions, start a backtest, delete."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import HTMLResponse
from markupsafe import Markup
from pydantic import ValidationError
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from farm.agents.service import Submission
from farm.backtest.schemas import DEFAULT_SYMBOLS, BacktestRequest
from farm.context import Context
from farm.deps import ContextDep
from farm.errors import Conflict, InvalidInput
from farm.papertrading.dependencies import AccountsDep, PaperDep
from farm.papertrading.service import AccountService
from farm.papertrading.sessions import PaperService
from farm.schemas import MAX_PAGE
from farm.storage.models import User
from farm.web.auth import CSRF_FIELD, Csrf, PageUser, check_csrf
from farm.web.render import PageRoute, page, see_other

router = APIRouter(route_class=PageRoute, include_in_schema=False)

AGENTS_PER_PAGE = 20
BACKTESTS_SHOWN = 50
FORM_FIELDS = ("start_date", "end_date", "initial_cash", "commission")


@router.get("/agents", response_class=HTMLResponse)
def agents(
    request: Request,
    context: ContextDep,
    user: PageUser,
    number: Annotated[int, Query(alias="page", ge=1, le=MAX_PAGE)] = 1,
) -> Response:
    """The user's agents and the upload form."""
    return _agents_page(request, context, user, number)


def _agents_page(
    request: Request,
    context: Context,
    user: User,
    page_number: int = 1,
    status_code: int = 200,
    **form: Any,
) -> HTMLResponse:
    listing = context.agents.list(user, page=page_number, limit=AGENTS_PER_PAGE, status=None)
    return page(request, "agents.html", status_code, user=user, listing=listing, **form)


@router.post("/agents", response_class=HTMLResponse)
async def upload(
    request: Request,
    context: ContextDep,
    user: PageUser,
    file: Annotated[UploadFile, File()],
    name: Annotated[str, Form(max_length=1000)] = "",
    description: Annotated[str, Form(max_length=5000)] = "",
    tags: Annotated[str, Form(max_length=2000)] = "",
    csrf: Csrf = None,
) -> Response:
    """Upload an agent; a file that does not validate comes back with the reason inline."""
    check_csrf(request, csrf)
    data = await file.read(context.settings.max_agent_bytes + 1)
    try:
        agent_id = await context.agents.submit(
            user, Submission(name, description, tags, file.filename or "", data)
        )
    except (InvalidInput, Conflict) as exc:
        return _agents_page(
            request,
            context,
            user,
            status_code=exc.status_code,
            error=exc.message,
            error_line=_error_line(data, exc.extra.get("line"), exc.extra.get("column")),
            name=name,
            description=description,
            tags=tags,
        )
    return see_other(f"/agents/{agent_id}")


def _error_line(data: bytes, line: object, column: object) -> dict[str, Any] | None:
    """The uploaded line an error points at, with its number and column (for a caret)."""
    if not isinstance(line, int) or line < 1:
        return None
    lines = data.decode("utf-8", "replace").splitlines()
    if line > len(lines):
        return None
    col = column if isinstance(column, int) and column >= 1 else None
    return {"number": line, "column": col, "text": lines[line - 1][:300]}


@router.get("/agents/{agent_id}", response_class=HTMLResponse)
def agent(
    request: Request,
    context: ContextDep,
    paper: PaperDep,
    accounts: AccountsDep,
    user: PageUser,
    agent_id: str,
) -> Response:
    """One agent: code, backtests, paper sessions and the start-backtest form."""
    return _agent_page(request, context, paper, accounts, user, agent_id)


def _agent_page(
    request: Request,
    context: Context,
    paper: PaperService,
    accounts: AccountService,
    user: User,
    agent_id: str,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    shown = context.agents.show(user, agent_id, include_source=True)
    code = Markup(  # noqa: S704 - Pygments escapes the code it highlights
        highlight(
            shown.source or "", PythonLexer(), HtmlFormatter(linenos="table", cssclass="code")
        )
    )
    backtests = context.backtests.list_for_agent(user, agent_id, limit=BACKTESTS_SHOWN, offset=0)
    symbols = [info.symbol for info in context.bars.symbols()]
    form = extra.pop("form", None) or _default_form(symbols)
    return page(
        request,
        "agent.html",
        status_code,
        user=user,
        agent=shown,
        code=code,
        backtests=backtests,
        paper=paper.status(user, agent_id),
        accounts=accounts.list(user, page=1, limit=100).accounts,
        symbols=symbols,
        form=form,
        **extra,
    )


def _default_form(symbols: list[str]) -> dict[str, Any]:
    request = BacktestRequest()
    chosen = [s for s in DEFAULT_SYMBOLS if s in symbols] or symbols[:1]
    return {
        "symbols": chosen,
        "start_date": request.start_date.isoformat(),
        "end_date": request.end_date.isoformat(),
        "initial_cash": f"{request.initial_cash:.2f}",
        "commission": f"{request.commission}",
    }


@router.post("/agents/{agent_id}/backtests", response_class=HTMLResponse)
async def start_backtest(
    request: Request,
    context: ContextDep,
    paper: PaperDep,
    accounts: AccountsDep,
    user: PageUser,
    agent_id: str,
) -> Response:
    """Queue a backtest from the form; a mistake comes back inline."""
    submitted = await request.form()
    check_csrf(request, _text(submitted.get(CSRF_FIELD)))
    symbols = [_text(s) for s in submitted.getlist("symbols")][:500]
    fields = {name: _text(submitted.get(name)) for name in FORM_FIELDS}
    form: dict[str, Any] = {"symbols": symbols, **fields}
    try:
        wanted = BacktestRequest(
            symbols=symbols,
            start_date=date.fromisoformat(fields["start_date"]),
            end_date=date.fromisoformat(fields["end_date"]),
            initial_cash=float(fields["initial_cash"]),
            commission=float(fields["commission"]),
            benchmark=symbols[0] if symbols else "SPY",
        )
        session_id = context.backtests.start(user, agent_id, wanted)
    except (ValueError, ValidationError, InvalidInput) as exc:
        return _agent_page(
            request,
            context,
            paper,
            accounts,
            user,
            agent_id,
            400,
            form=form,
            backtest_error=_explain(exc),
        )
    return see_other(f"/backtests/{session_id}")


def _text(value: object) -> str:
    return value[:100] if isinstance(value, str) else ""


def _explain(exc: Exception) -> str:
    if isinstance(exc, InvalidInput):
        return exc.message
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors()
        )
    return f"check the dates (YYYY-MM-DD) and numbers: {exc}"


@router.get("/agents/{agent_id}/delete", response_class=HTMLResponse)
def confirm_delete(
    request: Request, context: ContextDep, user: PageUser, agent_id: str
) -> Response:
    """Ask before deleting."""
    shown = context.agents.show(user, agent_id, include_source=False)
    return page(request, "confirm_delete.html", user=user, agent=shown)


@router.post("/agents/{agent_id}/delete")
def delete(
    request: Request, context: ContextDep, user: PageUser, agent_id: str, csrf: Csrf = None
) -> Response:
    """Delete the agent (after the confirmation page)."""
    check_csrf(request, csrf)
    context.agents.delete(user, agent_id)
    return see_other("/agents")
