"""The decision explorer (FMEL): decisions filtered by action, symbol and date, one decision in
words, analytics charts, two sessions compared (picked from the latest), and export links."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from farm.backtest.service import CUSTOM, STANDARD
from farm.context import Context
from farm.deps import ContextDep
from farm.errors import InvalidInput
from farm.fmel.records import Action
from farm.fmel.router import get_service, streamed
from farm.fmel.schemas import Analytics, DateRange, ExportFormat, RecordKind
from farm.fmel.service import MAX_DATE_CHARS, PAPER, Filters
from farm.storage.models import User
from farm.web.auth import PageUser
from farm.web.render import PageRoute, page, when
from farm.web.series import chart_time
from farm.web.words import in_words

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ROWS_PER_PAGE = 50
Text = Annotated[str, Query(max_length=100)]
DateText = Annotated[str, Query(max_length=MAX_DATE_CHARS)]
SESSIONS_SHOWN = 100
KINDS = {CUSTOM: "backtest", STANDARD: "standard evaluation", PAPER: "paper trading"}
EXPORTS = [(f.value, r.value) for r in RecordKind for f in (ExportFormat.CSV, ExportFormat.JSONL)]


def _blank(value: str) -> str | None:
    return value.strip() or None


@router.get("/decisions", response_class=HTMLResponse)
def decisions(
    request: Request,
    context: ContextDep,
    user: PageUser,
    agent: Text = "",
    session: Text = "",
    action: Text = "",
    symbol: Text = "",
    start: DateText = "",
    end: DateText = "",
    offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
) -> Response:
    """Decisions of the user's agents, newest first, filtered."""
    fmel = get_service(context)
    if session and not agent:
        agent = fmel.session_agent(session)
    try:
        chosen = Action(action) if action else None
    except ValueError:
        raise InvalidInput("action must be one of: buy, sell, hold, mixed") from None
    filters = Filters(
        _blank(agent), _blank(session), _blank(start), _blank(end), chosen, _blank(symbol)
    )
    found = fmel.decisions(user, filters, limit=ROWS_PER_PAGE, offset=offset)
    return page(
        request,
        "decisions.html",
        user=user,
        agents=context.agents.list(user, page=1, limit=100, status=None).agents,
        found=found,
        filters={
            "agent": agent,
            "session": session,
            "action": action,
            "symbol": symbol,
            "start": start,
            "end": end,
        },
        actions=[a.value for a in Action],
        rows=ROWS_PER_PAGE,
        offset=offset,
    )


def _charts(analytics: Analytics) -> dict[str, Any]:
    """Actions per day, one line per action, for the analytics chart."""
    series: dict[str, list[dict[str, Any]]] = {"buy": [], "sell": [], "hold": [], "mixed": []}
    for day in analytics.daily_actions:
        t = chart_time(datetime.combine(day.date, time(), UTC))
        for name, points in series.items():
            points.append({"time": t, "value": getattr(day, name)})
    return {"actions": series}


@router.get("/decisions/analytics", response_class=HTMLResponse)
def analytics(
    request: Request, context: ContextDep, user: PageUser, agent: Text = "", session: Text = ""
) -> Response:
    """One agent's (or one session's) analytics: actions over time, P&L by confidence,
    most-read fields, and export links."""
    if session and not agent:
        agent = get_service(context).session_agent(session)
    if not agent:
        raise InvalidInput("choose an agent or a session")
    found = get_service(context).analytics(user, agent, _blank(session), DateRange.ALL)
    return page(
        request,
        "analytics.html",
        user=user,
        analytics=found,
        charts=_charts(found),
        agent=agent,
        session=session,
        exports=EXPORTS,
    )


@router.get("/decisions/compare", response_class=HTMLResponse)
def compare(
    request: Request, context: ContextDep, user: PageUser, a: Text = "", b: Text = ""
) -> Response:
    """Two sessions' analytics side by side, picked among the user's latest sessions with
    decisions (or given by id, as links do)."""
    sides = [_session_analytics(context, user, sid) for sid in (a, b) if sid]
    labels = {  # newest first
        s.session_id: f"{s.agent_name} · {KINDS.get(s.kind, s.kind)} · {when(s.created_at)}"
        f" · {s.session_id[:8]}"
        for s in get_service(context).sessions(user, limit=SESSIONS_SHOWN)
    }
    return page(request, "compare.html", user=user, sides=sides, a=a, b=b, labels=labels)


def _session_analytics(context: Context, user: User, session_id: str) -> Analytics:
    fmel = get_service(context)
    return fmel.analytics(user, fmel.session_agent(session_id), session_id, DateRange.ALL)


@router.get("/decisions/export")
def export(
    context: ContextDep,
    user: PageUser,
    agent: Text,
    session: Text = "",
    format: ExportFormat = ExportFormat.CSV,
    records: RecordKind = RecordKind.DECISIONS,
) -> StreamingResponse:
    """Download the agent's records (one session or all)."""
    return streamed(get_service(context).export(user, agent, _blank(session), format, records))


@router.get("/decisions/{decision_id}", response_class=HTMLResponse)
def decision(request: Request, context: ContextDep, user: PageUser, decision_id: str) -> Response:
    """One decision, told in words, with its raw record."""
    found = get_service(context).decision(user, decision_id)
    return page(request, "decision.html", user=user, d=found, words=in_words(found))
