"""HTTP routes of the leaderboard (public: no token needed)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from farm.deps import ContextDep, get_context
from farm.leaderboard.cache import Board
from farm.leaderboard.schemas import (
    MAX_LIMIT,
    BoardType,
    LeaderboardOut,
    Metric,
    RankOut,
    Timeframe,
)
from farm.schemas import errors

router = APIRouter(prefix="/api/leaderboard", tags=["leaderboard"])

TypeQuery = Annotated[BoardType, Query(alias="type", description="What is ranked")]
MetricQuery = Annotated[Metric, Query(description="Ranking metric; max_drawdown: lower is better")]
TimeframeQuery = Annotated[Timeframe, Query(description="Window of results, ending now")]


@router.get(
    "",
    response_model=LeaderboardOut,
    responses=errors(400),
    summary="Ranked agents",
)
def get_leaderboard(
    request: Request,
    board_type: TypeQuery = BoardType.HEADLINE,
    metric: MetricQuery = Metric.SHARPE,
    timeframe: TimeframeQuery = Timeframe.ALL_TIME,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> Response:
    """The best agents of a board, one row per agent, ties to the earlier submission.

    ``headline`` (the default) ranks forward results: bars dated after each agent's submission,
    Sharpe being the lower of the forward and the in-sample one, once the agent has enough
    forward bars; until then it is listed after every ranked agent with ``status:
    "awaiting_forward"`` and no rank. ``backtest`` ranks each agent's latest standard evaluation
    (same symbols and period for everyone, ``inSample: true``: data the agent could have seen)
    completed within the timeframe; ``paper_trading`` ranks paper sessions by the metric over
    the timeframe. ``source`` says whether the cache or the database answered.
    """
    # The hot path: pre-encoded bytes, and the context read here rather than through a
    # dependency (a sync dependency costs a second worker-thread hop per request).
    leaderboard = get_context(request).leaderboard
    body = leaderboard.page(Board(board_type, timeframe), metric, limit)
    return Response(body, media_type="application/json")


@router.get(
    "/rank/{agent_id}",
    responses=errors(400, 404),
    summary="One agent's rank",
)
def get_rank(
    context: ContextDep,
    agent_id: str,
    board_type: TypeQuery = BoardType.HEADLINE,
    metric: MetricQuery = Metric.SHARPE,
    timeframe: TimeframeQuery = Timeframe.ALL_TIME,
) -> RankOut:
    """Where an agent stands on a board: its rank, its score and how many agents are ranked
    (rank and score null while it awaits forward results on the headline board)."""
    return context.leaderboard.rank(Board(board_type, timeframe), metric, agent_id)
