"""FMEL benchmark: backtest overhead (FMEL on vs off), recorder throughput, query latency.

    .venv/bin/python bench/fmel.py [--records 10000000] [--skip-backtest] [--keep DIR]

1. The same sandboxed backtest (sma_cross, 100 real symbols) with FMEL off and on, interleaved;
   prints the ratio of median wall times (target <= 1.15).
2. Recorder write throughput (records/s) with 10 and 100 symbols per decision.
3. A synthetic store of ``--records`` decisions (default 10 M) in the recorder's layout (parts
   and session summaries): 40 agents x 100 sessions x 2,500 decisions (10 symbols each).
   Latency p50/p99 of the ``decisions`` query (limit 100, newest first) and of ``analytics``,
   for one agent (250 k records) and for one agent holding the whole store (worst case);
   targets 50 ms and 500 ms.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from farm.fmel import queries
from farm.fmel.layout import micros, part_name, session_dir, write_part
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import (
    DECISION_SCHEMA,
    SCHEMA_VERSION,
    TRADE_SCHEMA,
    Bar,
    DataAccess,
    Indicator,
    Order,
)
from farm.fmel.store import FmelStore, connect
from farm.fmel.summary import summarize, write_summary

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
AGENTS, SESSIONS, DECISIONS, SYMBOLS = 40, 100, 2500, 10
WORDS = (
    "price crossed above the slow average so buy momentum is strong volume confirms the breakout "
    "rsi is oversold expecting mean reversion take profit stop loss hit trend weakening hold "
    "waiting for confirmation risk too high reduce exposure earnings ahead volatility spike"
).split()


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    fn()  # warm (metadata cache)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


# -- 1. backtest overhead -------------------------------------------------------------------------


def market_steps(symbols: int) -> tuple[tuple[str, ...], list[Any]]:
    """The first ``symbols`` shared daily CSVs by name, as host Steps."""
    from farm.core.bars import Bar as CoreBar
    from farm.core.bars import Step

    names = tuple(sorted(p.stem for p in (DATA / "daily").glob("*.csv"))[:symbols])
    by_ts: dict[datetime, dict[str, CoreBar]] = defaultdict(dict)
    for name in names:
        frame = pd.read_csv(DATA / "daily" / f"{name}.csv")
        stamps = pd.to_datetime(frame["Date"], utc=True).dt.to_pydatetime()
        rows = zip(
            stamps,
            frame["Open"],
            frame["High"],
            frame["Low"],
            frame["Close"],
            frame["Volume"],
            strict=True,
        )
        for ts, o, h, low, c, v in rows:
            by_ts[ts][name] = CoreBar(float(o), float(h), float(low), float(c), float(v))
    return names, [Step(ts, by_ts[ts]) for ts in sorted(by_ts)]


def backtest_overhead(symbols: int, repeats: int) -> None:
    from farm.backtest.runner import BacktestConfig, run_backtest
    from farm.fmel.capture import StepCapture

    names, steps = market_steps(symbols)
    agent = REPO / "examples" / "agents" / "sma_cross.py"
    times: dict[bool, list[float]] = {False: [], True: []}
    decisions = 0
    for _ in range(repeats):
        for fmel in (False, True):
            with tempfile.TemporaryDirectory(prefix="fmel-bt-") as tmp:
                config = BacktestConfig(symbols=names, record_decisions=fmel)
                started = time.perf_counter()
                if fmel:
                    recorder = FmelRecorder(
                        Path(tmp), "bench", uuid.uuid4().hex, "user", "BACKTEST"
                    )
                    capture = StepCapture(recorder)
                    outcome = run_backtest(steps, agent, config, on_step=capture.on_step)
                    capture.on_trades(outcome.trades)
                    recorder.close()
                    decisions = sum(
                        pq.read_metadata(f).num_rows for f in Path(tmp).rglob("decisions-*.parquet")
                    )
                else:
                    outcome = run_backtest(steps, agent, config)
                times[fmel].append(time.perf_counter() - started)
                assert outcome.failure is None, outcome.failure
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"Backtest, sma_cross on {len(names)} real symbols, {len(steps):,} steps, "
        f"{decisions:,} decisions"
    )
    print(
        f"  FMEL off: median {off:6.2f} s   on: median {on:6.2f} s   "
        f"({repeats} runs each, interleaved)"
    )
    print(f"  overhead ratio on/off: {on / off:.3f}   (target <= 1.15)")


# -- 2. recorder throughput -----------------------------------------------------------------------


def write_throughput(root: Path, symbols: int, n: int) -> float:
    bars = [
        Bar(symbol=f"S{i:03d}", open=1.0, high=2.0, low=0.5, close=1.5, volume=1e6)
        for i in range(symbols)
    ]
    indicators = [
        Indicator(name="sma", line=0, value=1.2),
        Indicator(name="rsi", line=0, value=float("nan")),
    ]
    accesses = [
        DataAccess(symbol="S000", field="close", index=0),
        DataAccess(symbol="S000", field="close", index=-1),
    ]
    t0 = datetime(2020, 1, 1, tzinfo=UTC)
    started = time.perf_counter()
    with FmelRecorder(root, "bench", uuid.uuid4().hex, "user", "BACKTEST") as rec:
        for seq in range(n):
            orders = (
                [
                    Order(
                        order_id=f"o{seq}",
                        symbol="S000",
                        side="buy",
                        size=10,
                        type="market",
                        status="submitted",
                    )
                ]
                if seq % 10 == 0
                else []
            )
            rec.record_decision(
                seq=seq,
                bar_ts=t0 + timedelta(minutes=seq),
                bars=bars,
                cash=1e5,
                value=1e5,
                orders=orders,
                reasoning="price crossed above the slow average",
                confidence=0.5,
                indicators=indicators,
                data_accesses=accesses,
            )
    return n / (time.perf_counter() - started)


# -- 3. synthetic store and query latency ---------------------------------------------------------


def _lists(counts: np.ndarray, values: pa.Array) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _structs(fields: dict[str, pa.Array]) -> pa.Array:
    return pa.StructArray.from_arrays(list(fields.values()), names=list(fields))


def _variant(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """The heavy nested columns of one session (reused across sessions to generate fast)."""
    names = np.array([f"S{i:02d}" for i in range(SYMBOLS)])
    action = rng.choice(
        np.array(["hold", "buy", "sell", "mixed"]), size=n, p=[0.8, 0.09, 0.09, 0.02]
    )
    traded = rng.choice(names, size=n)
    n_orders = np.where(action == "hold", 0, np.where(action == "mixed", 2, 1))
    order_sym = np.repeat(traded, n_orders)
    sides = np.concatenate(
        [
            ["buy"]
            if a == "buy"
            else ["sell"]
            if a == "sell"
            else ["buy", "sell"]
            if a == "mixed"
            else []
            for a in action
        ]
    )
    m = len(order_sym)
    orders = _structs(
        {
            "order_id": pa.array([f"o{i}" for i in range(m)]),
            "symbol": pa.array(order_sym),
            "side": pa.array(sides, pa.string()),
            "size": pa.array(rng.integers(1, 100, m).astype(float)),
            "type": pa.array(["market"] * m),
            "status": pa.array(["submitted"] * m),
            "limit_price": pa.nulls(m, pa.float64()),
            "stop_price": pa.nulls(m, pa.float64()),
        }
    )
    close = rng.uniform(10, 500, n * SYMBOLS)
    bars = _structs(
        {
            "symbol": pa.array(np.tile(names, n)),
            "open": pa.array(close * 0.99),
            "high": pa.array(close * 1.01),
            "low": pa.array(close * 0.98),
            "close": pa.array(close),
            "volume": pa.array(rng.uniform(1e5, 1e7, n * SYMBOLS)),
        }
    )
    positions = _structs(
        {
            "symbol": pa.array(traded),
            "size": pa.array(rng.integers(0, 100, n).astype(float)),
            "price": pa.array(close[:n]),
        }
    )
    indicators = _structs(
        {
            "name": pa.array(np.tile(["sma_fast", "sma_slow"], n)),
            "line": pa.array(np.zeros(2 * n, np.int32)),
            "value": pa.array(rng.uniform(10, 500, 2 * n)),
        }
    )
    accesses = _structs(
        {
            "symbol": pa.array(np.repeat(traded, 3)),
            "field": pa.array(np.tile(["close", "close", "volume"], n)),
            "index": pa.array(np.tile(np.array([0, -1, 0], np.int32), n)),
        }
    )
    return {
        "action": pa.array(action),
        "symbols": _lists(np.ones(n, np.int64), pa.array(traded)),
        "bars": _lists(np.full(n, SYMBOLS), bars),
        "positions": _lists(np.ones(n, np.int64), positions),
        "orders": _lists(n_orders, orders),
        "cancels": _lists(np.zeros(n, np.int64), pa.array([], pa.string())),
        "indicators": _lists(np.full(n, 2), indicators),
        "data_accesses": _lists(np.full(n, 3), accesses),
        "hook_errors": _lists(np.zeros(n, np.int64), pa.array([], pa.string())),
    }


def synthetic_store(root: Path, records: int) -> tuple[list[str], int]:
    """Write ``records`` decisions (and trades) in the recorder's layout; returns agents, files."""
    rng = np.random.default_rng(7)
    n = DECISIONS
    sessions = max(1, records // n)
    variants = [_variant(rng, n) for _ in range(8)]
    phrases = np.array([" ".join(rng.choice(WORDS, 12)) for _ in range(500)])
    agents = [f"agent-{a:02d}" for a in range(AGENTS)]
    now = datetime.now(UTC)
    seq = pa.array(np.arange(n))
    db = connect()
    for s in range(sessions):
        agent, session = agents[s % AGENTS], f"session-{s:05d}"
        heavy = variants[s % len(variants)]
        start = datetime(2010, 1, 1, tzinfo=UTC) + timedelta(days=int(rng.integers(0, 3000)))
        bar_ts = pa.array(
            [start + timedelta(days=i) for i in range(n)], pa.timestamp("us", tz="UTC")
        )
        wall0 = now - timedelta(days=int(rng.integers(0, 120)))
        wall = pa.array(
            np.datetime64(wall0.replace(tzinfo=None), "us")
            + np.arange(n).astype("timedelta64[ms]"),
            pa.timestamp("us", tz="UTC"),
        )
        confidence = rng.random(n)
        columns = {
            "schema_version": pa.array(np.full(n, SCHEMA_VERSION, np.int16)),
            "decision_id": pa.array([f"{session}:{i}" for i in range(n)]),
            "session_id": pa.array([session] * n),
            "agent_id": pa.array([agent] * n),
            "user_id": pa.array(["user"] * n),
            "mode": pa.array(["BACKTEST"] * n),
            "seq": seq,
            "bar_ts": bar_ts,
            "wall_ts": wall,
            "cash": pa.array(rng.uniform(0, 1e5, n)),
            "value": pa.array(rng.uniform(9e4, 2e5, n)),
            "reasoning": pa.array(rng.choice(phrases, n)),
            "reasoning_truncated": pa.array(np.zeros(n, bool)),
            "confidence": pa.array(confidence, mask=confidence < 0.05),
            "indicators_truncated": pa.array(np.zeros(n, bool)),
            "data_accesses_truncated": pa.array(np.zeros(n, bool)),
            **heavy,
        }
        table = pa.Table.from_arrays(
            [columns[f.name] for f in DECISION_SCHEMA], schema=DECISION_SCHEMA
        )
        folder = session_dir(root, agent, session)
        first = micros(start)
        span = (first, first + (n - 1) * 86_400_000_000)
        trades = _trades(rng, agent, session, bar_ts, now)
        written = [
            write_part(folder, part_name("decisions", 1, "bench", span), table).name,
            write_part(folder, part_name("trades", 2, "bench"), trades).name,
        ]
        write_summary(folder, summarize(db, folder, written))
    db.close()
    return agents, sessions


def _trades(
    rng: np.random.Generator, agent: str, session: str, bar_ts: pa.Array, now: datetime
) -> pa.Table:
    k = 100
    opened = np.sort(rng.choice(DECISIONS - 10, k, replace=False))
    closed = opened + rng.integers(1, 10, k)
    pnl = rng.normal(5, 100, k)
    ts = bar_ts.to_numpy(zero_copy_only=False)
    columns = {
        "schema_version": pa.array(np.full(k, SCHEMA_VERSION, np.int16)),
        "trade_id": pa.array([f"{session}:t{i}" for i in range(k)]),
        "session_id": pa.array([session] * k),
        "agent_id": pa.array([agent] * k),
        "user_id": pa.array(["user"] * k),
        "mode": pa.array(["BACKTEST"] * k),
        "symbol": pa.array(["S00"] * k),
        "size": pa.array(np.full(k, 10.0)),
        "entry_ts": pa.array(ts[opened], pa.timestamp("us", tz="UTC")),
        "exit_ts": pa.array(ts[closed], pa.timestamp("us", tz="UTC")),
        "entry_price": pa.array(np.full(k, 100.0)),
        "exit_price": pa.array(100 + pnl / 10),
        "pnl": pa.array(pnl + 0.2),
        "pnl_net": pa.array(pnl),
        "commission": pa.array(np.full(k, 0.2)),
        "bars_held": pa.array(closed - opened),
        "opened_by_seq": pa.array(opened),
        "closed_by_seq": pa.array(closed),
        "opened_by_decision_id": pa.array([f"{session}:{i}" for i in opened]),
        "closed_by_decision_id": pa.array([f"{session}:{i}" for i in closed]),
        "wall_ts": pa.array([now] * k, pa.timestamp("us", tz="UTC")),
    }
    return pa.Table.from_arrays([columns[f.name] for f in TRADE_SCHEMA], schema=TRADE_SCHEMA)


def sessions_of(root: Path, agent: str) -> int:
    return sum(1 for _ in (root / f"agent={agent}").iterdir())


def whole_store_agent(root: Path) -> str:
    """An agent holding every session of the store: its own session folders, files hard-linked."""
    everything = root / "agent=everything"
    for session in root.glob("agent=agent-*/session=*"):
        folder = everything / session.name
        folder.mkdir(parents=True)
        for file in session.iterdir():
            (folder / file.name).hardlink_to(file)
    return "everything"


def query_latency(root: Path, agent: str, runs: int) -> None:
    store = FmelStore(root)
    try:
        everything = queries.DecisionQuery([agent])
        one_session = queries.DecisionQuery(
            [agent],
            queries.part_files(root, [agent], "decisions")[0].split("session=")[1].split("/")[0],
        )
        filtered = queries.DecisionQuery([agent], action="buy", symbol="S03")
        cases: list[tuple[str, Callable[[], object], int]] = [
            (
                "decisions limit 100",
                lambda: queries.list_decisions(store, everything, limit=100, offset=0),
                runs,
            ),
            (
                "decisions limit 100, action+symbol",
                lambda: queries.list_decisions(store, filtered, limit=100, offset=0),
                max(5, runs // 4),
            ),
            (
                "decisions limit 100, one session",
                lambda: queries.list_decisions(store, one_session, limit=100, offset=0),
                runs,
            ),
            ("analytics (all)", lambda: queries.analytics(store, everything), max(5, runs // 4)),
            ("analytics (one session)", lambda: queries.analytics(store, one_session), runs),
        ]
        for name, fn, n in cases:
            p50, p99 = timed(fn, n)
            print(f"  {name:<40} p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   ({n} runs)")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--symbols", type=int, default=100, help="backtest universe size")
    parser.add_argument("--repeats", type=int, default=3, help="backtest runs per mode")
    parser.add_argument("--skip-backtest", action="store_true")
    parser.add_argument("--keep", type=Path, help="write the synthetic store here and keep it")
    args = parser.parse_args()

    if not args.skip_backtest:
        backtest_overhead(args.symbols, args.repeats)

    with tempfile.TemporaryDirectory(prefix="fmel-bench-") as scratch:
        print("Recorder write throughput")
        for symbols, n in ((10, 100_000), (100, 20_000)):
            rate = write_throughput(Path(scratch) / "writes", symbols, n)
            print(f"  {symbols:>3} symbols per decision: {rate:10,.0f} records/s")

        root = args.keep or Path(scratch) / "store"
        if not (root / "agent=agent-00").is_dir():
            started = time.perf_counter()
            agents, sessions = synthetic_store(root, args.records)
            elapsed = time.perf_counter() - started
            print(
                f"Synthetic store: {sessions * DECISIONS:,} decisions in {sessions:,} sessions of "
                f"{len(agents)} agents, written in {elapsed:.0f} s "
                f"({sessions * DECISIONS / elapsed:,.0f} records/s, direct Arrow)"
            )
        size = sum(p.stat().st_size for p in root.glob("agent=agent-*/*/*.parquet"))
        print(f"  {size / 1e9:.2f} GB on disk")
        if not (root / "agent=everything").exists():
            whole_store_agent(root)
        print(
            f"Queries, one agent of {AGENTS} "
            f"({sessions_of(root, 'agent-00') * DECISIONS:,} records)"
        )
        query_latency(root, "agent-00", args.runs)
        print(
            "Queries, one agent holding the whole store "
            f"({sessions_of(root, 'everything') * DECISIONS:,} records)"
        )
        query_latency(root, "everything", args.runs)
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
