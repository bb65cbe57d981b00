"""The leaderboard: results recorded in SQL, boards served from the cache, SQL when it is down.

Two entry points record results, each inside the caller's transaction:
:func:`record_backtest_result` (the backtest service's result hook: in-sample results) and
:func:`record_forward_result` (for the paper-trading loop: bars dated after the agent's
submission). Each refreshes the agent's headline entry, which combines the two.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from farm.config import Settings
from farm.core.metrics import (
    compute_metrics,
    deflated_sharpe_ratio,
    probabilistic_sharpe_ratio,
)
from farm.core.orders import ClosedTrade
from farm.errors import NotFound
from farm.events import AGENT_DELETED, BACKTEST_COMPLETED, FORWARD_RECORDED, Event, EventBus
from farm.leaderboard import repository
from farm.leaderboard.cache import (
    Board,
    CacheUnavailable,
    LeaderboardCache,
    Ranked,
    RankHit,
    now_iso,
    open_leaderboard_cache,
    render_awaiting,
    render_page,
    render_row,
)
from farm.leaderboard.forward import ForwardBar, ForwardRecorded, forward_metrics
from farm.leaderboard.repository import BoardRow
from farm.leaderboard.schemas import BoardType, Metric, RankOut, RowStatus, Timeframe
from farm.metrics import LEADERBOARD_CACHE
from farm.storage.db import Database
from farm.storage.models import Agent, BacktestSession, LeaderboardEntry, utcnow

STANDARD = "standard"
REAL = "real"
ALL_TIME = Timeframe.ALL_TIME.value
METRICS = tuple(Metric)
# Values of a standard evaluation that must be finite numbers when present.
CHECKED_KEYS = (
    "initialValue",
    "finalValue",
    "totalReturn",
    "sharpeRatio",
    "sortinoRatio",
    "calmarRatio",
    "maxDrawdown",
    "winRate",
    "totalTrades",
)


def record_backtest_result(
    session: Session,
    backtest: BacktestSession,
    returns: Sequence[float],
    *,
    risk_free_rate: float = 0.0,
) -> None:
    """Result hook of the backtest service, run in the transaction that completes a session.

    Records the agent's standard evaluation on real data (others are never ranked) as its
    backtest entry, unless the agent is deleted, a newer evaluation is recorded already, or
    the result is broken (:func:`sound_result`). ``returns`` (daily) give the probabilistic
    and deflated Sharpe ratios; the deflation counts every agent the user has submitted. Then
    refreshes the agent's headline entry (``risk_free_rate`` for its forward Sharpe).
    """
    if backtest.kind != STANDARD or backtest.status != "completed" or backtest.data_source != REAL:
        return
    agent = session.get(Agent, backtest.agent_id)
    if agent is None or agent.status == repository.DELETED:
        return
    metrics = backtest.metrics or {}
    if backtest.failure_reason is not None or not sound_result(metrics, returns):
        return
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
    refresh_headline(session, backtest.agent_id, risk_free_rate)


def sound_result(metrics: Mapping[str, Any], returns: Sequence[float]) -> bool:
    """False for a result that must never be ranked: a value that is present but not a finite
    number (NaN, infinity, text), or a bankrupt run (final value at or below zero, a total
    return of -100% or worse, a daily return that is not finite or loses everything), or a run
    without a single closed trade."""
    for key in CHECKED_KEYS:
        value = metrics.get(key)
        if value is not None and _number(value) is None:
            return False
    final, total = metrics.get("finalValue"), metrics.get("totalReturn")
    if (final is not None and final <= 0) or (total is not None and total <= -1):
        return False
    if not metrics.get("totalTrades"):
        return False  # nothing traded: a do-nothing agent must not top the drawdown board
    return all(math.isfinite(r) and r > -1 for r in returns)


def record_paper_result(
    session: Session,
    agent_id: str,
    user_id: str,
    session_id: str,
    equity: Sequence[tuple[datetime, float]],
    trades: Sequence[ClosedTrade],
    *,
    risk_free_rate: float = 0.0,
) -> None:
    """Record a paper session's metrics on the ``paper_trading`` board, one row per agent and
    timeframe, inside the caller's transaction (call it as the session progresses).

    Each timeframe's row holds the metrics over the session's bars in that window, counted back
    from its last bar (all of them for ``all_time``), and the trades closed in it. Emit
    ``FORWARD_RECORDED`` with ``{"agentId": ...}`` in the same transaction (the outbox relays it
    after commit) so the cache is written through.
    """
    if not equity:
        return
    agent = session.get(Agent, agent_id)
    if agent is None or agent.status == repository.DELETED:
        return
    last = equity[-1][0]
    now = utcnow()
    rows = []
    for timeframe in Timeframe:
        window = timeframe.window
        start = (
            0
            if window is None
            else next(i for i, (t, _) in enumerate(equity) if t >= last - window)
        )
        points = equity[max(start - 1, 0) :]  # the value before the window starts it
        since = points[0][0]
        closed = [t for t in trades if t.exit_ts > since or start == 0]
        metrics = compute_metrics(points, closed, risk_free_rate=risk_free_rate)
        rows.append(
            {
                "board_type": BoardType.PAPER_TRADING.value,
                "timeframe": timeframe.value,
                "agent_id": agent_id,
                "user_id": user_id,
                "session_id": session_id,
                "evaluated_at": now,
                "returns": _number(metrics.total_return),
                "sharpe": _number(metrics.sharpe_ratio),
                "sortino": _number(metrics.sortino_ratio),
                "calmar": _number(metrics.calmar_ratio),
                "max_drawdown": _number(metrics.max_drawdown),
                "win_rate": _number(metrics.win_rate),
                "total_pnl": _number(points[-1][1] - points[0][1]),
                "total_trades": metrics.total_trades,
                "n_trials": 1,
            }
        )
    repository.upsert_many(session, rows)


def record_forward_result(
    session: Session,
    agent_id: str,
    session_id: str,
    bars: Sequence[ForwardBar],
    *,
    risk_free_rate: float = 0.0,
) -> ForwardRecorded:
    """Add bars of a paper session to the agent's forward record, inside the caller's
    transaction; call it per step or per day (calls are idempotent per bar time).

    Only bars dated strictly after the agent's submission are kept: the rest are refused (the
    agent could have seen them). A bar time already recorded for the agent is left as it is
    (a retry, or another session of the same agent). A bar whose equity is not finite or not
    positive is kept as a total loss, so the record is bankrupt and never ranked. Then the
    agent's headline entry is recomputed from all of its forward bars. Emit
    ``FORWARD_RECORDED`` with ``{"agentId": ...}`` in the same transaction (the outbox relays it
    after commit) so the cache is written through.
    """
    if any(bar.time.tzinfo is None for bar in bars):
        raise ValueError("forward bar times must be timezone-aware (UTC)")
    agent = session.get(Agent, agent_id)
    if agent is None or agent.status == repository.DELETED:
        return ForwardRecorded(accepted=0, refused=len(bars))
    forward = [bar for bar in bars if bar.time > agent.created_at]
    now = utcnow()
    rows = [
        {
            "agent_id": agent_id,
            "bar_time": bar.time.astimezone(UTC),
            "session_id": session_id,
            "ret": bar.ret,
            "pnl": bar.pnl,
            "recorded_at": now,
        }
        for bar in forward
    ]
    added = repository.add_forward_bars(session, rows)
    if added:
        refresh_headline(session, agent_id, risk_free_rate)
    return ForwardRecorded(
        accepted=added, refused=len(bars) - len(forward), duplicate=len(forward) - added
    )


def refresh_headline(session: Session, agent_id: str, risk_free_rate: float) -> None:
    """Recompute the agent's headline entry from its backtest entry and its forward bars.

    Sharpe is the lower of the in-sample and the forward Sharpe (null unless both exist);
    every other metric is forward only. Without a backtest entry there is no headline entry.
    """
    in_sample = repository.entry(session, BoardType.BACKTEST, agent_id)
    if in_sample is None:
        return
    bars = repository.forward_bars(session, agent_id)
    fwd = forward_metrics(bars, in_sample.n_trials, risk_free_rate)
    sharpe = None
    if in_sample.sharpe is not None and fwd.sharpe is not None:
        sharpe = min(in_sample.sharpe, fwd.sharpe)
    evaluated = in_sample.evaluated_at
    repository.upsert(
        session,
        {
            "board_type": BoardType.HEADLINE.value,
            "timeframe": ALL_TIME,
            "agent_id": agent_id,
            "user_id": in_sample.user_id,
            "session_id": in_sample.session_id,
            "evaluated_at": max(evaluated, fwd.last_at) if fwd.last_at else evaluated,
            "returns": fwd.returns,
            "sharpe": sharpe,
            "sortino": fwd.sortino,
            "calmar": fwd.calmar,
            "max_drawdown": fwd.max_drawdown,
            "win_rate": None,
            "total_pnl": fwd.total_pnl,
            "total_trades": None,
            "probabilistic_sharpe": fwd.probabilistic_sharpe,
            "deflated_sharpe": fwd.deflated_sharpe,
            "n_trials": in_sample.n_trials,
            "updated_at": utcnow(),
            "in_sample_sharpe": in_sample.sharpe,
            "forward_sharpe": fwd.sharpe,
            "forward_bars": fwd.bars,
            "first_forward_at": fwd.first_at,
            "last_forward_at": fwd.last_at,
        },
    )


class LeaderboardService:
    """Serves boards from the cache (pre-encoded bytes) and keeps it written through.

    ``min_forward_bars``: forward bars an agent needs before the headline board ranks it;
    until then it is listed after every ranked agent as awaiting forward results.
    """

    def __init__(
        self, db: Database, cache: LeaderboardCache, bus: EventBus, *, min_forward_bars: int
    ) -> None:
        self._db = db
        self.cache = cache
        self._min_forward_bars = min_forward_bars
        bus.subscribe(BACKTEST_COMPLETED, self.on_backtest_completed)
        bus.subscribe(FORWARD_RECORDED, self.on_forward_recorded)
        bus.subscribe(AGENT_DELETED, self.on_agent_deleted)

    @classmethod
    def open(cls, db: Database, bus: EventBus, settings: Settings) -> LeaderboardService:
        """The service with the cache and rules ``settings`` choose."""
        n = settings.leaderboard_min_forward_bars
        cache = open_leaderboard_cache(
            settings.redis_url,
            rules=f"n{n}",
            ttl_s=settings.leaderboard_cache_ttl_s,
            cluster=settings.redis_cluster,
        )
        return cls(db, cache, bus, min_forward_bars=n)

    def page(self, board: Board, metric: Metric, limit: int) -> bytes:
        """The ``GET /api/leaderboard`` body: from the cache, or from SQL when it is down."""
        load = _CountedLoad(self.load)
        try:
            page = self.cache.page(board, metric, limit, load)
            load.count()
        except CacheUnavailable:
            LEADERBOARD_CACHE.labels("unavailable").inc()
            return render_page(
                board.type, self._sql_page(board, metric, limit), now_iso(), "database"
            )
        return render_page(board.type, page.rows, page.updated_at, "cache")

    def _sql_page(self, board: Board, metric: Metric, limit: int) -> bytes:
        n, since = self._min_forward_bars, _since(board)
        with self._db.transaction() as session:
            rows = repository.ranked_page(
                session, board.type, _stored(board), since, metric, limit, n
            )
            ranked = [self._ranked(row) for row in rows]
            waiting = []
            if board.type is BoardType.HEADLINE:
                found = repository.awaiting_page(session, since, limit - len(ranked), n)
                waiting = [self._ranked(row) for row in found]
        parts = [
            render_row(i, metric, r.scores[metric], r.details) for i, r in enumerate(ranked, 1)
        ]
        parts += [render_awaiting(metric, r.details) for r in waiting]
        return b",".join(parts)

    def rank(self, board: Board, metric: Metric, agent_id: str) -> RankOut:
        """Where an agent stands on a board (rank null while it awaits forward results); 404
        if the board does not list it."""
        source = "cache"
        load = _CountedLoad(self.load)
        try:
            hit = self.cache.rank(board, metric, agent_id, load)
            load.count()
        except CacheUnavailable:
            LEADERBOARD_CACHE.labels("unavailable").inc()
            source = "database"
            with self._db.transaction() as session:
                found = repository.rank_of(
                    session,
                    board.type,
                    _stored(board),
                    _since(board),
                    metric,
                    agent_id,
                    self._min_forward_bars,
                )
            hit = None if found is None else RankHit(*found)
        if hit is None:
            raise NotFound(
                f"agent {agent_id} is not listed on the {board.type}/{metric}/{board.timeframe} "
                "board (unknown, deleted, or without a ranked result in that timeframe)"
            )
        return RankOut(
            agent_id=agent_id,
            status=RowStatus.AWAITING_FORWARD if hit.rank is None else RowStatus.RANKED,
            rank=hit.rank,
            score=hit.score,
            total=hit.total,
            type=board.type,
            in_sample=board.type.in_sample,
            metric_type=metric,
            timeframe=board.timeframe,
            source=source,
        )

    def row(self, board: Board, metric: Metric, agent_id: str) -> bytes:
        """One agent's row on a board, as a page of that board lists it; 404 if it is not
        listed. Reads the agent's own entry, never the board."""
        place = self.rank(board, metric, agent_id)
        with self._db.transaction() as session:
            entries = [
                self._ranked(row)
                for row in repository.agent_rows(session, agent_id)
                if row.entry.board_type == board.type.value
                and row.entry.timeframe == _stored(board)
            ]
        if not entries:  # deleted since the cache answered
            raise NotFound(f"agent {agent_id} is not listed on the {board.type} board")
        if place.rank is None:
            return render_awaiting(metric, entries[0].details)
        return render_row(place.rank, metric, entries[0].scores[metric], entries[0].details)

    def load(self, board: Board) -> list[Ranked]:
        """Every entry of a board from SQL: what the cache rebuilds from."""
        with self._db.transaction() as session:
            rows = repository.board_rows(session, board.type, _stored(board), _since(board))
            return [self._ranked(row) for row in rows]

    def on_backtest_completed(self, event: Event) -> None:
        """Write a new standard evaluation (and the headline entry it changed) through."""
        if event.get("kind") == STANDARD:
            self._write_through(event["agentId"])

    def on_forward_recorded(self, event: Event) -> None:
        """Write an agent's refreshed headline entry through to the cache."""
        self._write_through(event["agentId"])

    def _write_through(self, agent_id: str) -> None:
        with self._db.transaction() as session:
            entries = [self._ranked(row) for row in repository.agent_rows(session, agent_id)]
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

    def _ranked(self, row: BoardRow) -> Ranked:
        """The cache's entry for a row. A row that must not be listed (non-finite, bankrupt)
        gets no scores, so it leaves every ranking; one awaiting forward results is marked."""
        entry = row.entry
        listable = repository.listable(entry)
        awaiting = listable and _short_of_forward(entry, self._min_forward_bars)
        scores: dict[Metric, float] = {}
        if listable and not awaiting:
            scores = {m: v for m in METRICS if (v := getattr(entry, m.value)) is not None}
        return Ranked(
            agent_id=entry.agent_id,
            submitted_at=row.submitted_at,
            evaluated_at=entry.evaluated_at,
            boards=_boards(row),
            scores=scores,
            details=_details(row, RowStatus.AWAITING_FORWARD if awaiting else RowStatus.RANKED)
            if listable
            else b"",  # never shown
            awaiting=awaiting,
        )


class _CountedLoad:
    """The loader handed to one cache read; ``count`` records it in /metrics as a miss if the
    cache called it (a cold board rebuilt from SQL), else as a hit."""

    def __init__(self, load: Callable[[Board], list[Ranked]]) -> None:
        self._load = load
        self._called = False

    def __call__(self, board: Board) -> list[Ranked]:
        self._called = True
        return self._load(board)

    def count(self) -> None:
        LEADERBOARD_CACHE.labels("miss" if self._called else "hit").inc()


def _short_of_forward(entry: LeaderboardEntry, min_forward_bars: int) -> bool:
    headline = entry.board_type == BoardType.HEADLINE.value
    return headline and (entry.forward_bars or 0) < min_forward_bars


def _number(value: object) -> float | None:
    """A finite float, or None (missing, NaN and infinite values are not ranked)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _stored(board: Board) -> str:
    """The ``timeframe`` column holding a board's entries."""
    return board.timeframe.value if board.type is BoardType.PAPER_TRADING else ALL_TIME


def _since(board: Board) -> datetime | None:
    window = board.timeframe.window
    return None if window is None else datetime.now(UTC) - window


def _boards(row: BoardRow) -> tuple[Board, ...]:
    board_type = BoardType(row.entry.board_type)
    if board_type is BoardType.PAPER_TRADING:
        return (Board(board_type, Timeframe(row.entry.timeframe)),)
    return tuple(Board(board_type, tf) for tf in Timeframe)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _details(row: BoardRow, status: RowStatus) -> bytes:
    """The row's JSON members but ``rank``, ``metric`` and ``metricType`` (no braces)."""
    entry = row.entry
    details = {
        "status": status.value,
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
        "inSampleSharpe": entry.in_sample_sharpe,
        "forwardSharpe": entry.forward_sharpe,
        "forwardBars": entry.forward_bars,
        "firstForwardAt": _iso(entry.first_forward_at),
        "lastForwardAt": _iso(entry.last_forward_at),
    }
    encoded = json.dumps(details, separators=(",", ":"), allow_nan=False).encode()
    return encoded[1:-1]
