"""The public pages: the leaderboard and an agent's public page."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from farm.deps import ContextDep
from farm.errors import NotFound
from farm.leaderboard.cache import Board
from farm.leaderboard.schemas import (
    BoardType,
    LeaderboardOut,
    LeaderboardRow,
    Metric,
    RankOut,
    Timeframe,
)
from farm.leaderboard.service import LeaderboardService
from farm.web.auth import MaybeUser
from farm.web.dependencies import SparklinesDep
from farm.web.render import PageRoute, page

router = APIRouter(route_class=PageRoute, include_in_schema=False)

TYPES = [
    (BoardType.HEADLINE, "Headline (forward)"),
    (BoardType.BACKTEST, "Backtest (in-sample)"),
    (BoardType.PAPER_TRADING, "Paper trading"),
]
METRICS = [
    (Metric.SHARPE, "Sharpe"),
    (Metric.RETURNS, "Return"),
    (Metric.SORTINO, "Sortino"),
    (Metric.CALMAR, "Calmar"),
    (Metric.MAX_DRAWDOWN, "Max drawdown"),
    (Metric.WIN_RATE, "Win rate"),
    (Metric.TOTAL_PNL, "Total P&L"),
]
TIMEFRAMES = [
    (Timeframe.ALL_TIME, "All time"),
    (Timeframe.MONTHLY, "Last 30 days"),
    (Timeframe.WEEKLY, "Last 7 days"),
    (Timeframe.DAILY, "Last day"),
]
PERCENT_METRICS = {Metric.RETURNS, Metric.MAX_DRAWDOWN, Metric.WIN_RATE}
PAGE_ROWS = 50


@router.get("/", response_class=HTMLResponse)
def leaderboard(
    request: Request,
    context: ContextDep,
    user: MaybeUser,
    sparklines: SparklinesDep,
    type: BoardType = BoardType.HEADLINE,
    metric: Metric = Metric.SHARPE,
    timeframe: Timeframe = Timeframe.ALL_TIME,
) -> HTMLResponse:
    """The leaderboard, with its board, metric and timeframe switches."""
    body = context.leaderboard.page(Board(type, timeframe), metric, PAGE_ROWS)
    board = LeaderboardOut.model_validate_json(body)
    return page(
        request,
        "leaderboard.html",
        user=user,
        board=board,
        metric=metric,
        metric_label=dict(METRICS)[metric],
        timeframe=timeframe,
        types=TYPES,
        metrics=METRICS,
        timeframes=TIMEFRAMES,
        percent_metrics=PERCENT_METRICS,
        sparks=sparklines.lines(row.session_id for row in board.leaderboard),
    )


@router.get("/a/{agent_id}", response_class=HTMLResponse)
def public_agent(
    request: Request,
    context: ContextDep,
    user: MaybeUser,
    sparklines: SparklinesDep,
    agent_id: str,
) -> HTMLResponse:
    """An agent's public page: its numbers and ranks (never its code)."""
    ranks = [(label, _rank(context.leaderboard, kind, agent_id)) for kind, label in TYPES]
    listed = [kind for (kind, _), (_, rank) in zip(TYPES, ranks, strict=True) if rank is not None]
    if not listed:  # shown on the first board listing it: headline, then backtest, then paper
        raise NotFound(f"agent {agent_id} is on no leaderboard")
    board = Board(listed[0], Timeframe.ALL_TIME)
    row = LeaderboardRow.model_validate_json(
        context.leaderboard.row(board, Metric.SHARPE, agent_id)
    )
    spark = sparklines.lines([row.session_id]).get(row.session_id)
    return page(request, "public_agent.html", user=user, row=row, ranks=ranks, spark=spark)


def _rank(leaderboard: LeaderboardService, kind: BoardType, agent_id: str) -> RankOut | None:
    """The agent's all-time Sharpe rank on a board; None when the board does not list it."""
    try:
        return leaderboard.rank(Board(kind, Timeframe.ALL_TIME), Metric.SHARPE, agent_id)
    except NotFound:
        return None
