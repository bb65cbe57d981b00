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
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from farm.fmel.layout import CAPPED_NAME, micros, part_files, part_names, part_span, session_folders
from farm.fmel.records import DECISION_SCHEMA, KINDS, decision_id
from farm.fmel.store import FmelStore
from farm.fmel.summary import SOURCE, SUMMARIZED_KINDS, Aggregates, scan
from farm.fmel.summary import analytics as summary_analytics
from farm.storage.objects import Root

DECISION_COLUMNS: Final = ", ".join(DECISION_SCHEMA.names)
NEWEST_FIRST: Final = "bar_ts DESC, session_id DESC, seq DESC"
UNBOUNDED: Final = 2**63
EXPORT_BATCH_ROWS: Final = 2000
EXPORT_BATCH_BYTES: Final = 1024 * 1024
"""Decoded bytes of stored rows per export batch (fewer rows when they are wide)."""
EXPORT_READ_BUFFER: Final = 1024 * 1024
ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
"""Arrow's ``%S`` of a microsecond timestamp has six decimals: 2024-01-31T15:30:00.000000Z."""
TERM: Final = re.compile(r"[a-z0-9]+")
MAX_TERMS: Final = 10

Row = dict[str, Any]
_JSON: Final = msgspec.json.Encoder()


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
        return part_files(store.root, list(self.agent_ids), kind, self.session_id)

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
    spans = {f: part_span(f) for f in files}
    with store.cursor() as cur:
        total = _count(store, cur, query, spans)
        keys = _newest_keys(cur, spans, query, limit + offset)[offset:]
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


Spans = dict[str, tuple[int, int] | None]
"""Part files and the bar-time spans their names declare."""


def _count(
    store: FmelStore, cur: duckdb.DuckDBPyConnection, query: DecisionQuery, spans: Spans
) -> int:
    """How many decisions of these parts match ``query``.

    Without an action, symbol or wall-time filter, a part whose bar-time span lies wholly inside
    the window counts its footer's rows and one wholly outside counts none; the rest are scanned.
    """
    start = micros(query.start) if query.start else -UNBOUNDED
    end = micros(query.end) if query.end else UNBOUNDED
    total = 0
    scanned = []
    for f, span in spans.items():
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
    cur: duckdb.DuckDBPyConnection, spans: Spans, query: DecisionQuery, count: int
) -> list[Row]:
    """The keys of the ``count`` newest matching decisions, reading as few parts as possible.

    Once ``count`` keys are found, the newest ``count`` overall are no older than the oldest of
    them: only parts reaching that far are read, and only their rows from then on.
    """
    where, params = query.where()
    newest = {f: span[1] if span else UNBOUNDED for f, span in spans.items()}
    ordered = sorted(newest, key=newest.__getitem__, reverse=True)
    taken = 1
    floor: list[datetime] = []
    while True:
        cur.execute(
            f"SELECT session_id, seq, bar_ts FROM {SOURCE} WHERE {where} "  # noqa: S608
            f"{'AND bar_ts >= ?' if floor else ''} ORDER BY {NEWEST_FIRST} LIMIT ?",
            [ordered[:taken], *params, *floor, count],
        )
        keys = _rows(cur)
        if taken == len(ordered):
            return keys
        if len(keys) < count:
            taken = min(len(ordered), taken * 4)
            continue
        floor = [keys[-1]["bar_ts"]]
        oldest = micros(floor[0])
        needed = sum(1 for f in ordered if newest[f] >= oldest)
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
                f"SELECT * FROM {SOURCE} WHERE seq = ? "  # noqa: S608
                "ORDER BY ts, wall_ts",
                [execution_files, seq],
            )
            executions = _rows(cur)
        if trade_files := query.files(store, "trades"):
            cur.execute(
                f"SELECT * FROM {SOURCE} "  # noqa: S608
                "WHERE opened_by_seq = ? OR closed_by_seq = ? ORDER BY exit_ts, trade_id",
                [trade_files, seq, seq],
            )
            trades = _rows(cur)
    return found[0], executions, trades


def analytics(store: FmelStore, query: DecisionQuery) -> Row:
    """Counts, confidence distribution and calibration, trade outcomes, reads, daily actions,
    and how many of the sessions stopped recording at their byte cap.

    Sessions with a summary covering their parts (see ``farm.fmel.summary``) add its aggregates
    when the query has no row filter beyond a wall-time bound that keeps or drops each of their
    records wholesale; the decisions and trades of every other session are scanned together.
    """
    exact = query.start is None and query.end is None and not (query.action or query.symbol)
    parts: list[Aggregates] = []
    scanned: dict[str, list[str]] = {kind: [] for kind in SUMMARIZED_KINDS}
    capped = 0
    for folder, names in session_folders(store.root, list(query.agent_ids), query.session_id):
        capped += CAPPED_NAME in names
        summary = store.summary(folder, names) if exact else None
        aggregates = summary.within(query.since) if summary else None
        if aggregates is not None:
            parts.append(aggregates)
            continue
        for kind, files in scanned.items():
            files.extend(f"{folder}/{name}" for name in part_names(names, kind))
    if any(scanned.values()):
        where, params = query.where()
        with store.cursor() as cur:
            parts.append(
                scan(cur, scanned["decisions"], scanned["trades"], where, params, query.since)
            )
    return {**summary_analytics(parts), "capped_sessions": capped}


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
    Part files are read a bounded number of bytes at a time (see ``_batches``), so memory stays
    bounded however large the export and its rows.
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
        for batch in _batches(store.root, files, schema):
            if fmt == "parquet":
                writer.write_batch(batch)
            elif fmt == "csv":
                writer.write_batch(_csv_batch(batch))
            else:
                sink.write(_JSON.encode_lines(_with_iso_times(batch).to_pylist()))
            yield sink.take()
    finally:
        if writer is not None:
            writer.close()
    yield sink.take()


def _batches(root: Root, files: Sequence[str], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The rows of ``files`` in batches of about ``EXPORT_BATCH_BYTES`` (as stored, uncompressed).

    Each part's batch size comes from its footer: the bytes per row of its widest row group.
    """
    for path in files:
        with (
            root.open(path) as handle,
            pq.ParquetFile(handle, buffer_size=EXPORT_READ_BUFFER) as part,
        ):
            meta = part.metadata
            groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
            widest = max((g.total_byte_size / max(g.num_rows, 1) for g in groups), default=1.0)
            rows = max(1, min(EXPORT_BATCH_ROWS, int(EXPORT_BATCH_BYTES / max(widest, 1.0))))
            for batch in part.iter_batches(batch_size=rows, use_threads=False):
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _with_iso_times(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` with its timestamp columns as ISO 8601 UTC text."""
    columns = [
        pc.strftime(column, format=ISO_FORMAT) if pa.types.is_timestamp(column.type) else column
        for column in batch.columns
    ]
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _csv_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` as text: ISO 8601 times, nested columns as JSON, the rest cast to strings."""
    columns = []
    for column in _with_iso_times(batch).columns:
        if pa.types.is_nested(column.type):
            values = column.to_pylist()
            column = pa.array(
                [None if v is None else _JSON.encode(v).decode() for v in values], pa.string()
            )
        columns.append(column.cast(pa.string()))
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


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
