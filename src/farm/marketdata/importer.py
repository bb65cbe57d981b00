"""Import bars from per-symbol CSV files or a long-format Parquet file into a :class:`BarStore`.

Inputs (``import_path`` takes a folder, a ``.csv`` file or a ``.parquet`` file; a folder imports
its ``*.csv`` and ``*.parquet`` files, not sub-folders):

- CSV, one symbol per file, symbol = file name stem upper-cased. Headers are case-insensitive:
  ``Date`` (or ``Timestamp``/``Datetime``), ``Open``, ``High``, ``Low``, ``Close``, ``Volume``,
  optional ``Adj Close``; other columns are ignored. Dates are ISO 8601 (``2020-07-27``,
  ``2020-07-27 04:00:00``, ``2020-07-27T04:00:00Z``, ``2020-07-27 04:00:00+00:00``); naive times
  are UTC. A date without a time is the exchange's session date: it is stored at midnight New
  York time (``EXCHANGE_TZ``), the instant the shipped daily files use, so files of both kinds
  put a day's bars on the same step. Blank lines are skipped. Problems are reported by line
  number (the header is line 1).
- Parquet, long format: ``symbol, timestamp, open, high, low, close, volume[, adj_close]``
  (case-insensitive; ``ticker`` for ``symbol``). Timestamps may be typed (naive = UTC), dates
  (session dates, as above) or ISO strings. Each symbol is validated and imported on its own, so
  one bad bar rejects only its symbol; problems are reported by 1-based row number in the file.

Validation rules (every row; a symbol with any problem is not imported at all):
required columns present; date parses; open/high/low/close/volume present and finite; prices
> 0; volume >= 0; high >= low; open and close within [low, high] (no tolerance: a bar whose
open or close lies outside its own range cannot be filled honestly); adj_close, when given, > 0
(empty means unknown); no duplicate timestamps; timestamps increasing in file order.

Warnings do not stop an import: a symbol whose bars skip more than ``max_gap_days`` weekdays in
a row (default ``MAX_GAP_DAYS``, FARM_IMPORT_GAP_DAYS for the CLI and the server) is imported and
reported with the gap, which usually means missing data rather than a market holiday.

Valid symbols are written with :meth:`BarStore.write_many`, each replacing the old data
atomically; a failed symbol leaves what the store held before untouched.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from farm.core.bars import EXCHANGE_TZ
from farm.errors import FarmError, InvalidInput
from farm.marketdata.store import SCHEMA, BarStore, Source, SymbolData, normalize_symbol

Status = Literal["imported", "unchanged", "failed"]
ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` in units of symbols; ``total`` grows when a Parquet
file is opened and its symbols become known."""

MAX_PROBLEMS = 20
MAX_GAP_DAYS = 5
_MAX_GAPS_REPORTED = 5
_WRITE_BATCH = 250
_VALUE_COLUMNS = ("open", "high", "low", "close", "volume", "adj_close")
_REQUIRED = ("timestamp", "open", "high", "low", "close", "volume")
_ALIASES = {
    "date": "timestamp",
    "datetime": "timestamp",
    "time": "timestamp",
    "timestamp": "timestamp",
    "open": "open",
    "high": "high",
    "low": "low",
    "close": "close",
    "volume": "volume",
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "adjusted close": "adj_close",
    "symbol": "symbol",
    "ticker": "symbol",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem: ``row`` is the CSV line number or the 1-based Parquet row; ``None`` means
    the whole file or symbol."""

    row: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.row is None else f"row {self.row}: {self.message}"


@dataclass(slots=True)
class SymbolReport:
    """The outcome for one symbol of one file (a per-symbol CSV has exactly one)."""

    path: Path
    symbol: str | None
    status: Status
    bars: int = 0
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ImportReport:
    """Every :class:`SymbolReport` of one import, by file then symbol, and the time taken."""

    reports: list[SymbolReport]
    seconds: float

    def _with(self, status: Status) -> list[SymbolReport]:
        return [r for r in self.reports if r.status == status]

    @property
    def imported(self) -> list[SymbolReport]:
        return self._with("imported")

    @property
    def unchanged(self) -> list[SymbolReport]:
        return self._with("unchanged")

    @property
    def failed(self) -> list[SymbolReport]:
        return self._with("failed")

    @property
    def bars_imported(self) -> int:
        return sum(r.bars for r in self.imported)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(slots=True)
class _Rows:
    """Input rows normalised for validation: epoch-µs timestamps and float64 values."""

    ts: Any  # int64 epoch µs, meaningless where ~ts_ok
    ts_ok: Any  # bool
    values: dict[str, Any]  # float64 per _VALUE_COLUMNS, NaN = missing
    rownum: Any  # int64 row number shown to the user
    codes: Any  # int64 symbol code per row
    raw: dict[str, Any] | None = None  # CSV text per column, for messages


@dataclass(slots=True)
class _Progress:
    callback: ProgressCallback | None
    total: int
    done: int = 0

    def advance(self, n: int = 0, grow: int = 0) -> None:
        self.done += n
        self.total += grow
        if self.callback is not None:
            self.callback(self.done, self.total)


class _Run:
    """State of one ``import_path`` call."""

    def __init__(
        self,
        store: BarStore,
        progress: _Progress,
        skip_unchanged: bool,
        source: Source,
        limit: int,
        max_gap_days: int,
    ) -> None:
        self.store = store
        self.progress = progress
        self.skip_unchanged = skip_unchanged
        self.source = source
        self.limit = limit
        self.max_gap_days = max_gap_days
        self.reports: list[SymbolReport] = []
        self.claimed: dict[str, Path] = {}

    def fail(self, path: Path, symbol: str | None, problems: list[Problem], count: int = 0) -> None:
        self.reports.append(
            SymbolReport(path, symbol, "failed", 0, problems[: self.limit], count or len(problems))
        )

    def claim(self, path: Path, symbol: str) -> bool:
        """Reserve ``symbol`` for ``path``; fail the symbol if another file of this run has it."""
        other = self.claimed.setdefault(symbol, path)
        if other != path:
            msg = f"{symbol} is also in {other.name}, imported first; keep one file per symbol"
            self.fail(path, symbol, [Problem(None, msg)])
            return False
        return True

    def unchanged(self, symbol: str, digest: str) -> bool:
        info = self.store.info(symbol)
        return self.skip_unchanged and info is not None and info.content_hash == digest

    def write(self, items: Sequence[tuple[Path, SymbolData]]) -> None:
        if items:
            infos = self.store.write_many([data for _, data in items])
            for (path, data), info in zip(items, infos, strict=True):
                gaps = _gaps(data.bars, self.max_gap_days)
                self.reports.append(
                    SymbolReport(path, info.symbol, "imported", info.bars, warnings=gaps)
                )


def import_path(
    store: BarStore,
    path: Path,
    *,
    progress: ProgressCallback | None = None,
    skip_unchanged: bool = False,
    source: Source = "real",
    max_problems: int = MAX_PROBLEMS,
    max_gap_days: int = MAX_GAP_DAYS,
) -> ImportReport:
    """Validate and import ``path`` (see the module docstring). With ``skip_unchanged``, symbols
    whose source file has the same SHA-256 as at their last import are left alone."""
    started = time.perf_counter()
    files = _inputs(Path(path))
    csvs = [f for f in files if f.suffix.lower() == ".csv"]
    parquets = [f for f in files if f.suffix.lower() == ".parquet"]
    run = _Run(
        store, _Progress(progress, len(files)), skip_unchanged, source, max_problems, max_gap_days
    )
    run.progress.advance()
    for start in range(0, len(csvs), _WRITE_BATCH):
        batch = csvs[start : start + _WRITE_BATCH]
        items = []
        for file in batch:
            if (data := _import_csv(run, file)) is not None:
                items.append((file, data))
            run.progress.advance(1)
        run.write(items)
    for file in parquets:
        _import_parquet(run, file)
    reports = sorted(run.reports, key=lambda r: (str(r.path), r.symbol or ""))
    return ImportReport(reports, time.perf_counter() - started)


def _inputs(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(
            p for p in path.iterdir() if p.is_file() and p.suffix.lower() in {".csv", ".parquet"}
        )
        if not files:
            raise InvalidInput(f"{path} contains no .csv or .parquet files")
        return files
    if path.is_file():
        if path.suffix.lower() not in {".csv", ".parquet"}:
            raise InvalidInput(f"{path} is neither a .csv nor a .parquet file")
        return [path]
    raise InvalidInput(f"{path} does not exist")


def _valid_symbol(raw: str) -> bool:
    try:
        normalize_symbol(raw)
    except InvalidInput:
        return False
    return True


def _import_csv(run: _Run, path: Path) -> SymbolData | None:
    """Read and validate one per-symbol CSV: what to write, or ``None`` (reported)."""
    try:
        symbol = normalize_symbol(path.stem)
    except FarmError as exc:
        run.fail(path, None, [Problem(None, exc.message)])
        return None
    if not run.claim(path, symbol):
        return None
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if run.unchanged(symbol, digest):
        info = run.store.info(symbol)
        run.reports.append(SymbolReport(path, symbol, "unchanged", info.bars if info else 0))
        return None
    rows, problems = _read_csv(data)
    if rows is None:
        run.fail(path, symbol, problems)
        return None
    counts, found = _validate(rows, 1, run.limit)
    if counts[0]:
        run.fail(path, symbol, found[0], int(counts[0]))
        return None
    return SymbolData(symbol, _table(rows, symbol, np.arange(len(rows.ts))), run.source, digest)


def _columns(names: Sequence[str]) -> tuple[dict[str, str], list[Problem]]:
    """Map canonical column names to the file's; report missing and ambiguous columns."""
    found: dict[str, str] = {}
    problems: list[Problem] = []
    for name in names:
        canonical = _ALIASES.get(str(name).strip().lower())
        if canonical is None:
            continue
        if canonical in found:
            problems.append(
                Problem(None, f"columns {found[canonical]!r} and {name!r} both mean {canonical}")
            )
        found[canonical] = name
    missing = [c for c in _REQUIRED if c not in found]
    if missing:
        have = ", ".join(map(str, names))
        problems.append(Problem(None, f"missing columns: {', '.join(missing)} (found: {have})"))
    return found, problems


def _parse_dates(text: Any) -> tuple[Any, Any]:
    """ISO 8601 strings to (epoch µs, ok mask); naive times are UTC, bare dates are session
    dates (midnight in ``EXCHANGE_TZ``)."""
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    micros = parsed.dt.as_unit("us").to_numpy(dtype="datetime64[us]").view(np.int64).copy()
    date_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").to_numpy(dtype=bool)
    ok = parsed.notna().to_numpy()
    micros[date_only & ok] = _session_midnight(micros[date_only & ok])
    return micros, ok


def _session_midnight(utc_midnight: Any) -> Any:
    """Epoch µs of UTC midnights to the same calendar dates at midnight in ``EXCHANGE_TZ``."""
    naive = pd.DatetimeIndex(utc_midnight.astype("datetime64[us]"))
    local = naive.tz_localize(EXCHANGE_TZ).tz_convert("UTC").tz_localize(None)
    return local.as_unit("us").to_numpy(dtype="datetime64[us]").view(np.int64)


def _gaps(table: Any, max_gap_days: int) -> list[str]:
    """Warnings for runs of more than ``max_gap_days`` weekdays without a bar."""
    days = np.unique(table.column("timestamp").to_numpy().astype("datetime64[D]"))
    if len(days) < 2:
        return []
    missing = np.busday_count(days[:-1], days[1:]) - 1
    found = np.flatnonzero(missing > max_gap_days)
    warnings = [
        f"no bars for {int(missing[i])} weekdays between {days[i]} and {days[i + 1]}"
        for i in found[:_MAX_GAPS_REPORTED]
    ]
    if len(found) > _MAX_GAPS_REPORTED:
        warnings.append(f"... and {len(found) - _MAX_GAPS_REPORTED} more gaps")
    return warnings


def _read_csv(data: bytes) -> tuple[_Rows | None, list[Problem]]:
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, skip_blank_lines=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        return None, [Problem(None, f"cannot read CSV: {exc}".strip())]
    found, problems = _columns(list(frame.columns))
    if problems:
        return None, problems
    frame = frame.fillna("")
    text = {c: frame[found[c]].str.strip() for c in (*_REQUIRED, "adj_close") if c in found}
    blank = np.logical_and.reduce([(t == "").to_numpy() for t in text.values()])
    keep = ~blank
    if not keep.any():
        return None, [Problem(None, "no rows")]
    text = {c: t[keep] for c, t in text.items()}
    ts, ts_ok = _parse_dates(text["timestamp"])
    values = {
        c: pd.to_numeric(text[c], errors="coerce").to_numpy(dtype=np.float64)
        if c in text
        else np.full(len(ts), np.nan)
        for c in _VALUE_COLUMNS
    }
    rownum = np.flatnonzero(keep) + 2
    raw = {c: t.to_numpy() for c, t in text.items()}
    return _Rows(ts, ts_ok, values, rownum, np.zeros(len(ts), dtype=np.int64), raw), []


def _fmt(value: float) -> str:
    return repr(float(value))


def _fmt_ts(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=int(micros))).isoformat()


def _rules(rows: _Rows) -> Iterator[tuple[Any, Callable[[int], str]]]:
    """(row mask, message for row i) for every validation rule, in report order."""
    v = rows.values
    raw = rows.raw or {}

    def text(col: str, i: int) -> str:
        return f" ({raw[col][i]!r})" if col in raw and raw[col][i] else ""

    def missing(col: str, i: int) -> str:
        return f"{col} is missing or not a number{text(col, i)}"

    def infinite(col: str, i: int) -> str:
        return f"{col} is not finite"

    def non_positive(col: str, i: int) -> str:
        return f"{col} is {_fmt(v[col][i])}; prices must be positive"

    def outside(col: str, i: int) -> str:
        low, high = _fmt(v["low"][i]), _fmt(v["high"][i])
        return f"{col} {_fmt(v[col][i])} is outside [low {low}, high {high}]"

    yield (
        ~rows.ts_ok,
        lambda i: f"unparsable date{t}" if (t := text("timestamp", i)) else "missing date",
    )
    for col in _VALUE_COLUMNS[:5]:
        yield np.isnan(v[col]), partial(missing, col)
        yield np.isinf(v[col]), partial(infinite, col)
    for col in _VALUE_COLUMNS[:4]:
        yield v[col] <= 0, partial(non_positive, col)
    yield v["volume"] < 0, lambda i: f"volume is {_fmt(v['volume'][i])}; it must not be negative"
    inverted = v["high"] < v["low"]
    yield inverted, lambda i: f"high {_fmt(v['high'][i])} is below low {_fmt(v['low'][i])}"
    for col in ("open", "close"):
        mask = ((v[col] < v["low"]) | (v[col] > v["high"])) & ~inverted
        yield mask, partial(outside, col)
    adj = v["adj_close"]
    yield (
        np.isinf(adj) | (adj <= 0),
        lambda i: f"adj_close is {_fmt(adj[i])}; it must be positive or empty",
    )
    yield from _order_rules(rows)


def _order_rules(rows: _Rows) -> Iterator[tuple[Any, Callable[[int], str]]]:
    """Duplicate timestamps (within a symbol) and timestamps not increasing in file order."""
    n = len(rows.ts)
    valid = np.flatnonzero(rows.ts_ok)
    duplicate = np.zeros(n, dtype=bool)
    first_of = np.arange(n)
    by_time = valid[np.lexsort((valid, rows.ts[valid], rows.codes[valid]))]
    same = (rows.codes[by_time][1:] == rows.codes[by_time][:-1]) & (
        rows.ts[by_time][1:] == rows.ts[by_time][:-1]
    )
    duplicate[by_time[1:][same]] = True
    group_start = np.maximum.accumulate(np.where(np.r_[False, same], 0, np.arange(len(by_time))))
    first_of[by_time] = by_time[group_start]
    in_file = valid[np.argsort(rows.codes[valid], kind="stable")]
    earlier = np.zeros(n, dtype=bool)
    prev_of = np.arange(n)
    later = in_file[1:]
    prev = in_file[:-1]
    back = (rows.codes[later] == rows.codes[prev]) & (rows.ts[later] < rows.ts[prev])
    earlier[later[back]] = True
    prev_of[later[back]] = prev[back]
    yield (
        duplicate,
        lambda i: (
            f"duplicate timestamp {_fmt_ts(rows.ts[i])} (first at row {rows.rownum[first_of[i]]})"
        ),
    )
    yield (
        earlier & ~duplicate,
        lambda i: (
            f"timestamp {_fmt_ts(rows.ts[i])} is before the previous row's "
            f"{_fmt_ts(rows.ts[prev_of[i]])}; rows must be sorted by time"
        ),
    )


def _validate(rows: _Rows, n_codes: int, limit: int) -> tuple[Any, dict[int, list[Problem]]]:
    """Problem counts per symbol code and the first ``limit`` problems of each failing code."""
    rules = list(_rules(rows))
    hits = [np.flatnonzero(mask) for mask, _ in rules]
    idx = np.concatenate(hits) if hits else np.array([], dtype=np.int64)
    rule = np.concatenate([np.full(len(h), k) for k, h in enumerate(hits)])
    counts = np.bincount(rows.codes[idx], minlength=n_codes)
    order = np.lexsort((rule, idx, rows.codes[idx]))
    idx, rule = idx[order], rule[order]
    codes = rows.codes[idx]
    found: dict[int, list[Problem]] = {}
    starts: list[int] = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]).tolist()
    if not len(codes):
        starts = []
    for s in starts:
        code = int(codes[s])
        end = min(s + limit, len(codes))
        picks = [(int(idx[j]), int(rule[j])) for j in range(s, end) if codes[j] == code]
        found[code] = [Problem(int(rows.rownum[i]), rules[k][1](i)) for i, k in picks]
    return counts, found


def _table(rows: _Rows, symbol: str, take: Any) -> Any:
    """The rows at ``take`` (validated) as a store table."""
    adj = rows.values["adj_close"][take]
    arrays = [
        pa.array(np.full(len(take), symbol)),
        pa.array(rows.ts[take], type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        *(pa.array(rows.values[c][take]) for c in _VALUE_COLUMNS[:5]),
        pa.array(adj, mask=np.isnan(adj)),
    ]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _timestamps(column: Any) -> tuple[Any, Any, Any, str | None]:
    """A Parquet timestamp column as (epoch µs, ok mask, text if it was text, type problem)."""
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        unit = pa.timestamp("us", tz=getattr(kind, "tz", None))
        micros = column.cast(unit, safe=False).cast(pa.int64())
        ok = micros.is_valid().to_numpy(zero_copy_only=False)
        values = micros.fill_null(0).to_numpy()
        return (_session_midnight(values) if pa.types.is_date(kind) else values), ok, None, None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = column.fill_null("").to_numpy(zero_copy_only=False)
        micros, ok = _parse_dates(pd.Series(text))
        return micros, ok, text, None
    problem = f"column timestamp has type {kind}; expected timestamps, dates or ISO text"
    return None, None, None, problem


def _read_parquet(
    path: Path, skip: Sequence[str]
) -> tuple[_Rows | None, list[str | None], list[Problem]]:
    """A long-format Parquet file, without the rows of the ``skip`` symbols, as rows, symbol
    names per code (``None`` = invalid name), and file-level problems."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        return None, [], [Problem(None, f"cannot read Parquet: {exc}")]
    found, problems = _columns(schema.names)
    if "symbol" not in found:
        problems.append(Problem(None, "missing column: symbol (long format needs one)"))
    if problems:
        return None, [], problems
    table = pq.read_table(path, columns=list(found.values()))
    table = table.rename_columns([_ALIASES[n.strip().lower()] for n in table.column_names])
    rownum = np.arange(1, table.num_rows + 1)
    if skip:
        keep = pc.invert(pc.is_in(table.column("symbol").cast(pa.string()), pa.array(skip)))
        rownum = rownum[keep.to_numpy(zero_copy_only=False)]
        table = table.filter(keep)
    ts, ts_ok, text, bad = _timestamps(table.column("timestamp"))
    values: dict[str, Any] = {}
    for col in _VALUE_COLUMNS:
        if col not in found:
            values[col] = np.full(table.num_rows, np.nan)
            continue
        kind = table.schema.field(col).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            problems.append(Problem(None, f"column {col} has type {kind}; expected numbers"))
            continue
        values[col] = table.column(col).cast(pa.float64()).to_numpy(zero_copy_only=False)
    if bad is not None:
        problems.append(Problem(None, bad))
    if problems:
        return None, [], problems
    encoded = table.column("symbol").cast(pa.string()).combine_chunks().dictionary_encode()
    raw_names = encoded.dictionary.to_pylist()
    normalised = [normalize_symbol(s) if _valid_symbol(s) else f"\0{s}" for s in raw_names]
    codes_of_raw, uniques = pd.factorize(pd.Series(normalised, dtype=object))
    names: list[str | None] = [None if u.startswith("\0") else u for u in uniques]
    names.append(None)  # the code of rows without a symbol
    indices = encoded.indices.fill_null(-1).to_numpy()
    codes = np.where(indices >= 0, codes_of_raw[np.maximum(indices, 0)], len(names) - 1)
    raw = None if text is None else {"timestamp": text}
    return _Rows(ts, ts_ok, values, rownum, codes.astype(np.int64), raw), names, []


def _report_unchanged(run: _Run, path: Path, digest: str) -> list[str]:
    """Report the symbols of ``path`` last imported from this very content as unchanged; return
    their names as spelled in the file, for the import to leave out."""
    try:
        found, problems = _columns(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return []
    if problems or "symbol" not in found:
        return []
    table = pq.read_table(path, columns=[found["symbol"]])
    counts = pc.value_counts(table.column(0).cast(pa.string())).to_pylist()
    skipped: list[str] = []
    for entry in counts:
        raw, bars = entry["values"], entry["counts"]
        if raw is None or not _valid_symbol(raw):
            continue
        symbol = normalize_symbol(raw)
        if symbol not in run.claimed and run.unchanged(symbol, digest):
            run.claim(path, symbol)
            run.reports.append(SymbolReport(path, symbol, "unchanged", bars))
            skipped.append(raw)
    run.progress.advance(len(skipped), grow=len(skipped))
    return skipped


def _import_parquet(run: _Run, path: Path) -> None:
    digest = _hash_file(path)
    skip = _report_unchanged(run, path, digest) if run.skip_unchanged else []
    rows, names, problems = _read_parquet(path, skip)
    if rows is None:
        run.fail(path, None, problems)
        run.progress.advance(1)
        return
    present = np.bincount(rows.codes, minlength=len(names))
    codes = [c for c in range(len(names)) if present[c]]
    run.progress.advance(grow=len(codes) - 1)
    counts, found = _validate(rows, len(names), run.limit)
    good: list[int] = []
    for code in codes:
        name = names[code]
        if name is None:
            rows_of = rows.rownum[rows.codes == code][: run.limit].tolist()
            what = "rows without a symbol" if code == len(names) - 1 else "invalid symbol name"
            run.fail(path, None, [Problem(r, what) for r in rows_of], int(present[code]))
        elif not run.claim(path, name):
            continue
        elif run.unchanged(name, digest):
            run.reports.append(SymbolReport(path, name, "unchanged", int(present[code])))
        elif counts[code]:
            run.fail(path, name, found[code], int(counts[code]))
        else:
            good.append(code)
    run.progress.advance(len(codes) - len(good))
    order = np.argsort(rows.codes, kind="stable")
    bounds = np.r_[0, np.cumsum(present)]
    for start in range(0, len(good), _WRITE_BATCH):
        batch = good[start : start + _WRITE_BATCH]
        items = []
        for code in batch:
            take = order[bounds[code] : bounds[code + 1]]
            name = str(names[code])
            items.append((path, SymbolData(name, _table(rows, name, take), run.source, digest)))
        run.write(items)
        run.progress.advance(len(batch))
