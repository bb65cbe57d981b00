"""Paper trading: accounts (create, fund, reset), start and stop (with liquidate), and the
live view of an agent's session (SSE: last bar, positions, open orders, equity, the feed)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from farm.context import Context
from farm.deps import ContextDep
from farm.errors import InvalidInput
from farm.marketdata.schemas import FeedOut
from farm.papertrading.dependencies import AccountsDep, PaperDep
from farm.papertrading.schemas import (
    AccountCreate,
    FundRequest,
    PaperStart,
    PaperStatus,
    PaperStop,
)
from farm.web.auth import CSRF_FIELD, Csrf, PageUser, check_csrf
from farm.web.render import PageRoute, environment, money, page, see_other, when
from farm.web.series import CHART_POINTS, chart_time, thin
from farm.web.sse import event_stream

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Text = Annotated[str, Form(max_length=200)]
ENDED = {"stopped", "failed", "not_running"}
LIVE_POLL_S = 0.25


def _invalid(exc: ValidationError | ValueError | InvalidOperation) -> InvalidInput:
    if isinstance(exc, ValidationError):
        return InvalidInput("; ".join(str(e["msg"]) for e in exc.errors()))
    return InvalidInput("amounts are numbers of dollars, e.g. 2500.50")


def _money(text: str) -> Decimal:
    try:
        return Decimal(text.strip().replace(",", "").removeprefix("$"))
    except InvalidOperation as exc:
        raise _invalid(exc) from None


@router.get("/paper", response_class=HTMLResponse)
def paper_home(
    request: Request,
    context: ContextDep,
    accounts: AccountsDep,
    paper: PaperDep,
    user: PageUser,
    agent: Annotated[str, Query(max_length=100)] = "",
) -> Response:
    """Accounts, sessions and the start form."""
    feed = FeedOut.of(context.feed.status())
    return page(
        request,
        "paper.html",
        user=user,
        accounts=accounts.list(user, page=1, limit=100).accounts,
        sessions=paper.list(user, page=1, limit=50).sessions,
        agents=context.agents.list(user, page=1, limit=100, status=None).agents,
        chosen_agent=agent,
        feed=feed,
        symbols=feed.symbols or [i.symbol for i in context.bars.symbols()],
    )


@router.post("/paper/accounts")
def create_account(
    request: Request,
    accounts: AccountsDep,
    user: PageUser,
    name: Text = "",
    initial_cash: Text = "100000",
    csrf: Csrf = None,
) -> Response:
    """Open an account."""
    check_csrf(request, csrf)
    try:
        wanted = AccountCreate(name=name.strip() or None, initial_cash=_money(initial_cash))
    except ValidationError as exc:
        raise _invalid(exc) from None
    accounts.create(user, wanted)
    return see_other("/paper")


@router.post("/paper/accounts/{account_id}/fund")
def fund_account(
    request: Request,
    accounts: AccountsDep,
    user: PageUser,
    account_id: str,
    amount: Text = "",
    csrf: Csrf = None,
) -> Response:
    """Add cash to an account (validated as the API's body is)."""
    check_csrf(request, csrf)
    try:
        wanted = FundRequest(amount=_money(amount))
    except ValidationError as exc:
        raise _invalid(exc) from None
    accounts.fund(user, account_id, wanted.amount)
    return see_other("/paper")


@router.post("/paper/accounts/{account_id}/reset")
def reset_account(
    request: Request, accounts: AccountsDep, user: PageUser, account_id: str, csrf: Csrf = None
) -> Response:
    """Back to the initial cash, no positions, no orders."""
    check_csrf(request, csrf)
    accounts.reset(user, account_id)
    return see_other("/paper")


@router.post("/paper/start")
async def start(request: Request, paper: PaperDep, user: PageUser) -> Response:
    """Start an agent on the live feed, then show its live view."""
    form = await request.form()
    check_csrf(request, _text(form.get(CSRF_FIELD)))
    agent_id = _text(form.get("agent_id"))
    try:
        wanted = PaperStart(
            agent_id=agent_id,
            account_id=_text(form.get("account_id")) or None,
            symbols=[_text(s) for s in form.getlist("symbols")][:100],
            warmup_bars=int(_text(form.get("warmup_bars")) or 0),
            commission=float(_text(form.get("commission")) or 0),
        )
    except (ValidationError, ValueError) as exc:
        raise _invalid(exc) from None
    paper.start(user, wanted)
    return see_other(f"/paper/{agent_id}")


def _text(value: object) -> str:
    return value.strip()[:200] if isinstance(value, str) else ""


@router.post("/paper/{agent_id}/stop")
def stop(
    request: Request,
    paper: PaperDep,
    user: PageUser,
    agent_id: str,
    liquidate: Text = "",
    csrf: Csrf = None,
) -> Response:
    """Stop the agent's session (cancelling its orders; with liquidate, closing positions)."""
    check_csrf(request, csrf)
    paper.stop(user, PaperStop(agent_id=agent_id, liquidate=bool(liquidate)))
    return see_other(f"/paper/{agent_id}")


@router.get("/paper/{agent_id}", response_class=HTMLResponse)
def live(
    request: Request,
    context: ContextDep,
    paper: PaperDep,
    user: PageUser,
    agent_id: str,
) -> Response:
    """The agent's latest paper session, live."""
    agent = context.agents.show(user, agent_id, include_source=False)
    status = paper.status(user, agent_id)
    state = _state(context, status, _last_bars(context, status))
    equity = []
    if status.session_id:
        equity = [
            {"time": chart_time(p.timestamp), "value": p.equity}
            for p in paper.equity(user, status.session_id).equity
        ]
    return page(
        request,
        "paper_live.html",
        user=user,
        agent=agent,
        charts={"live": thin(equity, CHART_POINTS)},
        ended=status.status in ENDED,
        **state,
    )


def _last_bars(context: Context, status: PaperStatus) -> list[dict[str, Any]]:
    """The close of the session's symbols (the first 20) on the day of its last bar."""
    last_bars = []
    if status.last_bar_time is not None:
        day = status.last_bar_time.date()
        for symbol in status.symbols[:20]:
            frame = context.bars.frame(symbol, day, day)
            if len(frame):
                row = frame.iloc[-1]
                last_bars.append({"symbol": symbol, "close": float(row["close"])})
    return last_bars


def _state(
    context: Context, status: PaperStatus, last_bars: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"status": status, "feed": FeedOut.of(context.feed.status()), "last_bars": last_bars}


@router.get("/paper/{agent_id}/events")
def live_events(
    request: Request, context: ContextDep, paper: PaperDep, user: PageUser, agent_id: str
) -> Response:
    """Server-sent ``paper`` events: the session's state at each new bar, until it ends."""
    paper.status(user, agent_id)  # 404 unless it is the user's
    rows = environment().get_template("_paper_rows.html")
    closes: dict[tuple[str | None, datetime | None], list[dict[str, Any]]] = {}

    def poll() -> tuple[str, dict[str, Any], bool]:
        status = paper.status(user, agent_id)
        bar = (status.session_id, status.last_bar_time)
        if bar not in closes:  # the bar files are read once per new bar, not at every poll
            closes.clear()
            closes[bar] = _last_bars(context, status)
        state = _state(context, status, closes[bar])
        point = None
        if status.last_bar_time is not None and status.equity is not None:
            point = {"time": chart_time(status.last_bar_time), "value": float(status.equity)}
        data = {
            "fields": _fields(state),
            "point": point,
            "rows": rows.render(**state),
            "final": status.status in ENDED,
        }
        return "paper", data, status.status in ENDED

    return event_stream(request, user.id, poll, LIVE_POLL_S)


def _fields(state: dict[str, Any]) -> dict[str, Any]:
    """The live view's text fields (``data-field`` in the page)."""
    status: PaperStatus = state["status"]
    feed: FeedOut = state["feed"]
    return {
        "status": status.status,
        "bars": status.bars_processed,
        "last-bar": when(status.last_bar_time),
        "equity": money(status.equity),
        "cash": money(status.cash),
        "pnl": money(status.total_pnl),
        "feed": f"{feed.state} ({feed.source}), last bar {when(feed.last_bar_time)}",
    }
