"""A completed backtest's series (equity, fills, trades) as Parquet artifacts, read page by page.

Each series is one Parquet file under ``backtests/<session>/`` in row groups of
``ROWS_PER_GROUP`` rows, so a page reads at most two row groups, never the whole file. Fills and
trades beyond ``max_rows`` are not stored; :class:`Stored` says how many there were. What the
agent printed (head and tail) is kept beside them, for every run that started an agent.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from farm.backtest.runner import BacktestOutcome
from farm.sandbox.launcher import AgentOutput
from farm.storage.artifacts import ArtifactStore

ROWS_PER_GROUP: Final = 1000
_TS = pa.timestamp("us", tz="UTC")
SCHEMAS: Final = {
    "equity": pa.schema([("timestamp", _TS), ("equity", pa.float64()), ("drawdown", pa.float64())]),
    "fills": pa.schema(
        [
            ("clientOrderId", pa.string()),
            ("symbol", pa.string()),
            ("timestamp", _TS),
            ("size", pa.float64()),
            ("price", pa.float64()),
            ("commission", pa.float64()),
            ("decisionSeq", pa.int64()),
        ]
    ),
    "trades": pa.schema(
        [
            ("symbol", pa.string()),
            ("size", pa.float64()),
            ("entryTime", _TS),
            ("exitTime", _TS),
            ("entryPrice", pa.float64()),
            ("exitPrice", pa.float64()),
            ("pnl", pa.float64()),
            ("pnlNet", pa.float64()),
            ("commission", pa.float64()),
            ("barsHeld", pa.int64()),
        ]
    ),
}
"""Series name -> the stored columns (the API's camelCase names)."""


@dataclass(frozen=True, slots=True)
class Stored:
    """How many fills and trades a run made, and how many of each were stored."""

    fills_total: int
    fills_stored: int
    trades_total: int
    trades_stored: int


def series_key(prefix: str, name: str) -> str:
    """The artifact key of series ``name`` of the results under ``prefix``."""
    return f"{prefix}/{name}.parquet"


def logs_key(session_id: str) -> str:
    """The artifact key of what the agent of a session printed (beside its series)."""
    return f"backtests/{session_id}/agent-output.json"


def write_logs(artifacts: ArtifactStore, session_id: str, output: AgentOutput) -> None:
    """Store the head and tail of what the session's agent printed."""
    record = {
        "head": output.head.decode("utf-8", "replace"),
        "tail": output.tail.decode("utf-8", "replace"),
        "totalBytes": output.total,
        "omittedBytes": output.omitted,
    }
    artifacts.put(logs_key(session_id), json.dumps(record).encode())


def read_logs(artifacts: ArtifactStore, session_id: str) -> dict[str, Any] | None:
    """What :func:`write_logs` stored (None if nothing was)."""
    try:
        data = artifacts.get(logs_key(session_id))
    except KeyError:
        return None
    record: dict[str, Any] = json.loads(data)
    return record


def write_results(
    artifacts: ArtifactStore,
    session_id: str,
    outcome: BacktestOutcome,
    max_rows: int,
    *,
    attempt: str,
) -> tuple[str, Stored]:
    """Store the run's series (at most ``max_rows`` fills and trades) under a prefix of this
    ``attempt``'s own (a worker that lost its lease cannot overwrite the next one's); returns
    the prefix."""
    prefix = f"backtests/{session_id}/{attempt}"
    peak = float("-inf")
    equity: list[tuple[datetime, float, float]] = []
    for ts, value in outcome.equity:
        peak = max(peak, value)
        equity.append((ts, value, 1 - value / peak))
    fills = [
        (f.client_order_id, f.symbol, f.ts, f.size, f.price, f.commission, f.decision_seq)
        for f in outcome.fills[:max_rows]
    ]
    trades = [
        (
            t.symbol,
            t.size,
            t.entry_ts,
            t.exit_ts,
            t.entry_price,
            t.exit_price,
            t.pnl,
            t.pnl_net,
            t.commission,
            t.bars_held,
        )
        for t in outcome.trades[:max_rows]
    ]
    for name, rows in (("equity", equity), ("fills", fills), ("trades", trades)):
        artifacts.put(series_key(prefix, name), _parquet(SCHEMAS[name], rows))
    stored = Stored(len(outcome.fills), len(fills), len(outcome.trades), len(trades))
    return prefix, stored


def read_page(
    artifacts: ArtifactStore, prefix: str, name: str, *, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Rows ``offset`` to ``offset + limit`` of series ``name`` and how many it holds."""
    with (
        artifacts.open(series_key(prefix, name)) as handle,
        pq.ParquetFile(handle) as part,
    ):
        meta = part.metadata
        wanted: list[int] = []
        first = start = 0
        for group in range(meta.num_row_groups):
            rows = meta.row_group(group).num_rows
            if start + rows > offset and start < offset + limit:
                if not wanted:
                    first = start
                wanted.append(group)
            start += rows
        if not wanted:
            return [], meta.num_rows
        table = part.read_row_groups(wanted)
    return table.slice(offset - first, limit).to_pylist(), meta.num_rows


def _parquet(schema: pa.Schema, rows: list[tuple[Any, ...]]) -> bytes:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    table = pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd", row_group_size=ROWS_PER_GROUP)
    return sink.getvalue()
