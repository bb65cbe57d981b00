"""DuckDB queries over the FMEL Parquet dataset.

Every query reads an explicit list of part files of the agents being asked for (so owner
isolation is also a path restriction), and every value comes in as a DuckDB parameter. The SQL
text is assembled only from constant fragments of this module.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from farm.fmel.layout import micros, part_files, part_span
from farm.fmel.records import DECISION_SCHEMA, KINDS, decision_id
from farm.fmel.store import FmelStore

SOURCE: Final = "read_parquet(?, hive_partitioning = true)"
DECISION_COLUMNS: Final = ", ".join(DECISION_SCHEMA.names)
NEWEST_FIRST: Final = "bar_ts DESC, session_id DESC, seq DESC"
BUCKET: Final = "least(floor(confidence * 10), 9)::INTEGER"
DECILES: Final = [round(0.1 * i, 1) for i in range(1, 10)]
MOST_READ_LIMIT: Final = 10
EXPORT_BATCH_ROWS: Final = 2000
ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"
TERM: Final = re.compile(r"[a-z0-9]+")
ACTIONS: Final = ("buy", "sell", "hold", "mixed")
MAX_TERMS: Final = 10

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """Which decisions: of these agents, optionally one session, bar-time window, action, symbol.

    ``start``/``end`` bound the bar time (``start <= bar_ts < end``); ``since`` bounds the wall
    time (when the decision was recorded). ``symbol`` matches decisions that ordered or read it.
    """

    agent_ids: Sequence[str]
    session_id: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    action: str | None = None
    symbol: str | None = None
    since: datetime | None = None

    def files(self, store: FmelStore, kind: str = "decisions") -> list[str]:
        """The part files of ``kind`` this query reads."""
        return part_files(store.root, list(self.agent_ids), kind, self.session_id, store.listings)

    def where(self) -> tuple[str, list[object]]:
        """The WHERE clause over decision columns and its parameters."""
        clauses = ["TRUE"]
        params: list[object] = []
        for clause, value in (
            ("bar_ts >= ?", self.start),
            ("bar_ts < ?", self.end),
            ("action = ?", self.action),
            ("list_contains(symbols, ?)", self.symbol),
            ("wall_ts >= ?", self.since),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return " AND ".join(clauses), params


def _rows(cursor: duckdb.DuckDBPyConnection) -> list[Row]:
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _scalar_row(cursor: duckdb.DuckDBPyConnection) -> Row:
    rows = _rows(cursor)
    return rows[0]


def list_decisions(
    store: FmelStore, query: DecisionQuery, *, limit: int, offset: int
) -> tuple[list[Row], int]:
    """A page of decisions, newest bar first, and how many match in all.

    Two phases: the page's keys from the fewest parts that can hold them (parts are taken
    newest first by the bar-time span in their names), then the full rows of those keys only.
    """
    files = query.files(store)
    if not files:
        return [], 0
    where, params = query.where()
    with store.cursor() as cur:
        total = _count(store, cur, query, files)
        keys = _newest_keys(cur, files, where, params, limit + offset)[offset:]
        if not keys:
            return [], total
        wanted = [decision_id(k["session_id"], k["seq"]) for k in keys]
        sessions = {f"session={k['session_id']}" for k in keys}
        holding = [f for f in files if f.rsplit("/", 2)[-2] in sessions]
        cur.execute(
            f"SELECT {DECISION_COLUMNS} FROM {SOURCE} "  # noqa: S608
            "WHERE bar_ts >= ? AND list_contains(?, decision_id)",
            [holding, keys[-1]["bar_ts"], wanted],
        )
        by_id = {r["decision_id"]: r for r in _rows(cur)}
    return [by_id[d] for d in wanted], total


def _count(
    store: FmelStore, cur: duckdb.DuckDBPyConnection, query: DecisionQuery, files: list[str]
) -> int:
    """How many decisions of ``files`` match ``query``.

    Without an action, symbol or wall-time filter, a part whose bar-time span lies wholly inside
    the window counts its footer's rows and one wholly outside counts none; the rest are scanned.
    """
    unbounded = 2**63
    start = micros(query.start) if query.start else -unbounded
    end = micros(query.end) if query.end else unbounded
    total = 0
    scanned = []
    for f in files:
        span = part_span(f)
        if span is None or query.action or query.symbol or query.since:
            scanned.append(f)
        elif start <= span[0] and span[1] < end:
            total += store.rows(f)
        elif span[1] >= start and span[0] < end:
            scanned.append(f)
    if scanned:
        where, params = query.where()
        cur.execute(f"SELECT count(*) AS n FROM {SOURCE} WHERE {where}", [scanned, *params])  # noqa: S608
        total += int(_scalar_row(cur)["n"])
    return total


def _newest_keys(
    cur: duckdb.DuckDBPyConnection, files: list[str], where: str, params: list[object], count: int
) -> list[Row]:
    """The keys of the ``count`` newest matching decisions, reading as few parts as possible."""
    unbounded = 2**63
    spans = {f: part_span(f) or (-unbounded, unbounded) for f in files}
    ordered = sorted(files, key=lambda f: spans[f][1], reverse=True)
    taken = 1
    while True:
        chosen = ordered[:taken]
        cur.execute(
            f"SELECT session_id, seq, bar_ts FROM {SOURCE} WHERE {where} "  # noqa: S608
            f"ORDER BY {NEWEST_FIRST} LIMIT ?",
            [chosen, *params, count],
        )
        keys = _rows(cur)
        if taken == len(ordered):
            return keys
        if len(keys) < count:
            taken = min(len(ordered), taken * 4)
            continue
        oldest = micros(keys[-1]["bar_ts"])
        needed = sum(1 for f in ordered if spans[f][1] >= oldest)
        if needed <= taken:
            return keys
        taken = needed


def get_decision(
    store: FmelStore, agent_id: str, session_id: str, seq: int
) -> tuple[Row, list[Row], list[Row]] | None:
    """One decision, the executions of its orders and the trades it opened or closed."""
    query = DecisionQuery([agent_id], session_id)
    files = query.files(store)
    if not files:
        return None
    with store.cursor() as cur:
        cur.execute(
            f"SELECT {DECISION_COLUMNS} FROM {SOURCE} WHERE seq = ?",  # noqa: S608
            [files, seq],
        )
        found = _rows(cur)
        if not found:
            return None
        executions: list[Row] = []
        trades: list[Row] = []
        if execution_files := query.files(store, "executions"):
            cur.execute(
                f"SELECT * EXCLUDE (agent, session) FROM {SOURCE} WHERE seq = ? "  # noqa: S608
                "ORDER BY ts, wall_ts",
                [execution_files, seq],
            )
            executions = _rows(cur)
        if trade_files := query.files(store, "trades"):
            cur.execute(
                f"SELECT * EXCLUDE (agent, session) FROM {SOURCE} "  # noqa: S608
                "WHERE opened_by_seq = ? OR closed_by_seq = ? ORDER BY exit_ts, trade_id",
                [trade_files, seq, seq],
            )
            trades = _rows(cur)
    return found[0], executions, trades


def analytics(store: FmelStore, query: DecisionQuery) -> Row:
    """Counts, confidence distribution and calibration, trade outcomes, reads, daily actions."""
    files = query.files(store)
    trade_files = query.files(store, "trades")
    where, params = query.where()
    result: Row = {
        "total": 0,
        "buy": 0,
        "sell": 0,
        "hold": 0,
        "mixed": 0,
        "average_confidence": None,
        "deciles": None,
        "histogram": {},
        "trades": {"total": 0, "won": 0, "average_pnl": None, "total_pnl": None},
        "calibration": {},
        "most_read": [],
        "daily": [],
    }
    with store.cursor() as cur:
        if files:
            cur.execute(
                "SELECT count(*) AS total, "
                + "".join(f"count(*) FILTER (WHERE action = '{a}') AS {a}, " for a in ACTIONS)
                + "avg(confidence) AS average_confidence, "
                "quantile_cont(confidence, ?) AS deciles, "
                f"histogram({BUCKET}) FILTER (WHERE confidence IS NOT NULL) AS histogram "
                f"FROM {SOURCE} WHERE {where}",
                [DECILES, files, *params],
            )
            row = _scalar_row(cur)
            result.update(row, histogram=row["histogram"] or {})
            cur.execute(
                "SELECT bar_ts::DATE AS day, count(*) AS total, "  # noqa: S608
                + ", ".join(f"count(*) FILTER (WHERE action = '{a}') AS {a}" for a in ACTIONS)
                + f" FROM {SOURCE} WHERE {where} GROUP BY day ORDER BY day",
                [files, *params],
            )
            result["daily"] = _rows(cur)
            cur.execute(
                "SELECT a.symbol AS symbol, a.field AS field, count(*) AS reads "  # noqa: S608
                f"FROM (SELECT unnest(data_accesses) AS a FROM {SOURCE} WHERE {where}) "
                "GROUP BY ALL ORDER BY reads DESC, symbol, field LIMIT ?",
                [files, *params, MOST_READ_LIMIT],
            )
            result["most_read"] = _rows(cur)
        if trade_files:
            since = "wall_ts >= ?" if query.since else "TRUE"
            since_params = [query.since] if query.since else []
            cur.execute(
                "SELECT count(*) AS total, count(*) FILTER (WHERE pnl_net > 0) AS won, "  # noqa: S608
                "avg(pnl_net) AS average_pnl, sum(pnl_net) AS total_pnl "
                f"FROM {SOURCE} WHERE {since}",
                [trade_files, *since_params],
            )
            result["trades"] = _scalar_row(cur)
        if files and trade_files:
            cur.execute(
                f"SELECT {BUCKET} AS bucket, count(*) AS trades, "  # noqa: S608
                "count(*) FILTER (WHERE t.pnl_net > 0) AS won, avg(t.pnl_net) AS average_pnl "
                f"FROM (SELECT * FROM {SOURCE} WHERE {since}) AS t "
                f"JOIN (SELECT session_id, seq, confidence FROM {SOURCE} WHERE {where}) AS d "
                "ON d.session_id = t.session_id AND d.seq = t.opened_by_seq "
                "WHERE confidence IS NOT NULL GROUP BY bucket",
                [trade_files, *since_params, files, *params],
            )
            result["calibration"] = {r["bucket"]: r for r in _rows(cur)}
    return result


def search_terms(text: str) -> list[str]:
    """The distinct lower-case words of a search query (at most ``MAX_TERMS``)."""
    return list(dict.fromkeys(TERM.findall(text.lower())))[:MAX_TERMS]


def search(
    store: FmelStore, query: DecisionQuery, terms: Sequence[str], *, limit: int, offset: int
) -> tuple[list[Row], int]:
    """Decisions whose reasoning contains any of ``terms`` (as word prefixes), best first.

    Score: the sum over terms of ``tf / (tf + 1)``, ``tf`` being how many words of the reasoning
    start with the term; so matching more distinct terms counts more than repeating one.
    Ties go newest first. An ``ILIKE`` prefilter keeps the scoring to candidate rows.
    """
    files = query.files(store)
    if not files or not terms:
        return [], 0
    where, params = query.where()
    prefilter = " OR ".join("reasoning ILIKE ?" for _ in terms)
    likes = [f"%{t}%" for t in terms]
    tf = ["len(regexp_extract_all(lower(reasoning), ?))" for _ in terms]
    score = " + ".join(f"({x}) / (({x}) + 1.0)" for x in tf)
    patterns = [p for t in terms for p in (rf"\b{t}", rf"\b{t}")]
    candidates = f"FROM {SOURCE} WHERE {where} AND ({prefilter})"
    with store.cursor() as cur:
        cur.execute(
            f"SELECT * FROM (SELECT {DECISION_COLUMNS}, {score} AS score {candidates}) "  # noqa: S608
            f"WHERE score > 0 ORDER BY score DESC, {NEWEST_FIRST} LIMIT ? OFFSET ?",
            [*patterns, files, *params, *likes, limit, offset],
        )
        rows = _rows(cur)
        cur.execute(
            f"SELECT count(*) AS n FROM (SELECT {score} AS score {candidates}) "  # noqa: S608
            "WHERE score > 0",
            [*patterns, files, *params, *likes],
        )
        total = int(_scalar_row(cur)["n"])
    return rows, total


EXPORT_FORMATS: Final = {
    "parquet": ("application/vnd.apache.parquet", "parquet"),
    "csv": ("text/csv; charset=utf-8", "csv"),
    "jsonl": ("application/x-ndjson", "jsonl"),
}


def export(
    store: FmelStore, agent_id: str, session_id: str | None, kind: str, fmt: str
) -> Iterator[bytes]:
    """The stored records of ``kind`` as a stream of bytes in ``fmt``, batch by batch.

    Rows come in storage order (sessions, then parts, then as recorded). Parquet keeps the
    stored schema; CSV and JSON Lines write times as ISO 8601 UTC and CSV nested columns as JSON.
    """
    schema: pa.Schema = KINDS[kind]
    files = part_files(store.root, [agent_id], kind, session_id)
    sink = _Drain()
    if fmt == "parquet":
        writer: Any = pq.ParquetWriter(sink, schema, compression="zstd")
    elif fmt == "csv":
        text = pa.schema([pa.field(f.name, pa.string()) for f in schema])
        writer = pa_csv.CSVWriter(sink, text)
    else:
        writer = None
    try:
        if files:
            with store.cursor() as cur:
                relation = cur.sql(_export_sql(schema, fmt), params=[files])
                for batch in relation.to_arrow_reader(EXPORT_BATCH_ROWS):
                    if writer is None:
                        sink.write("".join(f"{line}\n" for line in batch.column(0).to_pylist()))
                    else:
                        writer.write_batch(batch)
                    yield sink.take()
    finally:
        if writer is not None:
            writer.close()
    yield sink.take()


def _export_sql(schema: pa.Schema, fmt: str) -> str:
    columns = []
    for field in schema:
        name = field.name
        if fmt == "parquet":
            columns.append(name)
        elif pa.types.is_timestamp(field.type):
            columns.append(f"strftime({name}, '{ISO_FORMAT}') AS {name}")
        elif fmt == "csv" and pa.types.is_nested(field.type):
            columns.append(f"to_json({name})::VARCHAR AS {name}")
        elif fmt == "csv":
            columns.append(f"{name}::VARCHAR AS {name}")
        else:
            columns.append(name)
    select = f"SELECT {', '.join(columns)} FROM {SOURCE}"  # noqa: S608
    if fmt == "jsonl":
        return f"SELECT to_json(x)::VARCHAR FROM ({select}) AS x"  # noqa: S608
    return select


class _Drain(io.RawIOBase):
    """A write-only sink that hands its bytes over as they come (position kept for Parquet)."""

    def __init__(self) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        self._chunks.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def take(self) -> bytes:
        """The bytes written since the last call."""
        chunk = b"".join(self._chunks)
        self._chunks.clear()
        return chunk
