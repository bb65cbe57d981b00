"""The leaderboard: results recorded in SQL, boards served from the cache, SQL when it is down."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from farm.core.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio
from farm.errors import NotFound
from farm.events import AGENT_DELETED, BACKTEST_COMPLETED, Event, EventBus
from farm.leaderboard import repository
from farm.leaderboard.cache import (
    Board,
    CacheUnavailable,
    LeaderboardCache,
    Ranked,
    now_iso,
    render_page,
    render_row,
)
from farm.leaderboard.repository import BoardRow
from farm.leaderboard.schemas import BoardType, Metric, RankOut, Timeframe
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, utcnow

STANDARD = "standard"
REAL = "real"
ALL_TIME = Timeframe.ALL_TIME.value
METRICS = tuple(Metric)


def record_backtest_result(
    session: Session, backtest: BacktestSession, returns: Sequence[float]
) -> None:
    """Result hook of the backtest service, run in the transaction that completes a session.

    Records the agent's standard evaluation on real data (others are never ranked) as its
    backtest entry, unless the agent is deleted or a newer evaluation is recorded already.
    ``returns`` (daily) give the probabilistic and deflated Sharpe ratios; the deflation counts
    every agent the user has submitted.
    """
    if backtest.kind != STANDARD or backtest.status != "completed" or backtest.data_source != REAL:
        return
    agent = session.get(Agent, backtest.agent_id)
    if agent is None or agent.status == repository.DELETED:
        return
    metrics = backtest.metrics or {}
    if not _all_finite([*returns, *metrics.values()]):
        return  # broken accounting (NaN or infinite figures) is never ranked
    initial, final = _number(metrics.get("initialValue")), _number(metrics.get("finalValue"))
    trades = _number(metrics.get("totalTrades"))
    n_trials = max(repository.count_agents(session, backtest.user_id), 1)
    values: dict[str, Any] = {
        "board_type": BoardType.BACKTEST.value,
        "timeframe": ALL_TIME,
        "agent_id": backtest.agent_id,
        "user_id": backtest.user_id,
        "session_id": backtest.id,
        "evaluated_at": backtest.finished_at or utcnow(),
        "returns": _number(metrics.get("totalReturn")),
        "sharpe": _number(metrics.get("sharpeRatio")),
        "sortino": _number(metrics.get("sortinoRatio")),
        "calmar": _number(metrics.get("calmarRatio")),
        "max_drawdown": _number(metrics.get("maxDrawdown")),
        "win_rate": _number(metrics.get("winRate")),
        "total_pnl": _number(final - initial)
        if final is not None and initial is not None
        else None,
        "total_trades": int(trades) if trades is not None else None,
        "probabilistic_sharpe": _number(probabilistic_sharpe_ratio(returns)),
        "deflated_sharpe": _number(deflated_sharpe_ratio(returns, n_trials)),
        "n_trials": n_trials,
        "updated_at": utcnow(),
    }
    repository.upsert(session, values)


class LeaderboardService:
    """Serves boards from the cache (pre-encoded bytes) and keeps it written through."""

    def __init__(self, db: Database, cache: LeaderboardCache, bus: EventBus) -> None:
        self._db = db
        self.cache = cache
        bus.subscribe(BACKTEST_COMPLETED, self.on_backtest_completed)
        bus.subscribe(AGENT_DELETED, self.on_agent_deleted)

    def page(self, board: Board, metric: Metric, limit: int) -> bytes:
        """The ``GET /api/leaderboard`` body: from the cache, or from SQL when it is down."""
        try:
            page = self.cache.page(board, metric, limit, self.load)
        except CacheUnavailable:
            with self._db.transaction() as session:
                rows = repository.ranked_page(
                    session, board.type, _stored(board), _since(board), metric, limit
                )
                ranked = [_ranked(row) for row in rows]
            body = b",".join(
                render_row(i, metric, r.scores[metric], r.details)
                for i, r in enumerate(ranked, start=1)
            )
            return render_page(body, now_iso(), "database")
        return render_page(page.rows, page.updated_at, "cache")

    def rank(self, board: Board, metric: Metric, agent_id: str) -> RankOut:
        """Where an agent stands on a board; 404 if the board does not rank it."""
        source = "cache"
        try:
            hit = self.cache.rank(board, metric, agent_id, self.load)
            found = None if hit is None else (hit.rank, hit.score, hit.total)
        except CacheUnavailable:
            source = "database"
            with self._db.transaction() as session:
                found = repository.rank_of(
                    session, board.type, _stored(board), _since(board), metric, agent_id
                )
        if found is None:
            raise NotFound(
                f"agent {agent_id} is not ranked on the {board.type}/{metric}/{board.timeframe} "
                "board (unknown, deleted, or without a ranked result in that timeframe)"
            )
        rank, score, total = found
        return RankOut(
            agent_id=agent_id,
            rank=rank,
            score=score,
            total=total,
            type=board.type,
            metric_type=metric,
            timeframe=board.timeframe,
            source=source,
        )

    def load(self, board: Board) -> list[Ranked]:
        """Every entry of a board from SQL: what the cache rebuilds from."""
        with self._db.transaction() as session:
            rows = repository.board_rows(session, board.type, _stored(board), _since(board))
            return [_ranked(row) for row in rows]

    def on_backtest_completed(self, event: Event) -> None:
        """Write a new standard evaluation through to the cache."""
        if event.get("kind") != STANDARD:
            return
        with self._db.transaction() as session:
            rows = repository.agent_rows(session, event["agentId"])
            entries = [_ranked(row) for row in rows]
        if entries:
            try:
                self.cache.put(entries)
            except CacheUnavailable:
                pass  # the cache logged it; boards are rebuilt from SQL once it is back

    def on_agent_deleted(self, event: Event) -> None:
        """A deleted agent leaves every board, in SQL and in the cache."""
        with self._db.transaction() as session:
            repository.delete_agent(session, event["agentId"])
        try:
            self.cache.remove(event["agentId"])
        except CacheUnavailable:
            pass

    def close(self) -> None:
        """Release the cache's connections."""
        self.cache.close()


def _number(value: object) -> float | None:
    """A finite float, or None (missing, NaN and infinite values are not ranked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _all_finite(values: Sequence[object]) -> bool:
    """No float among ``values`` (or in a nested dict of them) is NaN or infinite."""
    for value in values:
        if isinstance(value, dict) and not _all_finite(list(value.values())):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
    return True


def _stored(board: Board) -> str:
    """The ``timeframe`` column holding a board's entries."""
    return ALL_TIME if board.type is BoardType.BACKTEST else board.timeframe.value


def _since(board: Board) -> datetime | None:
    window = board.timeframe.window
    return None if window is None else datetime.now(UTC) - window


def _boards(row: BoardRow) -> tuple[Board, ...]:
    if row.entry.board_type == BoardType.BACKTEST:
        return tuple(Board(BoardType.BACKTEST, tf) for tf in Timeframe)
    return (Board(BoardType(row.entry.board_type), Timeframe(row.entry.timeframe)),)


def _ranked(row: BoardRow) -> Ranked:
    entry = row.entry
    scores = {m: v for m in METRICS if (v := getattr(entry, m.value)) is not None}
    details = {
        "agentId": entry.agent_id,
        "agentName": row.agent_name,
        "userId": row.owner,
        "sessionId": entry.session_id,
        "evaluatedAt": entry.evaluated_at.isoformat(),
        "submittedAt": row.submitted_at.isoformat(),
        "returns": entry.returns,
        "sharpe": entry.sharpe,
        "sortino": entry.sortino,
        "calmar": entry.calmar,
        "maxDrawdown": entry.max_drawdown,
        "winRate": entry.win_rate,
        "totalPnl": entry.total_pnl,
        "totalTrades": entry.total_trades,
        "probabilisticSharpe": entry.probabilistic_sharpe,
        "deflatedSharpe": entry.deflated_sharpe,
    }
    encoded = json.dumps(details, separators=(",", ":"), allow_nan=False).encode()
    return Ranked(
        agent_id=entry.agent_id,
        submitted_at=row.submitted_at,
        evaluated_at=entry.evaluated_at,
        boards=_boards(row),
        scores=scores,
        details=encoded[1:-1],
    )
