"""The paper runtime: a process (under ``farm up`` or ``farm worker paper``) that runs the paper
sessions it claimed, on the live feed's steps.

Host loops never run in the API process (issue 8). The API process talks to the runtimes through
the database only: ``POST /api/paper-trading/start`` writes a ``starting`` session row, ``stop``
sets its ``stop_requested``; a runtime polls for both every ``FARM_PAPER_POLL_S`` and between
feed steps, and writes everything back in each step's transaction (status, account, positions,
orders, equity, trades). The process that started the runtime keeps a control pipe to it: when
it closes (that process stopped or died) the runtime stops its agents, hands its sessions back
(they stay ``running``, unleased) and exits, so that another runtime, or the next start,
resumes them.

Sessions are leased (:mod:`farm.leases`, issue 13): a runtime claims sessions whose lease lapsed
(new ones, and those of a worker that died or hung), at most
``FARM_PAPER_MAX_SESSIONS_PER_WORKER``, so sessions spread over the paper workers; it renews its
leases every third of ``FARM_PAPER_LEASE_S`` and opens only the sessions it claimed. Every write
of a session is fenced by its lease token (:func:`~farm.leases.held` in the step transaction),
so a runtime that lost a session's lease writes nothing more for it and drops it.

The feed: on the in-process bus (``farm up``) the runtime runs it on a thread of its own; with
``FARM_BUS=redis`` it runs in ``farm feed`` and every runtime reads its steps from Redis Streams
(:mod:`farm.marketdata.fanout`).

Fan-out without a thread per session: the feed's thread publishes a step; the runtime sends it
to every session's agent, then collects the decisions with ``selectors`` until the step budget
(``FARM_PAPER_STEP_TIMEOUT_S``) runs out. An agent that overruns it fails its own session with
``timeout``; one that crashes fails its own with its traceback; the others are not delayed.
One thread (:class:`~farm.fmel.recorder.FmelFlusher`) flushes every session's FMEL records.

A resumed session's account and open orders are restored from the rows its steps persisted
(:mod:`farm.papertrading.restore`); its agent is re-warmed on the bars it had seen without
anything it decides being sent (:meth:`~farm.papertrading.live.LiveSession.restore`).

Run as ``python -m farm.papertrading.runtime CONTROL_FD EVENTS_FD``; the first message on the
control pipe is the settings; the other carries the runtime's ``paper.ready`` back. Its events
(``leaderboard.forward_recorded``) go through the outbox, in each step's transaction.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import math
import os
import queue
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from farm.brokers.factory import session_broker
from farm.brokers.simulated import SimulatedBroker
from farm.config import Settings
from farm.core.account import Account
from farm.core.bars import Step
from farm.events import FORWARD_RECORDED, MARKET_BARS, Event, EventBus, InProcessBus
from farm.fmel.capture import StepCapture
from farm.fmel.layout import part_names, part_span, session_folder
from farm.fmel.recorder import FmelFlusher, FmelRecorder
from farm.fmel.records import Mode
from farm.fmel.store import fmel_staging, open_fmel_root
from farm.leaderboard.forward import ForwardBar
from farm.leaderboard.service import record_forward_result, record_paper_result
from farm.leases import Lease, claim, held, worker_name
from farm.marketdata.alpaca import history_steps
from farm.marketdata.fanout import open_bar_bus
from farm.marketdata.feed import FeedRunner, FeedState
from farm.marketdata.store import BarStore, open_bar_store, open_minute_store
from farm.outbox import emit
from farm.papertrading.live import LiveSession, same_order
from farm.papertrading.persistence import StepRows, apply_events, order_row
from farm.papertrading.repository import OPEN_STATUSES, release
from farm.papertrading.restore import Books, load_books
from farm.processes import launch_module
from farm.sandbox.host import AgentFailure, AgentSession, DecisionRecord, SessionConfig
from farm.sandbox.launcher import SandboxLimits
from farm.storage.artifacts import ArtifactStore, open_artifact_store
from farm.storage.db import Database
from farm.storage.models import (
    Agent,
    MarketFeed,
    PaperAccount,
    PaperOrder,
    PaperSession,
    utcnow,
)
from farm.storage.objects import Root

log = logging.getLogger("farm.paper")

#: A live agent has no total time limit; its step budget bounds it instead.
LIVE_LIMIT_S = 10 * 365 * 86_400
#: Nor a total output limit: FARM_SANDBOX_OUTPUT_KB holds per this many seconds instead.
LIVE_OUTPUT_WINDOW_S = 3600.0
ACTIVE = ("starting", "running")
#: The runtime's first event: its feed left the ``starting`` state.
READY = "paper.ready"
READY_TIMEOUT_S = 30.0
#: How long a stopping runtime waits for a session being opened.
STOP_GRACE_S = 30.0
#: How often a session's leaderboard rows and forward bars are brought up to date; with many
#: sessions, each is ranked every ``RANK_SPACING_S`` times the number of sessions at most, so
#: ranking keeps a bounded share of the loop. Ranking runs between steps, in slices of
#: ``RANK_SLICE_S`` (of at most ``RANK_BATCH`` sessions), so a new bar waits for one at most.
RANK_EVERY_S = 5.0
RANK_SPACING_S = 0.05
RANK_SLICE_S = 0.02
RANK_BATCH = 32
#: Seconds a session's FMEL records may wait per session running before their part is written
#: (5 s at least): 200 sessions write a part each 10 s, a running session's records are
#: queryable within that.
FMEL_SPACING_S = 0.05
#: The runtime makes Python's full (generation 2) garbage collections itself, between steps,
#: every ``FULL_GC_S``, and freezes what survives (a full collection of hundreds of sessions'
#: objects pauses the process ~0.2 s: on its own it would land in the middle of a step). Every
#: ``UNFREEZE_EVERY`` collections the frozen objects are collected again.
FULL_GC_S = 30.0
UNFREEZE_EVERY = 20
FULL_GC_THRESHOLD = 1_000_000
#: The longest a decision waits to be persisted with those of the sessions still deciding.
SAVE_DELAY_S = 0.5
#: Sessions launched and warmed up at once (their agents start while others warm up).
OPENERS = 4
#: Stored step ranges kept in memory: sessions opening together read their bars once.
STEP_CACHE = 32


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a session needs to (re)start, read from its row."""

    agent_file: Path
    symbols: list[str]
    warmup: int
    commission: float
    cash: float
    first: datetime | None
    last: datetime | None
    published: datetime | None  # the feed's saved position
    bound: datetime | None  # the last step the loop had taken when it asked for the session
    replay_start: date | None  # the replay's first date: live bars start there at the earliest
    books: Books | None  # resumed: what its steps persisted


class SessionFailed(Exception):
    """A session cannot go on: ``reason`` as the API reports it, and the message."""

    def __init__(self, reason: str, message: str, traceback: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.traceback = traceback


def recorded_until(root: Root, agent_id: str, session_id: str) -> int:
    """The last decision seq of a session already in FMEL (-1 when none).

    A session's seqs grow with its bar times, so only the parts whose span reaches its latest
    bar time are read (and any part without a span): one GET on object storage, not one per
    part."""
    folder = session_folder(root, agent_id, session_id)
    spans = {n: part_span(n) for n in part_names(root.names(folder), "decisions")}
    latest = max((span[1] for span in spans.values() if span), default=None)
    seqs = [-1]
    for name in (n for n, span in spans.items() if span is None or span[1] == latest):
        with root.open(f"{folder}/{name}") as handle:
            seqs.extend(pq.read_table(handle, columns=["seq"]).column("seq").to_pylist())
    return max(seqs)


class PaperRuntime:
    """The paper sessions this process claimed, driven by the feed's steps (see the module
    doc)."""

    def __init__(
        self,
        db: Database,
        bars: BarStore,
        artifacts: ArtifactStore,
        settings: Settings,
    ) -> None:
        self._db = db
        self._bars = bars
        # on the Alpaca feed, sessions re-warm and catch up on the minute bars it stored
        self._minutes = open_minute_store(settings) if settings.feed == "alpaca" else None
        self._read_steps = functools.lru_cache(maxsize=STEP_CACHE)(self._read)
        self._artifacts = artifacts
        self._settings = settings
        self._bus: EventBus
        self._feed: FeedRunner | None = None
        if settings.bus == "memory":  # the feed runs here
            self._bus = InProcessBus()
            self._feed = FeedRunner(db, bars, self._bus, settings)
        else:  # in `farm feed`, publishing on Redis Streams
            self._bus = open_bar_bus(settings)
        self._bus.subscribe(MARKET_BARS, self._on_bars)
        self.owner = worker_name()
        self._leases: dict[str, Lease] = {}  # the sessions claimed, opened or not
        self._renew_at = 0.0
        self._stop = threading.Event()
        self._steps: queue.SimpleQueue[tuple[Step, float]] = queue.SimpleQueue()
        self._first_taken: datetime | None = None  # bar times of the steps taken so far
        self._last_taken: datetime | None = None
        self._to_open: queue.SimpleQueue[tuple[str, datetime | None]] = queue.SimpleQueue()
        self._opened: queue.SimpleQueue[tuple[LiveSession, StepCapture, _Plan]] = (
            queue.SimpleQueue()
        )
        self._opening: set[str] = set()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        self.sessions: dict[str, LiveSession] = {}
        #: Decisions taken and not persisted yet, saved together (:meth:`_save_due`).
        self._unsaved: dict[str, tuple[Step, DecisionRecord | None]] = {}
        self._unsaved_since = 0.0
        self._watched: dict[int, LiveSession] = {}  # agents' fds on the loop's selector
        self._next_gc = 0.0  # when the next full collection is due (see FULL_GC_S)
        self._full_gcs = 0
        self._rank_more = False  # a ranking slice ended before every due session was ranked
        self._ranked_last = 0.0  # when the last ranking slice ran
        self._captures: dict[str, StepCapture] = {}
        #: Set between steps: the one thread flushing every session's FMEL records waits for it.
        self._idle = threading.Event()
        self._flusher = FmelFlusher(spacing=FMEL_SPACING_S, idle=self._idle)
        #: Called with each bar-to-decision latency (publication to orders at the broker), s.
        self.latency_probe: Callable[[float], None] | None = None

    def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """The runtime's loop until :meth:`stop`: take the feed's steps, serve start and stop
        requests, send each session its next step and collect the decisions as they come.
        ``ready`` is called once the feed has left its ``starting`` state."""
        openers = [
            threading.Thread(target=self._open_sessions, name=f"paper-opener-{i}", daemon=True)
            for i in range(OPENERS)
        ]
        for opener in openers:
            opener.start()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_GC_THRESHOLD)  # full collections: see FULL_GC_S
        if self._feed is not None:
            self._feed.start()
            deadline = time.monotonic() + READY_TIMEOUT_S
            while self._feed.status().state == FeedState.STARTING and time.monotonic() < deadline:
                self._stop.wait(0.02)
        else:
            self._bus.start()
        ready()
        next_sync = 0.0
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(self._wake_read, selectors.EVENT_READ, None)
                while not self._stop.is_set():
                    now = time.monotonic()
                    try:
                        if now >= next_sync:
                            next_sync = now + self._settings.paper_poll_s
                            self._sync()
                        self._take_steps()
                        self._adopt()
                        self._send_due()
                        self._collect(selector, min(next_sync, self._next_deadline()))
                        self._save_due()
                        self._rank_due()
                        self._mark_idle()
                    except Exception:  # a platform bug or the database down: keep serving
                        log.exception("the paper runtime's loop failed; going on")
                        self._stop.wait(self._settings.paper_poll_s)
        finally:
            for _ in openers:
                self._to_open.put(("", None))
            if self._feed is not None:
                self._feed.stop()
            else:
                self._bus.close()
            deadline = time.monotonic() + STOP_GRACE_S
            for opener in openers:
                opener.join(max(deadline - time.monotonic(), 0.0))
            self._adopt()
            self._save_unsaved()
            for live in list(self.sessions.values()):
                self._close(live)
            self._flusher.close()
            try:
                self._hand_back()
            except Exception:  # the leases lapse after FARM_PAPER_LEASE_S instead
                log.exception("the paper runtime could not hand its sessions back")

    def stop(self) -> None:
        """End :meth:`run` (sessions stay ``running`` in the database, handed back: another
        runtime, or the next start, resumes them)."""
        self._stop.set()
        os.write(self._wake_write, b"x")

    # -- requests from the API --------------------------------------------------------------

    def _sync(self) -> None:
        """Renew the leases when due, claim sessions while there is room, start those claimed
        (new or resumed), drop those whose lease was lost, and act on stop requests."""
        now = time.monotonic()
        if now >= self._renew_at:
            self._renew_at = now + self._settings.paper_lease_s / 3
            self._renew()
        room = self._settings.paper_max_sessions_per_worker - len(self._leases)
        if room > 0:
            for lease in claim(
                self._db, PaperSession, self.owner, self._settings.paper_lease_s, room
            ):
                self._leases[lease.session_id] = lease
        with self._db.transaction() as session:
            rows = session.execute(
                select(
                    PaperSession.id,
                    PaperSession.lease_token,
                    PaperSession.stop_requested,
                    PaperSession.liquidate,
                ).where(PaperSession.lease_owner == self.owner, PaperSession.status.in_(ACTIVE))
            ).all()
        wanted = {
            r.id: (r.stop_requested, r.liquidate)
            for r in rows
            if r.id in self._leases and self._leases[r.id].token == r.lease_token
        }
        self._leases = {sid: lease for sid, lease in self._leases.items() if sid in wanted}
        self._opening &= wanted.keys()  # those that failed to open are done
        for sid in [s for s in self.sessions if s not in wanted]:
            self._unsaved.pop(sid, None)
            # gone (its agent or account was deleted), or its lease was lost
            self._close(self.sessions[sid], lost=True)
        for sid, (stop, liquidate) in wanted.items():
            live = self.sessions.get(sid)
            if sid in self._opening:
                continue
            if live is None and not stop:
                self._opening.add(sid)
                self._to_open.put((sid, self._last_taken))
            elif live is None:
                self._finish(sid, "stopped")
            elif (
                stop and not live.liquidating and live.inflight is None and sid not in self._unsaved
            ):
                self._stop_session(live, liquidate)

    def _renew(self) -> None:
        """The heartbeat: move the expiry of every lease this runtime holds."""
        expires = utcnow() + timedelta(seconds=self._settings.paper_lease_s)
        with self._db.transaction() as session:
            session.execute(
                update(PaperSession)
                .where(PaperSession.lease_owner == self.owner, PaperSession.status.in_(ACTIVE))
                .values(lease_expires_at=expires)
            )

    def _hand_back(self) -> None:
        """Give up every lease this runtime holds (it stops): another runtime may take the
        sessions at once."""
        with self._db.transaction() as session:
            session.execute(
                update(PaperSession)
                .where(PaperSession.lease_owner == self.owner, PaperSession.status.in_(ACTIVE))
                .values(lease_owner=None, lease_token=None, lease_expires_at=None)
            )
        self._leases.clear()

    def _held(self, session: Session, ids: Iterable[str]) -> set[str]:
        """The fence of a transaction writing for sessions ``ids``: locks their rows and
        returns those this runtime still holds (it must write nothing for the others)."""
        return held(session, [self._leases[sid] for sid in ids if sid in self._leases])

    def _open_sessions(self) -> None:
        """An opener thread (``OPENERS`` of them): launches and warms up the sessions
        requested, so the loop never waits for an agent to start."""
        while True:
            session_id, taken = self._to_open.get()
            if not session_id:
                return
            try:
                self._open(session_id, taken)
            except Exception:
                log.exception("paper session %s could not be opened", session_id)
            os.write(self._wake_write, b"x")

    def _adopt(self) -> None:
        """Take the sessions the opener prepared: each gets, from the bar store, the steps
        taken since its warm-up (or, resumed, since its last bar) before any new one."""
        while True:
            try:
                live, capture, plan = self._opened.get_nowait()
            except queue.Empty:
                return
            self._opening.discard(live.id)
            lo = plan.last if plan.last is not None else plan.bound or self._first_taken
            hi = max((t for t in (self._last_taken, plan.published) if t is not None), default=None)
            if lo is not None and hi is not None:
                now = time.monotonic()
                for step in self._stored_steps(plan.symbols, lo, hi):
                    if plan.last is not None or plan.bound is None or step.ts > plan.bound:
                        live.enqueue(step, now)  # bars it missed while down or starting
            self.sessions[live.id] = live
            self._captures[live.id] = capture

    def _open(self, session_id: str, taken: datetime | None) -> None:
        """Launch the session's agent, warm it up (or re-warm it after a restart); the loop
        adopts it. ``taken`` is the last step the loop had taken when it asked."""
        with self._db.transaction() as session:
            row = session.get(PaperSession, session_id)
            assert row is not None
            agent = session.get(Agent, row.agent_id)
            account = session.get(PaperAccount, row.account_id)
            feed = session.get(MarketFeed, self._settings.feed)
            assert agent is not None
            assert account is not None
            resuming = row.last_bar_time is not None
            problem = ""
            plan = _Plan(
                agent_file=self._artifacts.local_path(agent.artifact_key),
                symbols=list(row.symbols),
                warmup=row.warmup_bars,
                commission=row.commission,
                cash=float(row.initial_cash if resuming else account.cash),
                first=row.first_bar_time,
                last=row.last_bar_time,
                published=feed.last_bar_time if feed is not None else None,
                bound=taken,
                replay_start=feed.replay_start if feed is not None else None,
                books=load_books(session, row) if resuming else None,
            )
            refused = session.execute(
                select(PaperOrder.client_order_id, PaperOrder.reason).where(
                    PaperOrder.session_id == session_id, PaperOrder.status == "rejected"
                )
            ).all()
            try:
                live = self._session(row, plan, account, {c: r or "" for c, r in refused})
            except Exception as exc:  # e.g. Alpaca unreachable or the key refused
                log.warning("paper session %s: no broker: %s", session_id, exc)
                problem = f"the broker could not be reached: {type(exc).__name__}: {exc}"
        if problem:
            self._finish(session_id, "failed", SessionFailed("internal_error", problem))
            return
        settings = self._settings
        lease = self._leases.get(session_id)
        recorder = FmelRecorder(
            open_fmel_root(settings),
            live.agent_id,
            session_id,
            live.user_id,
            Mode.PAPER,
            flusher=self._flusher,
            staging=fmel_staging(settings),
            # records of a session whose lease was lost here are discarded, not written
            fence=lambda: lease is not None and self._leases.get(session_id) is lease,
        )
        capture = StepCapture(recorder)
        try:
            live.agent.start()
            self._warm_up(live, capture, plan)
            live.agent.restart_output_window()  # what the warm-up printed is not live output
        except AgentFailure as exc:
            failure = SessionFailed(exc.reason, exc.message, exc.traceback)
        except Exception as exc:  # e.g. the sandbox cannot be set up on this host
            log.exception("paper session %s could not start", session_id)
            failure = SessionFailed("internal_error", f"the session could not start: {exc}")
        else:
            self._opened.put((live, capture, plan))
            log.info("paper session %s %s", session_id, "resumed" if resuming else "started")
            return
        live.agent.close()
        recorder.close()
        self._finish(session_id, "failed", failure)

    def _session(
        self, row: PaperSession, plan: _Plan, account: PaperAccount, refused: dict[str, str]
    ) -> LiveSession:
        """The session's agent (not started yet), its account and its broker."""
        settings = self._settings
        limits = SandboxLimits.from_settings(settings)
        limits = dataclasses.replace(
            limits, cpu_s=LIVE_LIMIT_S, wall_s=LIVE_LIMIT_S, output_window_s=LIVE_OUTPUT_WINDOW_S
        )
        agent = AgentSession(
            plan.agent_file,
            SessionConfig(
                symbols=tuple(plan.symbols),
                cash=plan.cash,
                commission=plan.commission,
                record_decisions=True,
                mode=settings.sandbox,
                limits=limits,
                uid=settings.sandbox_uid,
                step_timeout_s=settings.paper_step_timeout_s,
            ),
        )
        resumed = plan.cash if plan.last is not None else None
        broker = session_broker(
            account, resumed, plan.commission, row.created_at, settings, refused
        )
        live = LiveSession(
            row.id,
            row.agent_id,
            row.user_id,
            row.account_id,
            plan.symbols,
            agent,
            broker,
            settings.max_fills,
        )
        live.last_equity = broker.account.cash
        return live

    def _restore_books(
        self,
        live: LiveSession,
        capture: StepCapture,
        commission: float,
        books: Books,
        records: Sequence[DecisionRecord],
    ) -> None:
        """Put the persisted books back under a simulated session (a real broker restores
        from the broker itself)."""
        if isinstance(live.ids.broker, SimulatedBroker):
            broker = books.broker(self._broker(books.account(), commission))
            for agent_id, order in live.restore(broker, books.open_orders, records):
                capture.expect(agent_id, order.decision_seq, order.symbol, order.size)

    def _broker(self, account: Account, commission: float) -> SimulatedBroker:
        settings = self._settings
        return SimulatedBroker(
            account,
            commission,
            max_leverage=settings.max_leverage,
            max_open_orders=settings.max_open_orders,
        )

    def _warm_up(self, live: LiveSession, capture: StepCapture, plan: _Plan) -> None:
        """Stream the warm-up bars; after a restart, re-warm the agent on the bars already
        traded and restore the persisted books. FMEL gets what it does not hold yet."""
        budget = self._settings.paper_step_timeout_s
        recorded = recorded_until(open_fmel_root(self._settings), live.agent_id, live.id)
        first, last, symbols = plan.first, plan.last, plan.symbols
        if first is not None:  # resumed: the bars before its first live one
            steps = self._warmup_steps(symbols, first, plan.warmup, inclusive=False)
        elif plan.bound is not None or plan.published is not None:  # up to the last step out
            bound = plan.bound or plan.published
            steps = self._warmup_steps(symbols, bound, plan.warmup, inclusive=True)
        else:  # no step taken yet: the bars before the replay starts
            start = plan.replay_start
            bound = datetime.combine(start, time_of_day.min, UTC) if start else None
            steps = self._warmup_steps(symbols, bound, plan.warmup, inclusive=False)
        for record in live.warm(steps, budget):
            if record.seq > recorded:
                capture.on_step(record, warmup=True)
        if first is None or last is None or plan.books is None:
            return
        books = plan.books
        sent = books.orders_by_seq()
        records = live.replay(self._stored_steps(symbols, first, last), budget)
        agrees = True  # the re-warm decided every order the session sent, so far
        for record in records:
            placed = sent.get(record.seq, [])
            agrees = agrees and len(placed) == len(record.orders)
            agrees = agrees and all(map(same_order, record.orders, placed))
            if record.seq <= recorded:
                continue
            # Lost with the process that crashed: the re-run is the original while it agrees;
            # after that, the orders are those really sent and its executions are not known.
            if agrees:
                capture.on_step(record)
            else:
                capture.on_step(
                    dataclasses.replace(record, orders=placed, cancels=(), fills=(), events=())
                )
        self._restore_books(live, capture, plan.commission, books, records)
        account = live.account
        if not agrees:
            log.warning(
                "paper session %s: its agent decided differently when re-warmed; "
                "the persisted books stand",
                live.id,
            )
        live.trades_saved = len(account.trades)
        live.fills_saved = len(account.fills)
        live.forward_saved = len(account.equity)  # recorded before, or refused
        if account.equity:
            live.last_equity = account.equity[-1][1]

    def _warmup_steps(
        self, symbols: Sequence[str], bound: datetime | None, n: int, *, inclusive: bool
    ) -> list[Step]:
        """The last ``n`` stored steps of ``symbols`` up to ``bound`` (Alpaca's historical
        bars before ``bound`` or now on the Alpaca feed)."""
        if n > 0 and self._settings.feed == "alpaca":
            return history_steps(self._settings, symbols, bound or utcnow(), n)
        if n <= 0 or bound is None:
            return []
        lo = self._bars_start(symbols)
        if lo is None:
            return []
        steps = [
            s
            for s in self._steps_between(symbols, lo, bound.date())
            if s.ts < bound or (inclusive and s.ts == bound)
        ]
        return steps[-n:]

    def _stored_steps(self, symbols: Sequence[str], first: datetime, last: datetime) -> list[Step]:
        return [
            s
            for s in self._steps_between(symbols, first.date(), last.date())
            if first <= s.ts <= last
        ]

    def _steps_between(self, symbols: Sequence[str], lo: date, hi: date) -> tuple[Step, ...]:
        """The stored steps of ``symbols`` from ``lo`` to ``hi`` (UTC dates), read once while
        the store holds the same bars (its infos are part of the key); the stored minute bars
        on the Alpaca feed."""
        if self._minutes is not None:
            return tuple(self._minutes.steps(symbols, lo, hi))
        infos = tuple(self._bars.info(s) for s in symbols)
        return self._read_steps(tuple(symbols), infos, lo, hi)

    def _read(
        self, symbols: tuple[str, ...], infos: tuple[Any, ...], lo: date, hi: date
    ) -> tuple[Step, ...]:
        return tuple(self._bars.steps(symbols, lo, hi))

    def _bars_start(self, symbols: Sequence[str]) -> Any:
        infos = [i for s in symbols if (i := self._bars.info(s)) is not None]
        return min(i.first for i in infos).date() if infos else None

    def _stop_session(self, live: LiveSession, liquidate: bool) -> None:
        """Cancel the open orders; with ``liquidate`` close the positions at the next bar,
        otherwise stop now."""
        ts = live.engine.last_ts or utcnow()
        events = live.ids.broker.cancel_all(ts)
        with self._db.transaction() as session:
            if not self._held(session, [live.id]):
                return  # lost: the next sync drops it
            apply_events(session, live.account_id, events, [])
        if liquidate and live.account.positions:
            live.liquidating = True
            for n, order in enumerate(live.liquidation_orders(ts), 1):
                cid = live.ids.client_id(order.decision_seq, n)
                live.ids.broker.submit(dataclasses.replace(order, client_order_id=cid))
                with self._db.transaction() as session:
                    if self._held(session, [live.id]):
                        session.execute(insert(PaperOrder), [order_row(live, cid, order)])
            return
        self._close(live)
        self._finish(live.id, "stopped")

    # -- the feed's steps -------------------------------------------------------------------

    def _on_bars(self, event: Event) -> None:
        """The feed's thread published a step: hand it to the runtime's loop."""
        step: Step = event["step"]
        self._steps.put((step, time.monotonic()))
        os.write(self._wake_write, b"x")

    def _take_steps(self) -> None:
        """Queue every new feed step for each session it concerns (in order, once)."""
        while True:
            try:
                step, published = self._steps.get_nowait()
            except queue.Empty:
                return
            self._first_taken = self._first_taken or step.ts
            self._last_taken = step.ts
            for live in self.sessions.values():
                live.enqueue(step, published)

    def _send_due(self) -> None:
        """Send its next step to every session that is not waiting for a decision."""
        failures: dict[str, SessionFailed] = {}
        for live in list(self.sessions.values()):
            while live.inflight is None and live.backlog and live.id not in self._unsaved:
                step, published = live.backlog.popleft()
                if live.liquidating:
                    live.settle(step)
                    self._save({live.id: (step, None)}, failures)
                    break
                try:
                    if live.engine.send(step):
                        # The budget is the agent's: it runs from the send, not from the
                        # publication (a step may wait in the backlog of a busy host).
                        deadline = time.monotonic() + self._settings.paper_step_timeout_s
                        live.inflight = (step, published, deadline)
                except AgentFailure as exc:
                    failures[live.id] = SessionFailed(exc.reason, exc.message, exc.traceback)
                    break
        self._end_failed(failures)

    def _next_deadline(self) -> float:
        deadlines = [live.inflight[2] for live in self.sessions.values() if live.inflight]
        if self._rank_more:
            deadlines.append(0.0)
        if self._unsaved:
            deadlines.append(self._unsaved_since + SAVE_DELAY_S)
        return min(deadlines, default=math.inf)

    def _collect(self, selector: selectors.BaseSelector, until: float) -> None:
        """Wait until ``until`` (or a wake-up) for decisions; record those that came and fail
        the sessions whose step budget ran out."""
        self._watch(selector)
        ready = selector.select(max(until - time.monotonic(), 0.0))
        results: dict[str, tuple[Step, DecisionRecord | None]] = {}
        failures: dict[str, SessionFailed] = {}
        for key, _ in ready:
            if key.data is None:
                self._drain_wake()
                continue
            live = key.data
            if live.inflight is None:  # answered in this turn already
                continue
            step, published, deadline = live.inflight
            live.inflight = None
            try:
                record = live.engine.receive(max(deadline - time.monotonic(), 0.001))
                results[live.id] = (step, record)
                if self.latency_probe is not None:
                    self.latency_probe(time.monotonic() - published)
            except AgentFailure as exc:
                failures[live.id] = SessionFailed(exc.reason, exc.message, exc.traceback)
        now = time.monotonic()
        budget = self._settings.paper_step_timeout_s
        for live in self.sessions.values():
            if live.inflight is not None and live.id not in results and live.inflight[2] <= now:
                live.agent.kill()
                failures[live.id] = SessionFailed(
                    "timeout", f"no decision within the step budget of {budget:g} s"
                )
        if results and not self._unsaved:
            self._unsaved_since = time.monotonic()
        self._unsaved.update(results)
        self._end_failed(failures)

    def _watch(self, selector: selectors.BaseSelector) -> None:
        """Keep the selector on the agents whose decision is awaited: registrations change
        with the sessions sent or done, not at every turn (a step of N sessions takes about N
        turns)."""
        waiting = {live.agent.fileno(): live for live in self.sessions.values() if live.inflight}
        for fd, live in list(self._watched.items()):
            if waiting.get(fd) is not live:  # decided, or closed (its fd may be reused)
                selector.unregister(fd)
                del self._watched[fd]
        for fd, live in waiting.items():
            if fd not in self._watched:
                selector.register(fd, selectors.EVENT_READ, live)
                self._watched[fd] = live

    def _drain_wake(self) -> None:
        while True:
            try:
                if not os.read(self._wake_read, 4096):
                    return
            except BlockingIOError:
                return

    def _save_due(self) -> None:
        """Persist the decisions taken once no session sent a step less than ``SAVE_DELAY_S``
        ago still decides (a step's decisions then go in one transaction, and reading decisions
        comes before writing them), or once the oldest has waited that long: a slow or
        spinning agent delays the others' next bars by ``SAVE_DELAY_S`` once, not per bar."""
        if not self._unsaved:
            return
        now = time.monotonic()
        sent_after = now - SAVE_DELAY_S + self._settings.paper_step_timeout_s  # as deadlines
        deciding = any(
            live.inflight and live.inflight[2] > sent_after for live in self.sessions.values()
        )
        if not deciding or now >= self._unsaved_since + SAVE_DELAY_S:
            self._save_unsaved()

    def _busy(self) -> bool:
        """A step is under way: a decision is awaited, unsaved or queued."""
        return bool(self._unsaved) or any(
            live.inflight or live.backlog for live in self.sessions.values()
        )

    def _mark_idle(self) -> None:
        """Tell the FMEL flusher whether a step is under way; between steps (or when one is
        four times overdue), make the full garbage collection that is due."""
        busy = self._busy()
        if busy:
            self._idle.clear()
        else:
            self._idle.set()
        now = time.monotonic()
        if now >= self._next_gc + (4 * FULL_GC_S if busy else 0.0):  # a pause of its own
            self._next_gc = now + FULL_GC_S
            self._full_gcs += 1
            if self._full_gcs % UNFREEZE_EVERY == 0:
                gc.unfreeze()  # the cyclic garbage of long-lived objects (closed sessions)
            gc.collect()
            gc.freeze()  # what survived is long-lived: later collections skip it

    def _save_unsaved(self) -> None:
        results, self._unsaved = self._unsaved, {}
        failures: dict[str, SessionFailed] = {}
        self._save(results, failures)
        self._end_failed(failures)

    def _save(
        self,
        results: dict[str, tuple[Step, DecisionRecord | None]],
        failures: dict[str, SessionFailed],
    ) -> None:
        """Persist the sessions' steps in one transaction, then record FMEL and end the
        sessions that went bankrupt or finished liquidating. A session whose lease this runtime
        lost writes nothing (the fence) and is dropped."""
        if not results:
            return
        ended: list[LiveSession] = []
        ranked: list[str] = []
        with self._db.transaction() as session:
            kept = self._held(session, results)
            lost = [self.sessions[sid] for sid in results if sid not in kept]
            results = {sid: result for sid, result in results.items() if sid in kept}
            rows = StepRows()
            for sid, (step, record) in results.items():
                live = self.sessions[sid]
                rows.add(live, step, record)
                stopped = live.engine.stopped() if record is not None else None
                if stopped is not None:
                    failures[sid] = SessionFailed(stopped.reason, stopped.message)
                elif live.liquidating:
                    ended.append(live)
                if stopped is not None or live.liquidating:
                    ranked.append(live.agent_id)
            rows.write(session)
            for sid in results:
                live = self.sessions[sid]
                if live.agent_id in ranked:
                    self._rank(session, live)
            for agent_id in ranked:
                emit(session, FORWARD_RECORDED, {"agentId": agent_id})
        self._drop(lost)
        for sid, (_, record) in results.items():
            capture = self._captures.get(sid)
            if record is not None and capture is not None:
                capture.on_step(record)
                capture.on_corrections(record.seq, self.sessions[sid].ids.broker.corrections())
        for live in ended:
            self._close(live)
            self._finish(live.id, "stopped")

    def _drop(self, lost: Iterable[LiveSession]) -> None:
        """Forget the sessions whose lease this runtime lost (another one runs them now)."""
        for live in lost:
            log.warning("paper session %s: this runtime lost its lease; dropping it", live.id)
            self._leases.pop(live.id, None)  # its FMEL recorder's fence closes with it
            self._close(live, lost=True)

    def _rank_due(self) -> None:
        """Bring the leaderboard up to date with the sessions that progressed, at most every
        ``RANK_EVERY_S`` each (less often past 100 sessions). Between steps (no decision
        awaited or unsaved) unless a session waited five times that, and ``RANK_SLICE_S`` at
        a time, so ranking does not delay the bars."""
        start = time.monotonic()
        every = max(RANK_EVERY_S, RANK_SPACING_S * len(self.sessions))
        self._rank_more = False
        if self._busy() and start < self._ranked_last + 5 * every:
            return  # the loop wakes at least every poll
        due = sorted(
            (
                live
                for live in self.sessions.values()
                if len(live.account.equity) > live.forward_saved and start >= live.ranked_at + every
            ),
            key=lambda live: live.ranked_at,
        )[:RANK_BATCH]
        if not due:
            return
        self._ranked_last = start
        with self._db.transaction() as session:
            kept = self._held(session, [live.id for live in due])
            due = [live for live in due if live.id in kept]
            # held while ranking, so each ``session.get(Agent, ...)`` is found without a query
            ids = [live.agent_id for live in due]
            loaded = session.scalars(select(Agent).where(Agent.id.in_(ids))).all()
            for live in due:
                self._rank(session, live)
                live.ranked_at = start
                emit(session, FORWARD_RECORDED, {"agentId": live.agent_id})
                if time.monotonic() - start >= RANK_SLICE_S:
                    self._rank_more = True  # the loop comes back at once for the rest
                    break
            del loaded

    def _rank(self, session: Session, live: LiveSession) -> None:
        """The session's progress on the leaderboard: its forward bars (the headline board
        keeps those after the agent's submission) and its ``paper_trading`` rows."""
        equity = live.account.equity
        bars = []
        for ts, value in equity[live.forward_saved :]:
            bars.append(ForwardBar(ts, live.last_equity, value))
            live.last_equity = value
        live.forward_saved = len(equity)
        rate = self._settings.risk_free_rate
        record_forward_result(session, live.agent_id, live.id, bars, risk_free_rate=rate)
        record_paper_result(
            session,
            live.agent_id,
            live.user_id,
            live.id,
            equity,
            live.account.trades,
            risk_free_rate=rate,
        )

    def _end_failed(self, failures: dict[str, SessionFailed]) -> None:
        for sid, failure in failures.items():
            live = self.sessions.get(sid)
            if live is None:
                continue
            log.info("paper session %s failed: %s", sid, failure.message)
            self._close(live)
            self._finish(sid, "failed", failure)

    # -- ending sessions --------------------------------------------------------------------

    def _close(self, live: LiveSession, *, lost: bool = False) -> None:
        """Forget a session here: its agent is killed, the FMEL records of its persisted steps
        flushed (and, unless ``lost`` here, its trades recorded)."""
        self.sessions.pop(live.id, None)
        live.agent.close()
        live.ids.broker.close()
        capture = self._captures.pop(live.id, None)
        if capture is not None:
            if not lost:
                capture.on_trades(live.account.trades)
            capture.recorder.close()

    def _finish(self, session_id: str, status: str, failure: SessionFailed | None = None) -> None:
        """Record how the session ended (if this runtime still holds it); its open orders are
        cancelled, the account freed, the lease given up."""
        lease = self._leases.get(session_id)
        with self._db.transaction() as session:
            if lease is None or not held(session, [lease]):
                return
            row = session.get(PaperSession, session_id)
            if row is None:
                return
            row.status = status
            row.lease_owner = row.lease_token = row.lease_expires_at = None
            row.stopped_at = utcnow()
            if failure is not None:
                row.failure_reason = failure.reason
                row.failure_message = failure.message
                row.failure_traceback = failure.traceback or None
            for order in session.scalars(
                select(PaperOrder).where(
                    PaperOrder.session_id == session_id, PaperOrder.status.in_(OPEN_STATUSES)
                )
            ):
                order.status = "cancelled"
            release(session, row)


class RuntimeProcess:
    """The API process's handle on the paper runtime process (started once, under ``farm up``).

    Events that come back on its pipe are published on the API process's bus (its own events
    go through the outbox, relayed by the API process's poller).
    """

    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self._settings = settings
        self._bus = bus
        self._process: subprocess.Popen[bytes] | None = None
        self._control: Connection | None = None
        self._relay: threading.Thread | None = None

    def start(self) -> None:
        """Launch the runtime; it loads the platform and resumes the sessions that were running."""
        self._process, self._control, events = launch_module("farm.papertrading.runtime")
        self._control.send(self._settings)
        if events.poll(READY_TIMEOUT_S + STOP_GRACE_S):  # up when its feed runs
            try:
                events.recv()
            except EOFError:
                log.error("the paper runtime process ended as it started; see its log")
        self._relay = threading.Thread(
            target=self._relay_events, args=(events,), name="paper-events", daemon=True
        )
        self._relay.start()

    def _relay_events(self, events: Connection) -> None:
        with events:
            try:
                while True:
                    topic, event = events.recv()
                    self._bus.publish(topic, event)
            except (EOFError, OSError):
                return

    def close(self, grace: float = 15.0) -> None:
        """Close the control pipe (the runtime stops its feed and agents), then wait for it,
        killing it after ``grace`` seconds."""
        control, self._control = self._control, None
        process, self._process = self._process, None
        if control is not None:
            control.close()
        if process is not None:
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._relay is not None:
            self._relay.join(grace)
            self._relay = None


def main(argv: list[str]) -> None:
    """Entry point of the runtime process (see the module docstring)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [paper %(process)d]: %(message)s",
    )
    os.dup2(2, 1)  # stray prints go to the log
    control = Connection(int(argv[0]), writable=False)
    events = Connection(int(argv[1]), readable=False)
    settings: Settings = control.recv()
    lock = threading.Lock()

    def publish(topic: str, event: Event) -> None:
        with lock:
            events.send((topic, dict(event)))

    runtime = PaperRuntime(
        Database(settings.resolved_database_url),
        open_bar_store(settings),
        open_artifact_store(settings),
        settings,
    )

    def watch() -> None:
        try:
            while True:
                control.recv()
        except (EOFError, OSError):
            runtime.stop()

    threading.Thread(target=watch, name="paper-control", daemon=True).start()
    runtime.run(lambda: publish(READY, {}))


if __name__ == "__main__":
    main(sys.argv[1:])
