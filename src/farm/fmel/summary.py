"""Per-session analytics summaries: mergeable aggregates written when a recorder closes.

``_summary.json`` in a session folder holds the aggregates behind ``analytics`` (action counts,
the confidence values with their counts, daily action counts, field reads, trade outcomes and
P&L by confidence bucket) and names the part files they cover. Analytics merge summaries instead
of scanning decisions. A session without a summary, or whose parts are not exactly those its
summary covers, or that a wall-time window cuts through, is scanned with the same aggregates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import duckdb
import msgspec
import numpy as np
import numpy.typing as npt

from farm.fmel.layout import EPOCH, commit, micros

SOURCE: Final = "read_parquet(?, hive_partitioning = false)"
ACTIONS: Final = ("buy", "sell", "hold", "mixed")
BUCKETS: Final = 10
BUCKET: Final = f"least(floor(confidence * {BUCKETS}), {BUCKETS - 1})::INTEGER"
DECILES: Final = [round(0.1 * i, 1) for i in range(1, 10)]
MOST_READ_LIMIT: Final = 10
SUMMARY_NAME: Final = "_summary.json"
SUMMARY_VERSION: Final = 1
SUMMARIZED_KINDS: Final = ("decisions", "trades")
GRID: Final = np.linspace(0.0, 1.0, 1025)
"""Fine confidence grid: an order statistic is looked up only among the values of its cell."""

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]
Row = dict[str, Any]


@dataclass
class Aggregates:
    """Analytics aggregates of some decisions and trades; ``analytics`` adds them up exactly.

    ``values`` are the distinct confidences in order with their ``counts``; ``daily`` holds the
    buy/sell/hold/mixed counts of the days ``first_day`` (days since the epoch) onwards (in
    the narrowest unsigned type that holds them when read from a summary);
    ``calibration`` rows are trades, won, P&L sum per confidence bucket of the opening decision.
    """

    actions: Ints = field(default_factory=lambda: np.zeros(len(ACTIONS), np.int64))
    values: Floats = field(default_factory=lambda: np.zeros(0))
    counts: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    first_day: int = 0
    daily: Ints = field(default_factory=lambda: np.zeros((0, len(ACTIONS)), np.int64))
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    trades: tuple[int, int, float] = (0, 0, 0.0)
    calibration: Floats = field(default_factory=lambda: np.zeros((BUCKETS, 3)))

    @cached_property
    def cells(self) -> Ints:
        """Where each ``GRID`` cell starts in ``values`` (and the end)."""
        edges = np.searchsorted(self.values, GRID)
        edges[0], edges[-1] = 0, len(self.values)
        return edges

    @cached_property
    def cell_counts(self) -> Ints:
        """How many confidences fall in each ``GRID`` cell."""
        cumulative = np.concatenate([[0], np.cumsum(self.counts)])
        return np.diff(cumulative[self.cells])

    @cached_property
    def confidence_count(self) -> int:
        """How many decisions have a confidence."""
        return int(self.counts.sum())

    @cached_property
    def confidence_sum(self) -> float:
        """The sum of the confidences."""
        return float(np.dot(self.values, self.counts))

    @cached_property
    def histogram(self) -> Ints:
        """Confidence counts per bucket of 0.1 (the last one includes 1.0)."""
        buckets = np.minimum(np.floor(self.values * BUCKETS), BUCKETS - 1).astype(np.int64)
        return np.bincount(buckets, weights=self.counts, minlength=BUCKETS).astype(np.int64)

    def without(self, *, decisions: bool, trades: bool) -> Aggregates:
        """These aggregates with the decisions and/or the trades left out."""
        if not (decisions or trades):
            return self
        kept = Aggregates() if decisions else self
        return Aggregates(
            actions=kept.actions,
            values=kept.values,
            counts=kept.counts,
            first_day=kept.first_day,
            daily=kept.daily,
            reads=kept.reads,
            trades=(0, 0, 0.0) if trades else self.trades,
            calibration=np.zeros((BUCKETS, 3)) if decisions or trades else self.calibration,
        )


def scan(
    cur: duckdb.DuckDBPyConnection,
    decision_files: list[str],
    trade_files: list[str],
    where: str,
    params: list[object],
    since: datetime | None,
) -> Aggregates:
    """The aggregates of the matching decisions (``where``) and trades (``wall_ts >= since``)."""
    result = Aggregates()
    trade_where = "wall_ts >= ?" if since else "TRUE"
    trade_params: list[object] = [since] if since else []
    if decision_files:
        source = [decision_files, *params]
        cur.execute(
            "SELECT "  # noqa: S608
            + ", ".join(f"count(*) FILTER (WHERE action = '{a}')" for a in ACTIONS)
            + f" FROM {SOURCE} WHERE {where}",
            source,
        )
        result.actions = np.array(cur.fetchall()[0], np.int64)
        cur.execute(
            f"SELECT confidence, count(*) AS n FROM {SOURCE} "  # noqa: S608
            f"WHERE {where} AND confidence IS NOT NULL GROUP BY confidence ORDER BY confidence",
            source,
        )
        found = cur.fetchnumpy()
        result.values = np.asarray(found["confidence"], np.float64)
        result.counts = np.asarray(found["n"], np.int64)
        cur.execute(
            "SELECT (bar_ts::DATE - DATE '1970-01-01')::BIGINT AS day, "  # noqa: S608
            + ", ".join(f"count(*) FILTER (WHERE action = '{a}') AS {a}" for a in ACTIONS)
            + f" FROM {SOURCE} WHERE {where} GROUP BY day ORDER BY day",
            source,
        )
        days = cur.fetchnumpy()
        result.first_day, result.daily = _dense(
            np.asarray(days["day"], np.int64),
            np.stack([np.asarray(days[a], np.int64) for a in ACTIONS], axis=1),
        )
        cur.execute(
            "SELECT a.symbol, a.field, count(*) FROM "  # noqa: S608
            f"(SELECT unnest(data_accesses) AS a FROM {SOURCE} WHERE {where}) GROUP BY ALL",
            source,
        )
        result.reads = Counter({(s, f): n for s, f, n in cur.fetchall()})
    if trade_files:
        cur.execute(
            "SELECT count(*), count(*) FILTER (WHERE pnl_net > 0), coalesce(sum(pnl_net), 0) "  # noqa: S608
            f"FROM {SOURCE} WHERE {trade_where}",
            [trade_files, *trade_params],
        )
        total, won, pnl = cur.fetchall()[0]
        result.trades = (int(total), int(won), float(pnl))
    if decision_files and trade_files:
        cur.execute(
            f"SELECT {BUCKET} AS bucket, count(*), "  # noqa: S608
            "count(*) FILTER (WHERE t.pnl_net > 0), sum(t.pnl_net) "
            f"FROM (SELECT * FROM {SOURCE} WHERE {trade_where}) AS t "
            f"JOIN (SELECT session_id, seq, confidence FROM {SOURCE} WHERE {where}) AS d "
            "ON d.session_id = t.session_id AND d.seq = t.opened_by_seq "
            "WHERE confidence IS NOT NULL GROUP BY bucket",
            [trade_files, *trade_params, decision_files, *params],
        )
        for bucket, trades, won, pnl in cur.fetchall():
            result.calibration[bucket] = (trades, won, pnl)
    return result


def _added(parts: Sequence[Aggregates]) -> Aggregates:
    """Counts, daily counts, reads, trades and calibration of ``parts`` added up.

    The confidence values are left out: ``analytics`` takes them from each part.
    """
    if len(parts) == 1:
        return parts[0]
    result = Aggregates()
    reads: Counter[tuple[str, str]] = Counter()
    with_days = [p for p in parts if len(p.daily)]
    if with_days:
        first = min(p.first_day for p in with_days)
        last = max(p.first_day + len(p.daily) for p in with_days)
        result.first_day, result.daily = first, np.zeros((last - first, len(ACTIONS)), np.int64)
    total, won, pnl = 0, 0, 0.0
    for p in parts:
        result.actions += p.actions
        if len(p.daily):
            result.daily[p.first_day - result.first_day :][: len(p.daily)] += p.daily
        reads.update(p.reads)
        total, won, pnl = total + p.trades[0], won + p.trades[1], pnl + p.trades[2]
        result.calibration += p.calibration
    result.reads, result.trades = reads, (total, won, pnl)
    return result


def analytics(parts: Sequence[Aggregates]) -> Row:
    """The analytics answer of ``parts`` taken together (see ``queries.analytics``)."""
    merged = _added(parts) if parts else Aggregates()
    confident = [p for p in parts if len(p.values)]
    n = sum(p.confidence_count for p in confident)
    histogram = sum((p.histogram for p in confident), np.zeros(BUCKETS, np.int64))
    total, won, pnl = merged.trades
    top = sorted(merged.reads.items(), key=lambda r: (-r[1], r[0]))[:MOST_READ_LIMIT]
    return {
        "total": int(merged.actions.sum()),
        **{a: int(c) for a, c in zip(ACTIONS, merged.actions, strict=True)},
        "average_confidence": (sum(p.confidence_sum for p in confident) / n if n else None),
        "deciles": _deciles(confident, n) if n else None,
        "histogram": {b: int(c) for b, c in enumerate(histogram) if c},
        "trades": {
            "total": total,
            "won": won,
            "average_pnl": pnl / total if total else None,
            "total_pnl": pnl if total else None,
        },
        "calibration": {
            b: {"bucket": b, "trades": int(t), "won": int(w), "average_pnl": s / t}
            for b, (t, w, s) in enumerate(merged.calibration)
            if t
        },
        "most_read": [{"symbol": s, "field": f, "reads": c} for (s, f), c in top],
        "daily": [
            {"day": _day(merged.first_day + i), "total": sum(row)}
            | dict(zip(ACTIONS, row, strict=True))
            for i, row in enumerate(merged.daily.tolist())
            if any(row)
        ],
    }


def _deciles(parts: list[Aggregates], n: int) -> list[float]:
    """``quantile_cont`` at ``DECILES`` (as DuckDB computes it) over the parts' confidences."""
    positions = [(n - 1) * q for q in DECILES]
    ranks = sorted({r for p in positions for r in (int(np.floor(p)), int(np.ceil(p)))})
    value = _order_statistics(parts, ranks)
    result = []
    for position in positions:
        lo, hi = value[int(np.floor(position))], value[int(np.ceil(position))]
        result.append(lo if lo == hi else lo + (hi - lo) * (position - np.floor(position)))
    return result


def _order_statistics(parts: list[Aggregates], ranks: list[int]) -> dict[int, float]:
    """The ``rank``-th smallest confidence (from 0) for each of ``ranks``.

    The grid cells' counts locate each rank's cell; only that cell's values are sorted.
    """
    starts = np.concatenate([[0], np.cumsum(np.sum([p.cell_counts for p in parts], axis=0))])
    cells = (np.searchsorted(starts, ranks, side="right") - 1).tolist()
    result: dict[int, float] = {}
    for cell in set(cells):
        values = np.concatenate([p.values[p.cells[cell] : p.cells[cell + 1]] for p in parts])
        counts = np.concatenate([p.counts[p.cells[cell] : p.cells[cell + 1]] for p in parts])
        order = np.argsort(values, kind="stable")
        ends = np.cumsum(counts[order])
        for rank in (r for r, c in zip(ranks, cells, strict=True) if c == cell):
            index = np.searchsorted(ends, rank - starts[cell], side="right")
            result[rank] = float(values[order[index]])
    return result


def _dense(days: Ints, counts: Ints) -> tuple[int, Ints]:
    if not len(days):
        return 0, np.zeros((0, len(ACTIONS)), np.int64)
    dense = np.zeros((int(days[-1] - days[0]) + 1, len(ACTIONS)), np.int64)
    dense[days - days[0]] = counts
    return int(days[0]), dense


def _day(number: int) -> date:
    return (EPOCH + timedelta(days=number)).date()


class SummaryFile(msgspec.Struct, frozen=True, kw_only=True):
    """The stored form of a session's summary (``_summary.json``)."""

    version: int
    parts: list[str]
    decision_wall: tuple[int, int] | None
    trade_wall: tuple[int, int] | None
    actions: list[int]
    confidence: list[float]
    confidence_counts: list[int]
    days: list[int]
    daily: dict[str, list[int]]
    reads: list[tuple[str, str, int]]
    trades: tuple[int, int, float]
    calibration: list[tuple[int, int, float]]


@dataclass(frozen=True)
class Summary:
    """A session's aggregates, the part files they cover and the wall-time span of its records."""

    parts: frozenset[str]
    decision_wall: tuple[int, int] | None
    trade_wall: tuple[int, int] | None
    aggregates: Aggregates

    def within(self, since: datetime | None) -> Aggregates | None:
        """The aggregates of the records with ``wall_ts >= since``; None if only some are."""
        if since is None:
            return self.aggregates
        decisions, trades = (
            _cut(span, micros(since)) for span in (self.decision_wall, self.trade_wall)
        )
        if decisions is None or trades is None:
            return None
        return self.aggregates.without(decisions=not decisions, trades=not trades)


def _cut(span: tuple[int, int] | None, since: int) -> bool | None:
    """True: every record is at or after ``since``; False: none is; None: some are."""
    if span is None or span[0] >= since:
        return True
    return False if span[1] < since else None


def summarize(cur: duckdb.DuckDBPyConnection, folder: Path, parts: Sequence[str]) -> Summary:
    """The summary of the session parts named ``parts`` (decisions and trades) in ``folder``."""
    files = {k: [str(folder / p) for p in parts if p.startswith(f"{k}-")] for k in SUMMARIZED_KINDS}
    spans: dict[str, tuple[int, int] | None] = {}
    for kind, paths in files.items():
        spans[kind] = None
        if paths:
            cur.execute(f"SELECT min(wall_ts), max(wall_ts) FROM {SOURCE}", [paths])  # noqa: S608
            low, high = cur.fetchall()[0]
            spans[kind] = (micros(low), micros(high)) if low is not None else None
    return Summary(
        frozenset(parts),
        spans["decisions"],
        spans["trades"],
        scan(cur, files["decisions"], files["trades"], "TRUE", [], None),
    )


def write_summary(folder: Path, summary: Summary) -> None:
    """Commit ``summary`` as the session's ``_summary.json`` (atomically)."""
    a = summary.aggregates
    active = np.flatnonzero(a.daily.any(axis=1))
    stored = SummaryFile(
        version=SUMMARY_VERSION,
        parts=sorted(summary.parts),
        decision_wall=summary.decision_wall,
        trade_wall=summary.trade_wall,
        actions=a.actions.tolist(),
        confidence=a.values.tolist(),
        confidence_counts=a.counts.tolist(),
        days=(active + a.first_day).tolist(),
        daily={action: a.daily[active, i].tolist() for i, action in enumerate(ACTIONS)},
        reads=[(s, f, n) for (s, f), n in sorted(a.reads.items())],
        trades=a.trades,
        calibration=[(int(t), int(w), float(s)) for t, w, s in a.calibration],
    )
    data = msgspec.json.encode(stored)
    commit(folder, SUMMARY_NAME, lambda path: path.write_bytes(data))


def read_summary(data: bytes) -> Summary | None:
    """The summary stored as ``data``; None if it is malformed or of another version."""
    try:
        stored = msgspec.json.decode(data, type=SummaryFile)
        if stored.version != SUMMARY_VERSION:
            return None
        first_day, daily = _dense(
            np.array(stored.days, np.int64),
            np.stack([np.array(stored.daily[a], np.int64) for a in ACTIONS], axis=1),
        )
        daily = daily.astype(np.min_scalar_type(int(daily.max(initial=0))))  # held in memory
        if len(stored.confidence) != len(stored.confidence_counts):
            return None
        aggregates = Aggregates(
            actions=np.array(stored.actions, np.int64).reshape(len(ACTIONS)),
            values=np.array(stored.confidence, np.float64),
            counts=np.array(stored.confidence_counts, np.int64),
            first_day=first_day,
            daily=daily,
            reads=Counter({(s, f): n for s, f, n in stored.reads}),
            trades=stored.trades,
            calibration=np.array(stored.calibration, np.float64).reshape(BUCKETS, 3),
        )
    except (OSError, msgspec.ValidationError, msgspec.DecodeError, KeyError, ValueError):
        return None
    return Summary(frozenset(stored.parts), stored.decision_wall, stored.trade_wall, aggregates)
