"""The bar store: one Parquet file per symbol plus a small JSON manifest.

Layout under ``root``::

    manifest.json         {"version": 1, "symbols": {"AAPL": {first, last, bars, source, ...}}}
    symbols/AAPL.parquet  symbol, timestamp (UTC), open, high, low, close, volume, adj_close
    .lock                 local writers serialise manifest updates with flock

Every write goes to a temporary file that is fsynced and then ``os.replace``-d over the old one, so
a reader sees either the old or the new file, never a partial one. The manifest is cached per
``BarStore`` and reloaded when its file changes, so a running server sees a CLI import at once.
On object storage (``FARM_BARS_URL=s3://...``) the same layout holds one object per file, and
writers update the manifest by compare-and-swap (conditional PUTs, :meth:`BarStore._commit`), so
any number of importers can run at once there too.

The live minute bars of the Alpaca feed go to a :class:`MinuteStore`, ``minute/`` below the bar
store (:func:`open_minute_store`): one file per UTC day, so storing a step rewrites one small file.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import random
import re
import time as clock
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from farm.core.bars import Bar, Step
from farm.errors import Conflict, InvalidInput
from farm.storage.objects import S3_SCHEME, LocalRoot, Root, S3Root, WriteConflict, open_root

if TYPE_CHECKING:
    from farm.config import Settings

Source = Literal["real", "synthetic"]
SOURCES: tuple[Source, ...] = ("real", "synthetic")
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")

SCHEMA = pa.schema(
    [
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("open", pa.float64(), nullable=False),
        pa.field("high", pa.float64(), nullable=False),
        pa.field("low", pa.float64(), nullable=False),
        pa.field("close", pa.float64(), nullable=False),
        pa.field("volume", pa.float64(), nullable=False),
        pa.field("adj_close", pa.float64(), nullable=True),
    ]
)

MAX_SUGGESTIONS = 3  # close matches offered per unknown symbol (difflib)
MAX_SUGGESTED = 10  # unknown symbols of one request that get suggestions
_SYMBOL_RE = re.compile(r"^[A-Z0-9][A-Z0-9._\-^=]{0,31}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MANIFEST_VERSION = 1
_STAGE_THREADS = 4
_CAS_ATTEMPTS = 20  # manifest compare-and-swaps on S3 before giving up
_CAS_BACKOFF_S = 0.02  # the first pause after a lost one; doubles, capped, jittered
_CAS_MAX_BACKOFF_S = 1.0


def normalize_symbol(raw: str) -> str:
    """Upper-case and check a symbol: letters, digits and ``. _ - ^ =``, at most 32 characters."""
    symbol = raw.strip().upper()
    if not _SYMBOL_RE.match(symbol):
        raise InvalidInput(
            f"invalid symbol {raw!r}: use letters, digits and . _ - ^ = (at most 32 characters)"
        )
    return symbol


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What the store holds for one symbol."""

    symbol: str
    first: datetime
    last: datetime
    bars: int
    source: Source
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class SymbolData:
    """Bars to write for one symbol: a DataFrame (DatetimeIndex or ``timestamp`` column) or a
    pyarrow Table with the store's columns."""

    symbol: str
    bars: Any
    source: Source
    content_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which requested symbols a backtest over a date range could not use."""

    unknown: tuple[str, ...]
    empty: tuple[str, ...]
    bars: Mapping[str, int] = field(default_factory=dict)
    suggestions: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unknown and not self.empty

    def check(self) -> None:
        """Raise :class:`InvalidInput` naming every unknown or empty symbol."""
        parts = []
        if self.unknown:
            parts.append(f"unknown symbols: {', '.join(map(self.named, self.unknown))}")
        if self.empty:
            parts.append(f"no bars in the requested dates: {', '.join(self.empty)}")
        if parts:
            raise InvalidInput(
                "; ".join(parts),
                unknown=list(self.unknown),
                empty=list(self.empty),
                suggestions=dict(self.suggestions),
            )

    def named(self, symbol: str) -> str:
        """``symbol``, followed by its close matches when there are some."""
        close = self.suggestions.get(symbol)
        return f"{symbol} (did you mean {', '.join(close)}?)" if close else symbol


@dataclass(frozen=True, slots=True)
class _Manifest:
    key: tuple[object, ...]
    infos: Mapping[str, SymbolInfo]
    listing: tuple[SymbolInfo, ...]


def _utc_range(start: date | None, end: date | None) -> tuple[int, int]:
    """Inclusive calendar dates (UTC) as a half-open range of epoch microseconds."""
    lo = -(2**62) if start is None else _micros(datetime.combine(start, time(), UTC))
    hi = 2**62 if end is None else _micros(datetime.combine(end + timedelta(days=1), time(), UTC))
    return lo, hi


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _info_to_json(info: SymbolInfo) -> dict[str, Any]:
    return {
        "first": info.first.isoformat(),
        "last": info.last.isoformat(),
        "bars": info.bars,
        "source": info.source,
        "contentHash": info.content_hash,
    }


def _info_from_json(symbol: str, raw: Mapping[str, Any]) -> SymbolInfo:
    return SymbolInfo(
        symbol=symbol,
        first=datetime.fromisoformat(raw["first"]),
        last=datetime.fromisoformat(raw["last"]),
        bars=int(raw["bars"]),
        source=cast(Source, raw["source"]),
        content_hash=raw.get("contentHash"),
    )


def _to_table(symbol: str, bars: Any) -> Any:
    """Coerce a DataFrame or Table to :data:`SCHEMA`; check timestamps are UTC, sorted, unique."""
    if isinstance(bars, pd.DataFrame):
        frame = bars
        if "timestamp" not in frame.columns:
            frame = frame.rename_axis("timestamp").reset_index()
        missing = [c for c in ("timestamp", *BAR_COLUMNS) if c not in frame.columns]
        if missing:
            raise InvalidInput(f"{symbol}: missing columns: {', '.join(missing)}")
        ts = pd.to_datetime(frame["timestamp"])
        if ts.dt.tz is None:
            raise InvalidInput(f"{symbol}: timestamps must be timezone-aware")
        frame = frame.assign(timestamp=ts.dt.tz_convert("UTC").dt.as_unit("us"), symbol=symbol)
        if "adj_close" not in frame.columns:
            frame = frame.assign(adj_close=np.nan)
        arrays = [
            pa.array(frame[name].to_numpy(), type=f.type, from_pandas=True)
            for name, f in zip(SCHEMA.names, SCHEMA, strict=True)
            if name != "timestamp"
        ]
        arrays.insert(1, pa.array(frame["timestamp"]))
        table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    else:
        table = bars.select(SCHEMA.names).cast(SCHEMA)
    if table.num_rows == 0:
        raise InvalidInput(f"{symbol}: no bars")
    ts_us = table.column("timestamp").cast(pa.int64()).to_numpy()
    if np.any(np.diff(ts_us) <= 0):
        raise InvalidInput(f"{symbol}: timestamps must be strictly increasing")
    return table


def open_bar_store(settings: Settings) -> BarStore:
    """The bar store ``FARM_BARS_URL`` names (a folder, or ``s3://bucket/prefix``)."""
    return BarStore(open_root(settings.bars_url, settings.bars_dir, settings.s3_endpoint_url))


def open_minute_store(settings: Settings) -> MinuteStore:
    """The live minute bars (``FARM_FEED=alpaca`` stores them as it publishes them):
    ``minute/`` below the bar store, apart from the daily bars of the same symbols."""
    url = settings.bars_url
    remote = f"{url.rstrip('/')}/minute" if url and url.startswith(S3_SCHEME) else None
    return MinuteStore(open_root(remote, settings.bars_dir / "minute", settings.s3_endpoint_url))


class MinuteStore:
    """Live minute bars: ``YYYY-MM-DD.parquet`` per UTC day, in the bar store's columns.

    :meth:`append` rewrites the day's file atomically (readers see the old or the new one), so
    a step costs a day of bars at most, however long the store has been kept. One writer (the
    feed); any number of readers.
    """

    def __init__(self, root: Root) -> None:
        self._root = root

    def _path(self, day: date) -> str:
        return self._root.join(f"{day.isoformat()}.parquet")

    def _table(self, day: date) -> Any | None:
        try:
            with self._root.open(self._path(day)) as fh:
                return pq.read_table(fh)
        except FileNotFoundError:
            return None

    def append(self, steps: Sequence[Step]) -> None:
        """Store the bars of ``steps`` (a bar of a symbol and minute already stored is
        replaced)."""
        days: dict[date, list[Step]] = {}
        for step in steps:
            days.setdefault(step.ts.astimezone(UTC).date(), []).append(step)
        for day, stepped in days.items():
            rows = [(symbol, step.ts, bar) for step in stepped for symbol, bar in step.bars.items()]
            new = pa.Table.from_pydict(
                {
                    "symbol": [r[0] for r in rows],
                    "timestamp": [r[1] for r in rows],
                    **{c: [float(getattr(r[2], c)) for r in rows] for c in BAR_COLUMNS},
                    "adj_close": [None] * len(rows),
                },
                schema=SCHEMA,
            )
            old = self._table(day)
            if old is not None:
                keys = {(r[0], _micros(r[1])) for r in rows}
                symbols = old.column("symbol").to_pylist()
                stamps = old.column("timestamp").cast(pa.int64()).to_pylist()
                keep = [(k, t) not in keys for k, t in zip(symbols, stamps, strict=True)]
                new = pa.concat_tables([old.filter(pa.array(keep)), new])
            new = new.sort_by([("timestamp", "ascending"), ("symbol", "ascending")])
            sink = io.BytesIO()
            pq.write_table(new, sink, compression="zstd")
            self._root.write(self._path(day), sink.getvalue())

    def prune(self, before: date) -> list[date]:
        """Delete the days before ``before``; the days deleted, oldest first."""
        folder = self._root.join()
        days = sorted(
            day
            for name in self._root.names(folder)
            if (day := _day_of(name)) is not None and day < before
        )
        for day in days:
            self._root.delete(self._path(day))
        return days

    def steps(self, symbols: Sequence[str], start: date, end: date) -> list[Step]:
        """The stored steps of ``symbols`` from ``start`` to ``end`` (inclusive UTC dates), in
        time order; each has the bars of those symbols stored at its minute."""
        wanted = list(dict.fromkeys(symbols))
        rank = {symbol: i for i, symbol in enumerate(wanted)}
        out: list[Step] = []
        day = start
        while day <= end:
            table = self._table(day)
            day += timedelta(days=1)
            if table is None:
                continue
            table = table.filter(pc.is_in(table.column("symbol"), pa.array(wanted)))
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            names = table.column("symbol").to_pylist()
            order = np.lexsort((np.array([rank[n] for n in names], dtype=np.int64), ts))
            columns = [table.column(c).to_numpy()[order].tolist() for c in BAR_COLUMNS]
            out.extend(_iter_steps(ts[order], [names[i] for i in order.tolist()], columns))
        return out


def _day_of(name: str) -> date | None:
    """The day a minute store file holds (None for any other name)."""
    stem, dot, extension = name.rpartition(".")
    try:
        return date.fromisoformat(stem) if dot and extension == "parquet" else None
    except ValueError:
        return None


class BarStore:
    """Parquet bars, one file per symbol, with a cached manifest (see the module docstring).

    ``root`` is a local folder or a :class:`Root` on object storage. There each file is one
    object (a PUT replaces it atomically), the manifest is re-read when its ETag changes and
    writers update it with conditional PUTs, so concurrent importers lose no update (locally they
    take turns with ``flock``).
    """

    def __init__(self, root: Path | Root) -> None:
        self.root = Path(root) if isinstance(root, str | Path) else root
        self._files: Root = LocalRoot(self.root) if isinstance(self.root, Path) else self.root
        self._cache: _Manifest | None = None

    @property
    def _manifest_path(self) -> str:
        return self._files.join("manifest.json")

    @property
    def _symbols_dir(self) -> str:
        return self._files.join("symbols")

    def path_of(self, symbol: str) -> str:
        """The Parquet file holding ``symbol``'s bars."""
        return f"{self._symbols_dir}/{symbol}.parquet"

    # -- reading -----------------------------------------------------------------------------

    def _manifest(self) -> _Manifest:
        key = self._files.identity(self._manifest_path)
        if key is None:
            if self._parquet_names():
                self._rebuild_manifest()
                return self._manifest()
            return _Manifest((), {}, ())
        cached = self._cache
        if cached is not None and cached.key == key:
            return cached
        infos = _parse_manifest(self._files.read(self._manifest_path))
        manifest = _Manifest(key, infos, tuple(infos[s] for s in sorted(infos)))
        self._cache = manifest
        return manifest

    def symbols(self) -> list[SymbolInfo]:
        """Every stored symbol, sorted; cheap (a ``stat`` of the manifest when nothing changed)."""
        return list(self._manifest().listing)

    def info(self, symbol: str) -> SymbolInfo | None:
        """What is stored for ``symbol``, or ``None``."""
        return self._manifest().infos.get(symbol.strip().upper())

    def is_empty(self) -> bool:
        """True when no symbol is stored."""
        return not self._manifest().infos

    def _resolve(self, symbols: Iterable[str]) -> tuple[list[str], list[str]]:
        """Normalised, de-duplicated symbols in request order, split into (known, unknown)."""
        infos = self._manifest().infos
        known: list[str] = []
        unknown: list[str] = []
        for raw in dict.fromkeys(s.strip().upper() for s in symbols):
            (known if raw in infos else unknown).append(raw)
        return known, unknown

    def _require(self, symbols: Iterable[str]) -> list[str]:
        known, unknown = self._resolve(symbols)
        if unknown:
            raise InvalidInput(f"unknown symbols: {', '.join(unknown)}", unknown=unknown)
        if not known:
            raise InvalidInput("no symbols requested")
        return known

    def source_of(self, symbols: Iterable[str]) -> Source:
        """``"synthetic"`` if any of ``symbols`` is synthetic, else ``"real"``."""
        infos = self._manifest().infos
        known = self._require(symbols)
        return "synthetic" if any(infos[s].source == "synthetic" for s in known) else "real"

    def coverage(self, symbols: Iterable[str], start: date, end: date) -> Coverage:
        """Unknown symbols, and symbols without a bar between ``start`` and ``end`` (inclusive)."""
        known, unknown = self._resolve(symbols)
        lo, hi = _utc_range(start, end)
        infos = self._manifest().infos
        overlapping = [
            s for s in known if _micros(infos[s].first) < hi and _micros(infos[s].last) >= lo
        ]
        counts = dict.fromkeys(known, 0)
        for symbol, (ts, _) in zip(overlapping, self._read(overlapping, lo, hi, ()), strict=True):
            counts[symbol] = len(ts)
        empty = tuple(s for s in known if counts[s] == 0)
        close = {
            u: m
            for u in unknown[:MAX_SUGGESTED]
            if (m := get_close_matches(u, infos, n=MAX_SUGGESTIONS))
        }
        return Coverage(unknown=tuple(unknown), empty=empty, bars=counts, suggestions=close)

    def _read(
        self, symbols: Sequence[str], lo: int, hi: int, columns: Sequence[str]
    ) -> list[tuple[Any, Any]]:
        """Per symbol, the epoch-µs timestamps in ``[lo, hi)`` and a Table of those rows.

        Each file is read through one open handle, so a concurrent ``os.replace`` yields the old
        or the new file, never a mix (readers that reopen a path, as DuckDB does, can see both).
        """

        parts = []
        for symbol in symbols:
            with self._files.open(self.path_of(symbol)) as fh:
                reader = pq.ParquetFile(fh, pre_buffer=False)
                table = reader.read(columns=["timestamp", *columns], use_threads=False)
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            if len(ts) and (ts[0] < lo or ts[-1] >= hi):
                mask = (ts >= lo) & (ts < hi)
                ts, table = ts[mask], table.filter(pa.array(mask))
            parts.append((ts, table))
        return parts

    def steps(self, symbols: Iterable[str], start: date, end: date) -> Iterator[Step]:
        """Timesteps in time order between ``start`` and ``end`` (inclusive UTC dates); each step
        has the bar of every requested symbol that has a bar at that time, in request order."""
        wanted = self._require(symbols)
        lo, hi = _utc_range(start, end)
        parts = self._read(wanted, lo, hi, BAR_COLUMNS)
        ts = np.concatenate([p[0] for p in parts])
        rank = np.repeat(np.arange(len(wanted)), [len(p[0]) for p in parts])
        order = np.lexsort((rank, ts))
        columns = [
            np.concatenate([p[1].column(c).to_numpy() for p in parts])[order].tolist()
            for c in BAR_COLUMNS
        ]
        return _iter_steps(ts[order], [wanted[i] for i in rank[order].tolist()], columns)

    def frame(
        self, symbol: str, start: date | None = None, end: date | None = None
    ) -> pd.DataFrame:
        """One symbol's bars: UTC DatetimeIndex ``timestamp``; open, high, low, close, volume."""
        (known,) = self._require([symbol])
        ((_, table),) = self._read([known], *_utc_range(start, end), BAR_COLUMNS)
        return cast(pd.DataFrame, table.to_pandas()).set_index("timestamp")

    # -- writing -----------------------------------------------------------------------------

    def write_symbol(
        self, symbol: str, bars: Any, source: Source, content_hash: str | None = None
    ) -> SymbolInfo:
        """Replace ``symbol``'s bars atomically (see :class:`SymbolData` for ``bars``)."""
        (info,) = self.write_many([SymbolData(symbol, bars, source, content_hash)])
        return info

    def write_many(self, items: Sequence[SymbolData]) -> list[SymbolInfo]:
        """Replace several symbols, each atomically, with one manifest update."""
        if isinstance(self._files, S3Root):
            return self._put_many(self._files, items)
        staged: list[tuple[Path, Path, SymbolInfo]] = []
        symbols_dir = Path(self._symbols_dir)
        symbols_dir.mkdir(parents=True, exist_ok=True)
        try:
            # Writing and fsyncing release the GIL: a few threads overlap them.
            with ThreadPoolExecutor(max_workers=_STAGE_THREADS) as pool:
                futures = [pool.submit(self._stage, item) for item in items]
            staged.extend(f.result() for f in futures if f.exception() is None)
            for future in futures:
                if (error := future.exception()) is not None:
                    raise error
            with self._locked():
                current = self._read_manifest_file()
                for tmp, final, info in staged:
                    os.replace(tmp, final)
                    current[info.symbol] = info
                _fsync_dir(symbols_dir)
                self._write_manifest(current)
        finally:
            for tmp, _, _ in staged:
                with suppress(FileNotFoundError):
                    tmp.unlink()
        return [info for _, _, info in staged]

    def _put_many(self, root: S3Root, items: Sequence[SymbolData]) -> list[SymbolInfo]:
        """:meth:`write_many` on S3: one PUT per symbol, then the manifest (:meth:`_commit`)."""
        prepared = [self._prepare(item) for item in items]
        written: dict[str, tuple[SymbolInfo, str]] = {}
        for table, info in prepared:
            sink = io.BytesIO()
            pq.write_table(table, sink, compression="zstd")
            written[info.symbol] = (info, root.put(self.path_of(info.symbol), sink.getvalue()))
        self._commit(root, written)
        return [info for _, info in prepared]

    def _commit(self, root: S3Root, written: Mapping[str, tuple[SymbolInfo, str]]) -> None:
        """Put the entries of the symbols this writer stored (info and the ETag its PUT returned)
        into the manifest on S3 by compare-and-swap; with none, only create a missing manifest.

        An attempt reads the manifest and its ETag (none: the entries of the Parquet footers),
        lists ``symbols/`` once, and PUTs the manifest ``If-Match`` that ETag (``If-None-Match:
        *`` when there was none). A 412 or 409 means another writer's PUT came in between: the
        next attempt starts over after a short jittered pause; after ``_CAS_ATTEMPTS`` a
        :class:`~farm.errors.Conflict` (the CLI prints its message).

        A symbol's entry describes the file stored when the manifest PUT succeeds, even when
        importers race on that symbol: it is our info only while the listed ETag is the one our
        PUT returned, else the info in the footer of the file stored then. Why that holds: every
        writer PUTs its files before it reads the manifest. Take the last successful manifest PUT
        by a writer of symbol X: by W, whose attempt read the manifest at ``m``, saw X's file (in
        the listing, or its footer) at ``r > m`` and succeeded at ``t``. Had another writer V put
        X at ``p`` in ``(r, t)``, V's manifest PUT would succeed after ``p``: not after ``t`` (W's
        is the last), nor in ``(m, t)`` (W's ``If-Match`` would then fail). So X's file at ``t``
        is the one W saw (S3's listings are strongly consistent, so the listing counts as a read).
        Only a writer that dies between its file and manifest PUTs leaves an entry behind its
        file, until the next import of that symbol.
        """
        from s3fs.utils import FileExpired  # a file replaced while its footer was read

        for attempt in range(_CAS_ATTEMPTS):
            try:
                self._compare_and_swap(root, written)
                return
            except (WriteConflict, FileExpired):
                pause = min(_CAS_MAX_BACKOFF_S, _CAS_BACKOFF_S * 2**attempt)
                clock.sleep(random.uniform(pause / 2, pause))  # noqa: S311 - jitter, not a secret
        raise Conflict(
            f"{self._manifest_path}: other writers changed it during each of {_CAS_ATTEMPTS} "
            "attempts to update it; the bars are stored, run the import again to list them"
        )

    def _compare_and_swap(
        self, root: S3Root, written: Mapping[str, tuple[SymbolInfo, str]]
    ) -> None:
        """One attempt of :meth:`_commit` (:class:`WriteConflict` when another writer's manifest
        PUT came first, s3fs's ``FileExpired`` when a footer changed while it was read)."""
        found = root.read_version(self._manifest_path)
        if found is not None and not written:
            return  # another process wrote the missing manifest
        current = self._scan_files() if found is None else _parse_manifest(found[0])
        etags = root.etags(self._symbols_dir) if written else {}
        for symbol, (info, etag) in written.items():
            stored = info if etags.get(f"{symbol}.parquet") == etag else None
            if stored is None and (stored := self._footer_info(symbol)) is None:
                current.pop(symbol, None)
            else:
                current[symbol] = stored
        body = _manifest_bytes(current)
        if found is None:
            root.put(self._manifest_path, body, if_absent=True)
        else:
            root.put(self._manifest_path, body, if_match=found[1])

    def _stage(self, item: SymbolData) -> tuple[Path, Path, SymbolInfo]:
        table, info = self._prepare(item)
        final = Path(self.path_of(info.symbol))
        tmp = final.parent / f".{info.symbol}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        return tmp, final, info

    def _prepare(self, item: SymbolData) -> tuple[Any, SymbolInfo]:
        """The checked table of ``item`` (its info in the footer metadata) and its info."""
        symbol = normalize_symbol(item.symbol)
        if item.source not in SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(SOURCES)}, not {item.source!r}")
        table = _to_table(symbol, item.bars)
        ts = table.column("timestamp").cast(pa.int64())
        info = SymbolInfo(
            symbol=symbol,
            first=_from_micros(ts[0].as_py()),
            last=_from_micros(ts[-1].as_py()),
            bars=table.num_rows,
            source=item.source,
            content_hash=item.content_hash,
        )
        meta = {b"farm": json.dumps(_info_to_json(info)).encode()}
        return table.replace_schema_metadata(meta), info

    def _rebuild_manifest(self) -> None:
        """Write the missing manifest from the Parquet footers (unless another process does)."""
        if isinstance(self._files, S3Root):
            self._commit(self._files, {})
            return
        with self._locked():
            if self._files.identity(self._manifest_path) is None:
                self._write_manifest(self._scan_files())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Local manifest updates one at a time, across processes: ``flock`` on ``.lock``."""
        folder = Path(self._files.url)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ".lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _read_manifest_file(self) -> dict[str, SymbolInfo]:
        try:
            return _parse_manifest(self._files.read(self._manifest_path))
        except FileNotFoundError:
            return self._scan_files()

    def _parquet_names(self) -> list[str]:
        return sorted(n for n in self._files.names(self._symbols_dir) if n.endswith(".parquet"))

    def _scan_files(self) -> dict[str, SymbolInfo]:
        """Rebuild manifest entries from the metadata in each Parquet footer."""
        symbols = (name.removesuffix(".parquet") for name in self._parquet_names())
        return {symbol: info for symbol in symbols if (info := self._footer_info(symbol))}

    def _footer_info(self, symbol: str) -> SymbolInfo | None:
        """The info :meth:`_prepare` put in the footer of ``symbol``'s file (None without)."""
        try:
            with self._files.open(self.path_of(symbol)) as fh:
                meta = pq.read_schema(fh).metadata or {}
        except FileNotFoundError:
            return None
        return _info_from_json(symbol, json.loads(meta[b"farm"])) if b"farm" in meta else None

    def _write_manifest(self, infos: Mapping[str, SymbolInfo]) -> None:
        """Replace the local manifest (under :meth:`_locked`)."""
        self._files.write(self._manifest_path, _manifest_bytes(infos))
        _fsync_dir(Path(self._files.url))


def _parse_manifest(data: bytes) -> dict[str, SymbolInfo]:
    raw = json.loads(data)
    return {sym: _info_from_json(sym, entry) for sym, entry in raw["symbols"].items()}


def _manifest_bytes(infos: Mapping[str, SymbolInfo]) -> bytes:
    body = {
        "version": _MANIFEST_VERSION,
        "symbols": {s: _info_to_json(infos[s]) for s in sorted(infos)},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _iter_steps(ts: Any, symbols: list[str], columns: list[list[float]]) -> Iterator[Step]:
    """Group rows sorted by time into Steps; builds Bars only, no per-row pandas work."""
    if len(ts) == 0:
        return
    bounds = np.flatnonzero(np.diff(ts)).tolist()
    starts = [0, *(b + 1 for b in bounds)]
    ends = [*(b + 1 for b in bounds), len(ts)]
    o, h, lo_, c, v = columns
    ts_list = ts.tolist()
    for a, b in zip(starts, ends, strict=True):
        bars = map(Bar, o[a:b], h[a:b], lo_[a:b], c[a:b], v[a:b])
        yield Step(ts=_from_micros(ts_list[a]), bars=dict(zip(symbols[a:b], bars, strict=True)))
