"""Platform backtest vs bare Backtrader on the same agent and data, in one run.

For 10, 100 and 500 symbols over the full stored history it runs the SMA-crossover example
  * bare: a plain ``cerebro.run()`` (Backtrader's defaults: preloaded, runonce) in this process;
  * platform: ``run_backtest`` -- the agent in the bubblewrap sandbox, one timestep at a time,
    the host ledger filling its orders -- with FMEL recording off and on;
and prints bars/s (symbols x timesteps / seconds) and the ratio platform / bare. Then the cost of
the sandbox's seccomp filter: launch time (start -> first byte back from a trivial sandboxed Python)
and bars/s of the smallest size, with the filter and with an allow-everything filter in its place,
in the same run. Last it times one backtest end to end through the HTTP API (start -> completed)
for 10 symbols x 4.7 years.

Data: ../shared/data (FARM_TEST_DATA): the 300-symbol CSVs, and the bulk Parquet for 500.
Run: .venv/bin/python bench/backtest.py [--sizes 10,100,500]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import backtrader as bt

from farm.backtest.runner import BacktestConfig, run_backtest
from farm.marketdata.importer import import_path
from farm.marketdata.store import BarStore
from farm.sandbox import launcher

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
AGENT = REPO / "examples" / "agents" / "sma_cross.py"
START, END = date(2020, 7, 27), date(2025, 4, 4)
STANDARD = ["SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM"]
ALLOW_ALL = struct.pack("<HBBI", 0x06, 0, 0, 0x7FFF0000)  # BPF: return SECCOMP_RET_ALLOW
LAUNCHES = 15
ROUNDS = 3


def strategy_class() -> type[bt.Strategy]:
    spec = importlib.util.spec_from_file_location("sma_cross", AGENT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["sma_cross"] = module
    spec.loader.exec_module(module)
    strategy: type[bt.Strategy] = module.SmaCross
    return strategy


def universe(store: BarStore, size: int) -> list[str]:
    """``size`` symbols that cover the whole period (a feed without bars would stall Backtrader)."""
    full = [
        i.symbol
        for i in store.symbols()
        if i.first.date() <= START and i.last.date() >= END and i.bars >= 1150
    ]
    rest = [s for s in full if s not in STANDARD]
    chosen = [s for s in STANDARD if s in full] + rest
    if len(chosen) < size:
        raise SystemExit(f"only {len(chosen)} symbols cover {START}..{END}")
    return chosen[:size]


def bare(store: BarStore, symbols: list[str]) -> tuple[float, float, int]:
    frames = {s: store.frame(s, START, END) for s in symbols}
    cerebro = bt.Cerebro(stdstats=False)
    for symbol, frame in frames.items():
        cerebro.adddata(bt.feeds.PandasData(dataname=frame.tz_convert(None)), name=symbol)
    cerebro.addstrategy(strategy_class())
    cerebro.broker.setcash(100_000)
    cerebro.broker.setcommission(commission=0.001)
    begin = time.perf_counter()
    cerebro.run()
    bars = sum(len(f) for f in frames.values())
    return time.perf_counter() - begin, cerebro.broker.getvalue(), bars


def platform(store: BarStore, symbols: list[str], fmel: bool) -> tuple[float, float]:
    steps = list(store.steps(symbols, START, END))
    config = BacktestConfig(symbols=tuple(symbols), record_decisions=fmel)
    begin = time.perf_counter()
    outcome = run_backtest(steps, AGENT, config)
    seconds = time.perf_counter() - begin
    if outcome.failure is not None:
        raise SystemExit(f"platform run failed: {outcome.failure}")
    return seconds, outcome.value


@contextlib.contextmanager
def seccomp_filter(on: bool) -> Iterator[None]:
    """Sandboxes started inside get the real filter, or an allow-everything one if not ``on``."""
    real = launcher.bpf_program
    if not on:
        launcher.bpf_program = lambda: ALLOW_ALL
    try:
        yield
    finally:
        launcher.bpf_program = real


def launch_seconds() -> float:
    """Seconds from ``launch`` to the first byte back from a trivial sandboxed Python."""
    limits = launcher.SandboxLimits(memory_mb=256, cpu_s=10, wall_s=30, pids=16)
    begin = time.perf_counter()
    with launcher.launch(
        [sys.executable, "-S", "-c", "import os; os.write(4, b'x')"],
        readonly_binds={AGENT: "/agent/agent.py"},
        limits=limits,
        mode="bwrap",
    ) as proc:
        if proc.read_exact(1, timeout=30) != b"x":
            raise SystemExit(f"sandbox did not start: {proc.output_tail()}")
        return time.perf_counter() - begin


def seccomp_cost(store: BarStore, size: int) -> None:
    """Launch time and bars/s with the seccomp filter next to an allow-everything filter.

    Runs alternate (off, on, off, on, ...) so that a busy machine slows both alike; launch time
    is the median of LAUNCHES, bars/s the best of ROUNDS.
    """
    symbols = universe(store, size)
    bars = sum(len(store.frame(s, START, END)) for s in symbols)
    launches: dict[bool, list[float]] = {False: [], True: []}
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(LAUNCHES):
        for on in (False, True):
            with seccomp_filter(on):
                launches[on].append(launch_seconds())
    for _ in range(ROUNDS):
        for on in (False, True):
            with seccomp_filter(on):
                runs[on].append(platform(store, symbols, fmel=False)[0])
    on_launch, off_launch = (statistics.median(launches[on]) for on in (True, False))
    on_s, off_s = min(runs[True]), min(runs[False])
    print(
        f"seccomp filter ({size} symbols): launch {on_launch * 1000:.1f} ms vs "
        f"{off_launch * 1000:.1f} ms without (ratio {on_launch / off_launch:.2f}); "
        f"{bars / on_s:,.0f} bars/s vs {bars / off_s:,.0f} without "
        f"(ratio {off_s / on_s:.2f})",
        flush=True,
    )


def end_to_end(csvs: Path) -> float:
    """Seconds from POST start to status completed, 10 symbols x full history, via HTTP."""
    from fastapi.testclient import TestClient

    from farm.app import create_app
    from farm.config import Settings
    from farm.users.service import create_user

    with tempfile.TemporaryDirectory() as home:
        settings = Settings(
            home=Path(home),
            data_dir=csvs,
            standard_symbols=["SPY"],
            standard_start="2024-01-02",
            standard_end="2024-01-31",
        )
        with TestClient(create_app(settings)) as client:
            with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
                _, token = create_user(session, "bench")
            headers = {"Authorization": f"Bearer {token}"}
            agent_id = client.post(
                "/api/agents/submit",
                headers=headers,
                data={"agentName": "sma"},
                files={"file": ("sma.py", AGENT.read_bytes())},
            ).json()["agentId"]
            time.sleep(2)  # let the agent's standard evaluation (one symbol, one month) finish
            body = {"symbols": STANDARD, "startDate": str(START), "endDate": str(END)}
            begin = time.perf_counter()
            session_id = client.post(
                f"/api/backtest/{agent_id}/start", headers=headers, json=body
            ).json()["sessionId"]
            while True:
                result = client.get(f"/api/backtest/{session_id}/results", headers=headers).json()
                if result["status"] in {"completed", "failed"}:
                    break
                time.sleep(0.01)
            seconds = time.perf_counter() - begin
            if result["status"] != "completed":
                raise SystemExit(f"end-to-end backtest failed: {result['failure']}")
            return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,500")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        store = BarStore(Path(tmp) / "bars")
        source = DATA / "daily_bulk.parquet" if max(sizes) > 250 else DATA / "daily"
        print(f"importing {source.name} ...", flush=True)
        started = time.perf_counter()
        report = import_path(store, source)
        seconds = time.perf_counter() - started
        print(f"imported {report.bars_imported:,} bars in {seconds:.1f} s", flush=True)
        print(
            f"{'symbols':>8} {'bars':>9} {'bare bars/s':>12} {'platform':>10} {'ratio':>6} "
            f"{'+FMEL':>10} {'ratio':>6}  final value bare / platform"
        )
        for size in sizes:
            symbols = universe(store, size)
            bare_s, bare_value, bars = bare(store, symbols)
            plat_s, plat_value = platform(store, symbols, fmel=False)
            fmel_s, _ = platform(store, symbols, fmel=True)
            print(
                f"{size:>8} {bars:>9,} {bars / bare_s:>12,.0f} {bars / plat_s:>10,.0f} "
                f"{bare_s / plat_s:>6.2f} {bars / fmel_s:>10,.0f} {bare_s / fmel_s:>6.2f}  "
                f"{bare_value:,.2f} / {plat_value:,.2f}",
                flush=True,
            )
        seccomp_cost(store, min(sizes))
        csvs = Path(tmp) / "csv"
        csvs.mkdir()
        for symbol in STANDARD:
            (csvs / f"{symbol}.csv").write_bytes((DATA / "daily" / f"{symbol}.csv").read_bytes())
        seconds = end_to_end(csvs)
        print(
            f"end to end (HTTP start -> completed, 10 symbols x 4.7 years, FMEL on): "
            f"{seconds:.2f} s"
        )


if __name__ == "__main__":
    main()
