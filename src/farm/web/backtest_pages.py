"""A backtest's page: live progress (SSE) and a cancel button while it runs, then metric cards,
equity versus benchmark and drawdown charts, trades on a price chart, paged trade and fill
tables, the agent's logs, and the failure explained."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from farm.backtest.schemas import BacktestResults, FailureReason, SessionStatus
from farm.context import Context
from farm.deps import ContextDep
from farm.errors import Conflict, InvalidInput
from farm.storage.models import User
from farm.web.auth import Csrf, PageUser, check_csrf
from farm.web.render import PageRoute, page, see_other
from farm.web.series import WHOLE, backtest_charts
from farm.web.sse import event_stream

router = APIRouter(route_class=PageRoute, include_in_schema=False)

ROWS_PER_PAGE = 50
FINISHED = {SessionStatus.COMPLETED, SessionStatus.FAILED, SessionStatus.CANCELLED}
WHY = {
    FailureReason.AGENT_ERROR: "The agent raised an exception; its traceback is below.",
    FailureReason.TIMEOUT: "The agent ran past its time limit (FARM_SANDBOX_WALL_S / CPU_S).",
    FailureReason.MEMORY: "The agent used more memory than allowed (FARM_SANDBOX_MEMORY_MB).",
    FailureReason.KILLED: "The agent's process was killed (a limit was hit, or it was stopped).",
    FailureReason.INVALID_AGENT: "The file is not a valid agent: one backtrader.Strategy.",
    FailureReason.DATA_ERROR: "The requested symbols or dates have no usable bars.",
    FailureReason.INTERRUPTED: "The server stopped while it ran; start it again.",
    FailureReason.BANKRUPT: "The account's equity fell to zero or below, so the run stopped.",
    FailureReason.INTERNAL_ERROR: "The platform failed, not the agent; it was logged.",
}
CARDS = [
    ("totalReturn", "Return", "pct"),
    ("annualReturn", "Annual return", "pct"),
    ("sharpeRatio", "Sharpe", "num"),
    ("sortinoRatio", "Sortino", "num"),
    ("maxDrawdown", "Max drawdown", "pct"),
    ("winRate", "Win rate", "pct"),
    ("totalTrades", "Trades", "int"),
    ("profitFactor", "Profit factor", "num"),
    ("finalValue", "Final value", "money"),
    ("exposure", "Exposure", "pct"),
]
Offset = Annotated[int, Query(ge=0, le=10**9)]


@router.get("/backtests/{session_id}", response_class=HTMLResponse)
def backtest(
    request: Request,
    context: ContextDep,
    user: PageUser,
    session_id: str,
    symbol: Annotated[str | None, Query(max_length=40)] = None,
    trades_from: Offset = 0,
    fills_from: Offset = 0,
) -> Response:
    """The backtest's page (its progress while it runs)."""
    return _backtest_page(request, context, user, session_id, symbol, trades_from, fills_from)


def _backtest_page(
    request: Request,
    context: Context,
    user: User,
    session_id: str,
    symbol: str | None = None,
    trades_from: int = 0,
    fills_from: int = 0,
    status_code: int = 200,
    notice: str | None = None,
) -> Response:
    results = context.backtests.results(user, session_id)
    agent = context.agents.show(user, results.agent_id, include_source=False)
    values: dict[str, Any] = {
        "user": user,
        "results": results,
        "agent": agent,
        "cards": CARDS,
        "notice": notice,
    }
    if results.failure is not None:
        values["why"] = WHY.get(results.failure.reason, "")
    if results.status in FINISHED and results.status is not SessionStatus.CANCELLED:
        values["logs"] = context.backtests.logs(user, session_id)
    if results.status is SessionStatus.COMPLETED:
        values.update(_completed(context, user, results, symbol, trades_from, fills_from))
    return page(request, "backtest.html", status_code, **values)


@router.post("/backtests/{session_id}/cancel", response_class=HTMLResponse)
def cancel(
    request: Request, context: ContextDep, user: PageUser, session_id: str, csrf: Csrf = None
) -> Response:
    """Cancel the backtest while it is queued or running, then show its page; one that ended
    meanwhile comes back as its page saying so (409)."""
    check_csrf(request, csrf)
    try:
        context.backtests.cancel(user, session_id)
    except Conflict as exc:
        return _backtest_page(
            request,
            context,
            user,
            session_id,
            status_code=409,
            notice=f"Not cancelled: {exc.message}",
        )
    return see_other(f"/backtests/{session_id}")


def _completed(
    context: Context,
    user: User,
    results: BacktestResults,
    symbol: str | None,
    trades_from: int,
    fills_from: int,
) -> dict[str, Any]:
    sid = results.session_id
    symbols = results.parameters.symbols
    chosen = symbol if symbol is not None else symbols[0]
    if chosen not in symbols:
        raise InvalidInput(f"symbol must be one of this backtest's: {', '.join(symbols)}")
    equity = context.backtests.equity(user, sid, limit=WHOLE, offset=0).points
    trades = context.backtests.trades(user, sid, limit=WHOLE, offset=0).trades
    return {
        "symbol": chosen,
        "charts": backtest_charts(context.bars, results, equity, trades, chosen),
        "trades": context.backtests.trades(user, sid, limit=ROWS_PER_PAGE, offset=trades_from),
        "fills": context.backtests.fills(user, sid, limit=ROWS_PER_PAGE, offset=fills_from),
        "rows": ROWS_PER_PAGE,
        "trades_from": trades_from,
        "fills_from": fills_from,
    }


@router.get("/backtests/{session_id}/events")
def backtest_events(
    request: Request, context: ContextDep, user: PageUser, session_id: str
) -> Response:
    """Server-sent ``progress`` events until the backtest ends."""
    context.backtests.results(user, session_id)  # 404 unless it is the user's

    def poll() -> tuple[str, dict[str, Any], bool]:
        results = context.backtests.results(user, session_id)
        data = {
            "status": results.status.value,
            "done": results.progress.bars_done,
            "total": results.progress.bars_total,
        }
        return "progress", data, results.status in FINISHED

    return event_stream(request, user.id, poll)
