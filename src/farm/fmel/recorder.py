"""The host-side FMEL recorder: batches records and commits them as atomic Parquet part files.

It lives in the host process, never in the sandbox, so whatever the agent does (crash, kill,
hang) every record the host received is written on ``close()``. Each flush writes a temp file
and renames it into place: readers only ever see whole part files. A crash of the host itself
loses at most the records not flushed yet (at most ``batch_size`` of them or ``flush_seconds``
worth).

With ``max_bytes`` set, a session stops recording once its parts would pass that many bytes:
every later record is dropped and counted, and ``_capped.json`` in the session folder says so.
Pending records are flushed by count, age or estimated size (``batch_bytes``). By age, each
recorder's own thread flushes them; recorders given an :class:`FmelFlusher` share its one thread
instead (the paper runtime's hundreds of sessions).
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import msgspec

from farm.core.orders import ClosedTrade, Fill, OrderEvent
from farm.fmel.layout import (
    CAPPED_NAME,
    check_id,
    commit,
    micros,
    part_name,
    session_dir,
    session_folder,
    write_part,
)
from farm.fmel.records import (
    KINDS,
    MAX_DATA_ACCESSES,
    MAX_HOOK_ERROR_CHARS,
    MAX_HOOK_ERRORS,
    MAX_INDICATOR_LINES,
    MAX_REASONING_CHARS,
    RECONCILED,
    Action,
    Bar,
    DataAccess,
    DecisionRecord,
    ExecutionRecord,
    Holding,
    Indicator,
    Mode,
    Order,
    Record,
    TradeRecord,
    decision_id,
    to_table,
)
from farm.fmel.store import connect
from farm.fmel.summary import SUMMARIZED_KINDS, SUMMARY_NAME, summarize, write_summary
from farm.storage.objects import LocalRoot, Root

log = logging.getLogger("farm.fmel.recorder")

PART_OVERHEAD = 64 * 1024
"""Bytes allowed for a part file's footer and headers beyond its records."""
_SIZE = msgspec.msgpack.Encoder()


class CapReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a recording stored and what it dropped at the byte cap (``_capped.json``)."""

    cap_bytes: int | None
    stored_bytes: int
    dropped: dict[str, int]

    @property
    def capped(self) -> bool:
        """True when records were dropped at the cap."""
        return any(self.dropped.values())


class FmelRecorder:
    """Records one session's decisions, executions and trades under ``root``."""

    def __init__(
        self,
        root: Path | Root,
        agent_id: str,
        session_id: str,
        user_id: str,
        mode: Mode | str,
        *,
        batch_size: int = 5000,
        flush_seconds: float = 5.0,
        batch_bytes: int = 16 * 1024 * 1024,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        flusher: FmelFlusher | None = None,
        staging: Path | None = None,
        fence: Callable[[], bool] | None = None,
    ) -> None:
        if batch_size < 1 or flush_seconds <= 0:
            raise ValueError("batch_size must be >= 1 and flush_seconds > 0")
        self.agent_id = check_id("agent_id", agent_id)
        self.session_id = check_id("session_id", session_id)
        self.user_id = user_id
        self.mode = Mode(mode).value
        self._remote: tuple[Root, str] | None = None
        if isinstance(root, Path | LocalRoot):
            local = root if isinstance(root, Path) else root.folder
            self.directory = session_dir(local, agent_id, session_id)
        else:  # written locally first, each committed file then PUT (atomic per object)
            if staging is None:
                raise ValueError("an FMEL recorder on object storage needs a staging folder")
            self.directory = session_dir(staging, agent_id, session_id)
            self._remote = (root, session_folder(root, agent_id, session_id))
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        self.batch_bytes = batch_bytes
        self.max_bytes = max_bytes
        self._clock = clock
        self._fence = fence
        self._token = uuid.uuid4().hex[:12]
        self._pending: dict[str, list[Record]] = {kind: [] for kind in KINDS}
        self._count = 0
        self._oldest: float | None = None
        self._pending_bytes = 0
        self._stored_bytes = 0
        self._dropped = dict.fromkeys(KINDS, 0)
        self._parts = 0
        self._summarized: list[str] = []
        self._executions = 0
        self._trades = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self._flusher = flusher
        self._ticker: threading.Thread | None = None
        if flusher is None:
            self._ticker = threading.Thread(
                target=self._tick, name=f"fmel-flush-{session_id}", daemon=True
            )
            self._ticker.start()
        else:
            flusher.add(self)

    def __enter__(self) -> FmelRecorder:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def parts_written(self) -> int:
        """How many part files this recorder has committed."""
        return self._parts

    @property
    def report(self) -> CapReport:
        """Bytes stored so far and records dropped at the cap, by kind."""
        with self._lock:
            return CapReport(
                cap_bytes=self.max_bytes,
                stored_bytes=self._stored_bytes,
                dropped=dict(self._dropped),
            )

    def record_decision(
        self,
        *,
        seq: int,
        bar_ts: datetime,
        bars: Sequence[Bar],
        cash: float,
        value: float,
        orders: Sequence[Order] = (),
        cancels: Sequence[str] = (),
        positions: Sequence[Holding] = (),
        reasoning: str | None = None,
        reasoning_truncated: bool = False,
        confidence: float | None = None,
        indicators: Sequence[Indicator] = (),
        data_accesses: Sequence[DataAccess] = (),
        accesses_dropped: int = 0,
        hook_errors: Sequence[str] = (),
        wall_ts: datetime | None = None,
    ) -> DecisionRecord:
        """Record decision ``seq`` (caps and cleans the agent-reported fields); returns it.

        ``reasoning_truncated`` and ``accesses_dropped`` say what was cut before it got here.
        """
        errors = [e[:MAX_HOOK_ERROR_CHARS] for e in hook_errors]
        if reasoning is not None and len(reasoning) > MAX_REASONING_CHARS:
            reasoning = reasoning[:MAX_REASONING_CHARS]
            reasoning_truncated = True
        if confidence is not None and not (math.isfinite(confidence) and 0 <= confidence <= 1):
            errors.append(f"get_decision_confidence: {confidence!r} is not in [0, 1]; dropped")
            confidence = None
        sides = {o.side for o in orders}
        record = DecisionRecord(
            decision_id=decision_id(self.session_id, seq),
            session_id=self.session_id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            mode=self.mode,
            seq=seq,
            bar_ts=_utc(bar_ts),
            wall_ts=_utc(wall_ts) if wall_ts else datetime.now(UTC),
            action=_action(sides),
            symbols=sorted({o.symbol for o in orders} | {a.symbol for a in data_accesses}),
            bars=list(bars),
            positions=list(positions),
            cash=cash,
            value=value,
            orders=list(orders),
            cancels=list(cancels),
            reasoning=reasoning,
            reasoning_truncated=reasoning_truncated,
            confidence=confidence,
            indicators=[_finite_indicator(i) for i in indicators[:MAX_INDICATOR_LINES]],
            indicators_truncated=len(indicators) > MAX_INDICATOR_LINES,
            data_accesses=list(data_accesses[:MAX_DATA_ACCESSES]),
            data_accesses_truncated=accesses_dropped > 0 or len(data_accesses) > MAX_DATA_ACCESSES,
            hook_errors=errors[:MAX_HOOK_ERRORS],
        )
        self._add("decisions", record)
        return record

    def record_execution(self, fill: Fill, *, wall_ts: datetime | None = None) -> ExecutionRecord:
        """Record a fill of the host ledger, linked to the decision that placed its order."""
        return self._execution(
            seq=fill.decision_seq,
            order_id=fill.client_order_id,
            symbol=fill.symbol,
            side="buy" if fill.size > 0 else "sell",
            status="filled",
            size=abs(fill.size),
            price=fill.price,
            commission=fill.commission,
            reason="",
            ts=fill.ts,
            wall_ts=wall_ts,
        )

    def record_order_end(
        self,
        event: OrderEvent,
        *,
        seq: int,
        symbol: str,
        side: str,
        wall_ts: datetime | None = None,
    ) -> ExecutionRecord:
        """Record an order of decision ``seq`` that ended unfilled (cancelled, rejected...)."""
        return self._execution(
            seq=seq,
            order_id=event.client_order_id,
            symbol=symbol,
            side=side,
            status=event.status.value,
            size=0.0,
            price=None,
            commission=0.0,
            reason=event.reason,
            ts=event.ts,
            wall_ts=wall_ts,
        )

    def record_correction(
        self, *, seq: int, symbol: str, text: str, ts: datetime, wall_ts: datetime | None = None
    ) -> ExecutionRecord:
        """Record a difference a reconciliation with a real broker found and corrected (status
        ``reconciled``, no order, the sentence as ``reason``), against the decision of step
        ``seq``."""
        return self._execution(
            seq=seq,
            order_id="",
            symbol=symbol,
            side="",
            status=RECONCILED,
            size=0.0,
            price=None,
            commission=0.0,
            reason=text,
            ts=ts,
            wall_ts=wall_ts,
        )

    def _execution(
        self,
        *,
        seq: int,
        order_id: str,
        symbol: str,
        side: str,
        status: str,
        size: float,
        price: float | None,
        commission: float,
        reason: str,
        ts: datetime,
        wall_ts: datetime | None,
    ) -> ExecutionRecord:
        with self._lock:
            self._executions += 1
            number = self._executions
        record = ExecutionRecord(
            execution_id=f"{self.session_id}:x{number}",
            decision_id=decision_id(self.session_id, seq),
            session_id=self.session_id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            mode=self.mode,
            seq=seq,
            order_id=order_id,
            symbol=symbol,
            side=side,
            status=status,
            size=size,
            price=price,
            commission=commission,
            reason=reason,
            ts=_utc(ts),
            wall_ts=_utc(wall_ts) if wall_ts else datetime.now(UTC),
        )
        self._add("executions", record)
        return record

    def record_trade(self, trade: ClosedTrade, *, wall_ts: datetime | None = None) -> TradeRecord:
        """Record a closed trade of the host ledger, linked to its opening and closing decisions."""
        with self._lock:
            self._trades += 1
            number = self._trades
        record = TradeRecord(
            trade_id=f"{self.session_id}:t{number}",
            session_id=self.session_id,
            agent_id=self.agent_id,
            user_id=self.user_id,
            mode=self.mode,
            symbol=trade.symbol,
            size=trade.size,
            entry_ts=_utc(trade.entry_ts),
            exit_ts=_utc(trade.exit_ts),
            entry_price=trade.entry_price,
            exit_price=trade.exit_price,
            pnl=trade.pnl,
            pnl_net=trade.pnl_net,
            commission=trade.commission,
            bars_held=trade.bars_held,
            opened_by_seq=trade.opened_by_seq,
            closed_by_seq=trade.closed_by_seq,
            opened_by_decision_id=decision_id(self.session_id, trade.opened_by_seq),
            closed_by_decision_id=decision_id(self.session_id, trade.closed_by_seq),
            wall_ts=_utc(wall_ts) if wall_ts else datetime.now(UTC),
        )
        self._add("trades", record)
        return record

    def flush(self) -> None:
        """Commit every pending record now (one new part file per record kind).

        If a write fails, the records not written stay pending for the next flush. When the
        ``fence`` says this writer no longer owns the session, they are discarded instead.
        """
        with self._write_lock:
            with self._lock:
                batches = {k: v for k, v in self._pending.items() if v}
                self._pending = {kind: [] for kind in KINDS}
                self._count = 0
                self._oldest = None
                pending_bytes, self._pending_bytes = self._pending_bytes, 0
            if batches and self._fence is not None and not self._fence():
                log.warning("FMEL session %s is no longer this writer's", self.session_id)
                return
            while batches:
                kind, records = next(iter(batches.items()))
                try:
                    written = self._write(kind, records)
                except BaseException:
                    self._restore(batches, pending_bytes)
                    raise
                with self._lock:
                    self._stored_bytes += written
                del batches[kind]

    def _restore(self, batches: dict[str, list[Record]], pending_bytes: int) -> None:
        with self._lock:
            for kind, records in batches.items():
                self._pending[kind][:0] = records
                self._count += len(records)
            self._oldest = self._clock()
            self._pending_bytes += pending_bytes

    def close(self) -> None:
        """Flush what is pending, write the session summary and stop. Idempotent.

        Records after this raise. A summary that cannot be written is only logged: readers scan
        a session without one. A writer the ``fence`` shuts out writes no summary either.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        if self._flusher is not None:
            self._flusher.discard(self)
        self.flush()
        owned = self._fence is None or self._fence()  # else its new writer summarizes it
        if owned and self.report.capped:
            self._write_report()
        if owned and self._summarized:
            try:
                with closing(connect()) as db:
                    write_summary(self.directory, summarize(db, self.directory, self._summarized))
                self._publish(self.directory / SUMMARY_NAME)
            except Exception:
                log.warning("no FMEL summary for session %s", self.session_id, exc_info=True)
        if self._remote is not None:  # every file is on object storage now
            shutil.rmtree(self.directory, ignore_errors=True)
        self._raise_background_error()

    def _add(self, kind: str, record: Record) -> None:
        if self._closed:
            raise RuntimeError("this FMEL recorder is closed")
        self._raise_background_error()
        size = len(_SIZE.encode(record))  # an upper bound of its share of a compressed part
        with self._lock:
            if not self._pending[kind]:
                size += PART_OVERHEAD
            used = self._stored_bytes + self._pending_bytes + size
            capped = any(self._dropped.values())
            if capped or (self.max_bytes is not None and used > self.max_bytes):
                self._dropped[kind] += 1
            else:
                self._pending[kind].append(record)
                self._pending_bytes += size
                self._count += 1
                if self._oldest is None:
                    self._oldest = self._clock()
            full = self._count >= self.batch_size or self._pending_bytes >= self.batch_bytes
        if not capped and any(self._dropped.values()):
            log.warning(
                "FMEL session %s reached its cap of %s bytes", self.session_id, self.max_bytes
            )
            self._write_report()
        if full:
            self.flush()

    def _write_report(self) -> None:
        data = msgspec.json.encode(self.report)
        self._publish(commit(self.directory, CAPPED_NAME, lambda path: path.write_bytes(data)))

    def _publish(self, path: Path) -> None:
        """Copy a committed file to object storage (nothing to do on a local root)."""
        if self._remote is not None:
            root, folder = self._remote
            root.upload(path, f"{folder}/{path.name}")

    def _write(self, kind: str, records: list[Record]) -> int:
        """Commit one part of ``kind``; returns its size in bytes."""
        self._parts += 1
        span = None
        if kind == "decisions":
            times = [micros(r.bar_ts) for r in records]  # type: ignore[union-attr]
            span = (min(times), max(times))
        name = part_name(kind, self._parts, self._token, span)
        path = write_part(self.directory, name, to_table(records, KINDS[kind]))
        self._publish(path)
        if kind in SUMMARIZED_KINDS:
            self._summarized.append(name)
        return path.stat().st_size

    def _tick(self) -> None:
        interval = min(self.flush_seconds / 4, 1.0)
        while not self._stop.wait(interval) and self.flush_if_due():
            pass

    def flush_if_due(self, age: float | None = None) -> bool:
        """Flush when the oldest pending record is ``age`` (``flush_seconds``) old. False when
        the flush failed: the error is raised to the producer on its next call, and no more are
        due."""
        age = self.flush_seconds if age is None else age
        with self._lock:
            due = self._oldest is not None and self._clock() - self._oldest >= age
        if due:
            try:
                self.flush()
            except Exception as exc:  # reported to the producer on its next call
                self._error = exc
                return False
        return True

    def _raise_background_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"an FMEL flush failed: {error}") from error


class FmelFlusher:
    """One thread that flushes the due records of many recorders, in place of one each.

    Each part file costs a few milliseconds whatever its size, so with ``spacing`` a recorder's
    records wait ``spacing`` seconds per recorder registered (when that is longer than its
    ``flush_seconds``): the parts written per second stay bounded however many sessions
    record. With ``idle`` each round of flushes starts once that event is set (its producer is
    between steps), or after waiting ``interval`` for it, and stops when it is cleared (after
    one recorder at least); the next round goes on from there."""

    def __init__(
        self, interval: float = 0.5, spacing: float = 0.0, idle: threading.Event | None = None
    ) -> None:
        self._interval = interval
        self._spacing = spacing
        self._idle = idle
        self._turn = 0
        self._recorders: set[FmelRecorder] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fmel-flusher", daemon=True)
        self._thread.start()

    def add(self, recorder: FmelRecorder) -> None:
        """Flush ``recorder``'s records as they come due, until :meth:`discard`."""
        with self._lock:
            self._recorders.add(recorder)

    def discard(self, recorder: FmelRecorder) -> None:
        """Stop flushing ``recorder`` (its ``close`` flushes the rest)."""
        with self._lock:
            self._recorders.discard(recorder)

    def close(self) -> None:
        """Stop the thread (recorders still registered keep their records until closed)."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with self._lock:
                recorders = list(self._recorders)
            spaced = self._spacing * len(recorders)
            if self._idle is not None:
                self._idle.wait(self._interval)
            start = self._turn % max(len(recorders), 1)  # where the last round stopped
            for n, recorder in enumerate(recorders[start:] + recorders[:start]):
                if n and self._idle is not None and not self._idle.is_set():
                    self._turn = start + n  # the producer is busy again: the rest next round
                    break
                if not recorder.flush_if_due(max(recorder.flush_seconds, spaced)):
                    self.discard(recorder)


def _action(sides: set[str]) -> str:
    if not sides:
        return Action.HOLD.value
    if len(sides) > 1:
        return Action.MIXED.value
    return Action.BUY.value if "buy" in sides else Action.SELL.value


def _finite_indicator(indicator: Indicator) -> Indicator:
    value = indicator.value
    if value is None or math.isfinite(value):
        return indicator
    return Indicator(name=indicator.name, line=indicator.line, value=None)


def _utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()} given to FMEL; use timezone-aware UTC")
    return ts.astimezone(UTC)
