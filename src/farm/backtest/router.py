"""HTTP routes of the backtest service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, status

from farm.backtest.schemas import (
    BacktestRequest,
    BacktestResults,
    EquitySeries,
    FillList,
    SessionList,
    SessionLogs,
    SessionStatus,
    StartResponse,
    TradeList,
)
from farm.deps import ContextDep, CurrentUser
from farm.schemas import errors

router = APIRouter(tags=["backtest"])

MAX_PAGE = 1000
MAX_OFFSET = 10**9
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"1 to {MAX_PAGE}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"0 to {MAX_OFFSET:,}")]


@router.post(
    "/api/backtest/{agent_id}/start",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(400, 401, 403, 404, 429, 503),
)
def start_backtest(
    context: ContextDep,
    user: CurrentUser,
    agent_id: str,
    request: Annotated[BacktestRequest | None, Body()] = None,
) -> StartResponse:
    """Queue a backtest of one of your agents (every field has a default); 429 once you have
    ``FARM_MAX_QUEUED_BACKTESTS_PER_USER`` queued."""
    session_id = context.backtests.start(user, agent_id, request or BacktestRequest())
    return StartResponse(session_id=session_id, status=SessionStatus.QUEUED)


@router.get("/api/backtest/{session_id}/results", responses=errors(401, 403, 404))
def backtest_results(context: ContextDep, user: CurrentUser, session_id: str) -> BacktestResults:
    """Status and progress; on completion every metric, the benchmark's, or the failure."""
    return context.backtests.results(user, session_id)


@router.post("/api/backtest/{session_id}/cancel", responses=errors(401, 403, 404, 409))
def cancel_backtest(context: ContextDep, user: CurrentUser, session_id: str) -> BacktestResults:
    """Cancel a queued or running backtest (a running agent is stopped within a second)."""
    return context.backtests.cancel(user, session_id)


@router.get("/api/backtest/{session_id}/logs", responses=errors(401, 403, 404, 409))
def backtest_logs(context: ContextDep, user: CurrentUser, session_id: str) -> SessionLogs:
    """What the agent printed (stdout and stderr), for failed runs too: the first and the last
    32 KiB; 409 while the backtest is queued or running."""
    return context.backtests.logs(user, session_id)


@router.get("/api/backtest/{session_id}/equity", responses=errors(400, 401, 403, 404, 409))
def backtest_equity(
    context: ContextDep, user: CurrentUser, session_id: str, limit: Limit = 1000, offset: Offset = 0
) -> EquitySeries:
    """A page of the equity and drawdown series (one point per bar) of a completed backtest."""
    return context.backtests.equity(user, session_id, limit=limit, offset=offset)


@router.get("/api/backtest/{session_id}/fills", responses=errors(400, 401, 403, 404, 409))
def backtest_fills(
    context: ContextDep, user: CurrentUser, session_id: str, limit: Limit = 100, offset: Offset = 0
) -> FillList:
    """A page of the fills of a completed backtest (``output.fills`` says if some were not
    stored)."""
    return context.backtests.fills(user, session_id, limit=limit, offset=offset)


@router.get("/api/backtest/{session_id}/trades", responses=errors(400, 401, 403, 404, 409))
def backtest_trades(
    context: ContextDep, user: CurrentUser, session_id: str, limit: Limit = 100, offset: Offset = 0
) -> TradeList:
    """A page of the closed trades of a completed backtest (``output.trades`` says if some were
    not stored)."""
    return context.backtests.trades(user, session_id, limit=limit, offset=offset)


@router.post(
    "/api/agents/{agent_id}/evaluate",
    status_code=status.HTTP_202_ACCEPTED,
    responses=errors(401, 403, 404, 429, 503),
)
def evaluate_agent(context: ContextDep, user: CurrentUser, agent_id: str) -> StartResponse:
    """Re-run the standard evaluation of one of your agents (e.g. after new data); 429 while
    one is queued or running, or within ``FARM_EVALUATE_COOLDOWN_S`` of the last one."""
    session_id = context.backtests.evaluate(user, agent_id)
    return StartResponse(session_id=session_id, status=SessionStatus.QUEUED)


@router.get("/api/agents/{agent_id}/backtests", responses=errors(400, 401, 403, 404))
def agent_backtests(
    context: ContextDep, user: CurrentUser, agent_id: str, limit: Limit = 100, offset: Offset = 0
) -> SessionList:
    """A page of the backtests of one of your agents, newest first."""
    return context.backtests.list_for_agent(user, agent_id, limit=limit, offset=offset)
