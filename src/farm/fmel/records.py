"""The FMEL record schema: one decision per ``next()``, its executions and closed trades.

Three record kinds are stored side by side as Parquet (see ``docs/fmel.md``). Fields in
``AGENT_REPORTED`` come from inside the sandbox and are only what the agent says; everything
else (ids, times, bars, orders, fills, trades, positions, cash, value) is the host's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Final

import msgspec
import pyarrow as pa

SCHEMA_VERSION: Final = 1
"""Bumped whenever a stored column changes meaning; additions keep old files readable."""

MAX_REASONING_CHARS: Final = 4000
MAX_INDICATOR_LINES: Final = 2048
MAX_DATA_ACCESSES: Final = 4096
MAX_HOOK_ERRORS: Final = 10
MAX_HOOK_ERROR_CHARS: Final = 500

AGENT_REPORTED: Final = (
    "reasoning",
    "reasoning_truncated",
    "confidence",
    "indicators",
    "indicators_truncated",
    "data_accesses",
    "data_accesses_truncated",
    "hook_errors",
)
"""Decision columns whose content the agent controls (nested under ``agentReported`` in the API)."""


class Mode(StrEnum):
    """Where the decision was made."""

    BACKTEST = "BACKTEST"
    PAPER = "PAPER"


class Action(StrEnum):
    """What a decision did, from the orders it submitted."""

    BUY = "buy"
    SELL = "sell"
    HOLD = "hold"
    MIXED = "mixed"


class Bar(msgspec.Struct, frozen=True, kw_only=True):
    """One symbol's OHLCV bar at the decision point."""

    symbol: str
    open: float
    high: float
    low: float
    close: float
    volume: float


class Order(msgspec.Struct, frozen=True, kw_only=True):
    """An order submitted at the decision point, with its status at the end of the step."""

    order_id: str
    symbol: str
    side: str
    size: float
    type: str
    status: str
    limit_price: float | None = None
    stop_price: float | None = None


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """A position held when the decision was made (size signed)."""

    symbol: str
    size: float
    price: float


class Indicator(msgspec.Struct, frozen=True, kw_only=True):
    """Line ``line`` (0 for single-line indicators) of an indicator; ``value`` is None for NaN."""

    name: str
    line: int
    value: float | None


class DataAccess(msgspec.Struct, frozen=True, kw_only=True):
    """One read of a data field by the agent (``index`` 0 is the current bar, -1 the previous)."""

    symbol: str
    field: str
    index: int


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One decision point: what the agent saw, read, said and did."""

    decision_id: str
    session_id: str
    agent_id: str
    user_id: str
    mode: str
    seq: int
    bar_ts: datetime
    wall_ts: datetime
    action: str
    symbols: list[str]
    bars: list[Bar]
    positions: list[Holding]
    cash: float
    value: float
    orders: list[Order]
    cancels: list[str]
    reasoning: str | None
    reasoning_truncated: bool
    confidence: float | None
    indicators: list[Indicator]
    indicators_truncated: bool
    data_accesses: list[DataAccess]
    data_accesses_truncated: bool
    hook_errors: list[str]
    schema_version: int = SCHEMA_VERSION


RECONCILED = "reconciled"
"""The ``status`` of an :class:`ExecutionRecord` that is a reconciliation correction."""


class ExecutionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A fill from the host ledger, or the end of an order without one, linked to its decision.

    ``status`` is ``filled`` for a fill, else how the order ended (``cancelled``, ``expired``,
    ``margin``, ``rejected``) with ``size`` 0, no ``price`` and the ledger's ``reason``; or
    ``reconciled`` for a correction a real broker's reconciliation made to the account (no
    ``order_id`` or ``side``; ``symbol`` empty for cash; ``reason`` says what was held and
    what the broker has).
    """

    execution_id: str
    decision_id: str
    session_id: str
    agent_id: str
    user_id: str
    mode: str
    seq: int
    order_id: str
    symbol: str
    side: str
    status: str
    size: float
    price: float | None
    commission: float
    reason: str
    ts: datetime
    wall_ts: datetime
    schema_version: int = SCHEMA_VERSION


class TradeRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A closed round trip from the host ledger, linked to its opening and closing decisions."""

    trade_id: str
    session_id: str
    agent_id: str
    user_id: str
    mode: str
    symbol: str
    size: float
    entry_ts: datetime
    exit_ts: datetime
    entry_price: float
    exit_price: float
    pnl: float
    pnl_net: float
    commission: float
    bars_held: int
    opened_by_seq: int
    closed_by_seq: int
    opened_by_decision_id: str
    closed_by_decision_id: str
    wall_ts: datetime
    schema_version: int = SCHEMA_VERSION


Record = DecisionRecord | ExecutionRecord | TradeRecord


def decision_id(session_id: str, seq: int) -> str:
    """The id of decision ``seq`` of a session: ``<session_id>:<seq>``."""
    return f"{session_id}:{seq}"


_TS = pa.timestamp("us", tz="UTC")
_IDS = [
    ("session_id", pa.string()),
    ("agent_id", pa.string()),
    ("user_id", pa.string()),
    ("mode", pa.string()),
]


def _schema(fields: list[tuple[str, pa.DataType]]) -> pa.Schema:
    meta = {b"fmel.schema_version": str(SCHEMA_VERSION).encode()}
    return pa.schema([pa.field(n, t) for n, t in fields], metadata=meta)


DECISION_SCHEMA: Final = _schema(
    [
        ("schema_version", pa.int16()),
        ("decision_id", pa.string()),
        *_IDS,
        ("seq", pa.int64()),
        ("bar_ts", _TS),
        ("wall_ts", _TS),
        ("action", pa.string()),
        ("symbols", pa.list_(pa.string())),
        (
            "bars",
            pa.list_(
                pa.struct(
                    [
                        ("symbol", pa.string()),
                        ("open", pa.float64()),
                        ("high", pa.float64()),
                        ("low", pa.float64()),
                        ("close", pa.float64()),
                        ("volume", pa.float64()),
                    ]
                )
            ),
        ),
        (
            "positions",
            pa.list_(
                pa.struct(
                    [("symbol", pa.string()), ("size", pa.float64()), ("price", pa.float64())]
                )
            ),
        ),
        ("cash", pa.float64()),
        ("value", pa.float64()),
        (
            "orders",
            pa.list_(
                pa.struct(
                    [
                        ("order_id", pa.string()),
                        ("symbol", pa.string()),
                        ("side", pa.string()),
                        ("size", pa.float64()),
                        ("type", pa.string()),
                        ("status", pa.string()),
                        ("limit_price", pa.float64()),
                        ("stop_price", pa.float64()),
                    ]
                )
            ),
        ),
        ("cancels", pa.list_(pa.string())),
        ("reasoning", pa.string()),
        ("reasoning_truncated", pa.bool_()),
        ("confidence", pa.float64()),
        (
            "indicators",
            pa.list_(
                pa.struct([("name", pa.string()), ("line", pa.int32()), ("value", pa.float64())])
            ),
        ),
        ("indicators_truncated", pa.bool_()),
        (
            "data_accesses",
            pa.list_(
                pa.struct([("symbol", pa.string()), ("field", pa.string()), ("index", pa.int32())])
            ),
        ),
        ("data_accesses_truncated", pa.bool_()),
        ("hook_errors", pa.list_(pa.string())),
    ]
)

EXECUTION_SCHEMA: Final = _schema(
    [
        ("schema_version", pa.int16()),
        ("execution_id", pa.string()),
        ("decision_id", pa.string()),
        *_IDS,
        ("seq", pa.int64()),
        ("order_id", pa.string()),
        ("symbol", pa.string()),
        ("side", pa.string()),
        ("status", pa.string()),
        ("size", pa.float64()),
        ("price", pa.float64()),
        ("commission", pa.float64()),
        ("reason", pa.string()),
        ("ts", _TS),
        ("wall_ts", _TS),
    ]
)

TRADE_SCHEMA: Final = _schema(
    [
        ("schema_version", pa.int16()),
        ("trade_id", pa.string()),
        *_IDS,
        ("symbol", pa.string()),
        ("size", pa.float64()),
        ("entry_ts", _TS),
        ("exit_ts", _TS),
        ("entry_price", pa.float64()),
        ("exit_price", pa.float64()),
        ("pnl", pa.float64()),
        ("pnl_net", pa.float64()),
        ("commission", pa.float64()),
        ("bars_held", pa.int64()),
        ("opened_by_seq", pa.int64()),
        ("closed_by_seq", pa.int64()),
        ("opened_by_decision_id", pa.string()),
        ("closed_by_decision_id", pa.string()),
        ("wall_ts", _TS),
    ]
)

KINDS: Final[dict[str, pa.Schema]] = {
    "decisions": DECISION_SCHEMA,
    "executions": EXECUTION_SCHEMA,
    "trades": TRADE_SCHEMA,
}
"""Record kind -> Parquet schema; part files are named ``<kind>-*.parquet``."""


def to_table(records: Sequence[Record], schema: pa.Schema) -> pa.Table:
    """Records of one kind as an Arrow table with the stored schema (built column by column)."""
    columns = []
    for field in schema:
        values = list(map(attrgetter(field.name), records))
        if pa.types.is_list(field.type) and pa.types.is_struct(field.type.value_type):
            columns.append(_struct_list(values, field.type))
        else:
            columns.append(pa.array(values, type=field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _struct_list(values: list[list[msgspec.Struct]], type_: pa.ListType) -> pa.Array:
    offsets = [0]
    for items in values:
        offsets.append(offsets[-1] + len(items))
    flat = [item for items in values for item in items]
    struct_type = type_.value_type
    children = [
        pa.array(list(map(attrgetter(child.name), flat)), type=child.type) for child in struct_type
    ]
    structs = pa.StructArray.from_arrays(children, fields=list(struct_type))
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), structs, type=type_)
