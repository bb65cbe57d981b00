"""Paper-trading density: N sandboxed paper sessions in one runtime vs one process per agent.

For each N it runs N paper sessions of the SMA-crossover example on the 10 standard symbols,
fed by the replay at a fixed interval, in one paper runtime (the platform's shape: the host
fans each step out to every sandboxed agent, no thread per session), and then the original's
shape measured the same way: N plain Python processes, each running its own Backtrader loop on
the bars a publisher writes to it (no sandbox). Printed per shape:
  * bar-to-decision latency p50 / p99: the step's publication to the agent's decision (orders)
    reaching the broker (the platform's) or the strategy's ``next()`` done (the baseline's);
  * host CPU per bar (the runtime process, or the publisher) and agent CPU per bar, in ms;
  * memory per session: the proportional set size (PSS) of every process of the shape / N.

With ``--brokers``, it instead compares the two brokers in the same run: N sessions of an agent
that buys one share on every bar, on simulated accounts, then on Alpaca accounts against the
local Alpaca server of the tests (tests/alpaca_server.py, one key per account), printing the
bar-received to order-sent latency p50 / p99: the step's publication to the order reaching the
broker (the simulated broker's ``submit``, or the POST arriving at the Alpaca server).

Data: ../shared/data (FARM_TEST_DATA). The machine is shared: run it briefly.
Run: .venv/bin/python bench/paper.py [--sizes 10,50] [--steps 20] [--interval 1.0] [--brokers]
     [--replay-start 2024-01-02] (start earlier when N sessions take longer to start than the
     replay lasts)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from farm.config import Settings
from farm.events import MARKET_BARS
from farm.marketdata.importer import import_path
from farm.marketdata.store import BarStore, open_bar_store
from farm.papertrading.runtime import PaperRuntime
from farm.papertrading.schemas import PaperStart
from farm.papertrading.sessions import PaperService
from farm.secretbox import SecretBox
from farm.storage.artifacts import open_artifact_store
from farm.storage.db import Database
from farm.storage.models import Agent, PaperAccount, PaperSession
from farm.users.service import create_user

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
AGENT = REPO / "examples" / "agents" / "sma_cross.py"
STANDARD = ["SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM"]
REPLAY_START = date(2024, 1, 2)  # about 315 steps before the last stored bar
BROKERS_REPLAY_START = date(2021, 1, 4)
WARMUP_BARS = 40  # the SMA(30) crossover is ready on the first live bar

# The baseline agent process: Backtrader's own loop over bars read from stdin, one step a line.
BASELINE = r"""
import importlib.util, json, sys
from datetime import datetime

import backtrader as bt

spec = importlib.util.spec_from_file_location("agent", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
symbols = sys.argv[2].split(",")


class Clock:
    seq, bars = -1, {}

    def need(self, seq):
        while self.seq < seq:
            line = sys.stdin.readline()
            if not line:
                return False
            step = json.loads(line)
            self.seq, self.ts, self.bars = step["seq"], step["ts"], step["bars"]
        return True


clock = Clock()


class Lines(bt.feed.DataBase):
    def start(self):
        super().start()
        self.n = -1

    def _load(self):
        self.n += 1
        if not clock.need(self.n):
            return False
        o, h, l, c, v = clock.bars[self._name]
        self.lines.datetime[0] = bt.date2num(datetime.fromisoformat(clock.ts))
        self.lines.open[0], self.lines.high[0], self.lines.low[0] = o, h, l
        self.lines.close[0], self.lines.volume[0], self.lines.openinterest[0] = c, v, 0
        return True


class Acked(module.SmaCross):
    def next(self):
        super().next()
        sys.stdout.write(f"{clock.seq}\n")
        sys.stdout.flush()


cerebro = bt.Cerebro(preload=False, runonce=False, stdstats=False)
for s in symbols:
    cerebro.adddata(Lines(name=s), name=s)
cerebro.addstrategy(Acked)
cerebro.run()
"""


def progress(text: str) -> None:
    """A line on stderr while a long run goes on (results go to stdout)."""
    print(text, file=sys.stderr, flush=True)


def pss_kb(pids: list[int]) -> int:
    """The proportional set size of these processes, in kB (those that ended count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_s(pids: list[int]) -> float:
    """User plus system CPU seconds of these processes so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def descendants(pid: int) -> list[int]:
    """Every process under ``pid``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    below = {pid}
    while grown := {p for p, parent in parents.items() if parent in below} - below:
        below |= grown
    return sorted(below - {pid})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(
    shape: str, n: int, latencies: list[float], host: float, agents: float, bars: int, pss: int
) -> None:
    print(
        f"{shape:<28} N={n:<4} p50 {percentile(latencies, 0.5) * 1000:7.1f} ms  "
        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms  "
        f"host CPU/bar {host / bars * 1000:6.2f} ms  agent CPU/bar {agents / bars * 1000:6.2f} ms  "
        f"memory/session {pss / n / 1024:6.1f} MB",
        flush=True,
    )


def platform(n: int, steps: int, interval: float, root: Path, replay_start: date) -> None:
    """N paper sessions in one runtime (this process), fed by the replay."""
    home = root / f"platform-{n}"
    settings = Settings(
        home=home,
        feed="replay",
        feed_replay_start=replay_start,
        feed_interval_s=interval,
        feed_symbols=STANDARD,
        paper_step_timeout_s=60,
        paper_poll_s=0.2,
    )
    db = Database(settings.resolved_database_url)
    db.migrate()
    bars = open_bar_store(settings)
    csvs = root / "csv"
    if not csvs.exists():
        csvs.mkdir()
        for symbol in STANDARD:
            shutil.copy(DATA / "daily" / f"{symbol}.csv", csvs)
    assert import_path(bars, csvs).ok
    artifacts = open_artifact_store(settings)
    code = AGENT.read_bytes()
    artifacts.put("agents/sma.py", code)
    service = PaperService(db, bars, settings)
    with db.transaction() as session:
        user, _ = create_user(session, "bench")
        agent_ids = [str(uuid.uuid4()) for _ in range(n)]
        for agent_id in agent_ids:
            session.add(
                Agent(
                    id=agent_id,
                    user_id=user.id,
                    name="sma",
                    strategy_class="SmaCross",
                    code_sha256="0" * 64,
                    code_bytes=len(code),
                    artifact_key="agents/sma.py",
                    status="active",
                )
            )
    for agent_id in agent_ids:
        service.start(
            user, PaperStart(agent_id=agent_id, symbols=STANDARD, warmup_bars=WARMUP_BARS)
        )
    latencies: list[float] = []
    runtime = PaperRuntime(db, bars, artifacts, settings)
    thread = threading.Thread(target=runtime.run, daemon=True)
    thread.start()
    started = time.monotonic()
    shown = -1
    while True:  # every session decided on a live bar
        with db.transaction() as session:
            running = session.query(PaperSession).filter_by(status="running").count()
        if running == n:
            break
        if running // 25 != shown // 25:
            progress(f"N={n}: {running} of {n} sessions running")
            shown = running
        assert time.monotonic() - started < 60 + n * 5, f"only {running} of {n} running"
        time.sleep(0.2)
    while any(live.backlog for live in list(runtime.sessions.values())):
        time.sleep(0.1)  # sessions that started first catch up on the bars of the start-up
    time.sleep(2 * interval)
    waited = time.monotonic() - started
    progress(f"N={n}: all running after {waited:.0f} s; measuring {steps} steps")
    runtime.latency_probe = latencies.append
    agents = descendants(os.getpid())
    host0, agents0 = time.process_time(), cpu_s(agents)
    while len(latencies) < steps * n:
        time.sleep(0.05)
        assert thread.is_alive()
    host, agent_cpu = time.process_time() - host0, cpu_s(agents) - agents0
    pss = pss_kb([os.getpid(), *agents])
    count = len(latencies)
    runtime.latency_probe = None
    runtime.stop()
    thread.join(60)
    report("platform (one runtime)", n, latencies, host, agent_cpu, count, pss)


BUYER = b"""
import backtrader as bt


class Buyer(bt.Strategy):
    def next(self):
        self.buy(data=self.datas[0], size=1)
"""


def brokers(n: int, steps: int, interval: float, root: Path, alpaca: bool) -> None:
    """N sessions of BUYER on simulated or Alpaca accounts: publication to order sent."""
    sys.path.insert(0, str(REPO / "tests"))
    from alpaca_server import FakeAlpaca, alpaca_server

    symbols = STANDARD[:3]
    fake = FakeAlpaca(
        cash=Decimal(10**8),  # each key's book, as each account's
        prices={s: Decimal(100) for s in symbols},
        auto_fill=True,
        other_keys={f"PKBENCH{i}": f"bench-secret-{i}" for i in range(n)},
    )
    with alpaca_server(fake) as (_, url):
        home = root / f"{'alpaca' if alpaca else 'simulated'}-{n}"
        settings = Settings(
            home=home,
            feed="replay",
            feed_replay_start=BROKERS_REPLAY_START,  # enough bars for N sessions to start
            feed_interval_s=interval,
            feed_symbols=symbols,
            paper_step_timeout_s=60,
            paper_poll_s=0.2,
            alpaca_trading_url=url,
            alpaca_reconcile_s=3600,  # at start and after reconnects only
        )
        db, bars, artifacts = _platform_home(settings, root)
        artifacts.put("agents/buyer.py", BUYER)
        box = SecretBox.from_settings(settings)
        service = PaperService(db, bars, settings)
        with db.transaction() as session:
            user, _ = create_user(session, "bench")
            starts = []
            for i in range(n):
                agent_id, account_id = str(uuid.uuid4()), str(uuid.uuid4())
                session.add(
                    Agent(
                        id=agent_id,
                        user_id=user.id,
                        name="buyer",
                        strategy_class="Buyer",
                        code_sha256="0" * 64,
                        code_bytes=len(BUYER),
                        artifact_key="agents/buyer.py",
                        status="active",
                    )
                )
                session.add(
                    PaperAccount(
                        id=account_id,
                        user_id=user.id,
                        name=f"bench {i}",
                        broker="alpaca" if alpaca else "simulated",
                        initial_cash=Decimal(10**8),
                        cash=Decimal(10**8),
                        funded=Decimal(0),
                        broker_key_id=f"PKBENCH{i}" if alpaca else None,
                        broker_secret=box.seal(f"bench-secret-{i}") if alpaca else None,
                    )
                )
                starts.append(PaperStart(agent_id=agent_id, account_id=account_id, symbols=symbols))
        for start in starts:
            service.start(user, start)
        published: list[float] = []
        sent: list[float] = []
        runtime = PaperRuntime(db, bars, artifacts, settings)
        runtime._bus.subscribe(MARKET_BARS, lambda event: published.append(time.monotonic()))
        if not alpaca:
            # called once a decision's orders went to the broker (submit), at that moment
            runtime.latency_probe = lambda _: sent.append(time.monotonic())
        thread = threading.Thread(target=runtime.run, daemon=True)
        thread.start()
        _all_running(db, runtime, n, interval)
        measured_from = time.monotonic()
        first = len(published)
        while len(published) < first + steps:
            assert thread.is_alive()
            time.sleep(0.05)
        time.sleep(interval / 2)
        runtime.stop()
        thread.join(60)
        if alpaca:
            sent = [t for t, method, path in fake.requests if method == "POST"]
    # Each order was decided on the last step published before it was sent.
    marks = sorted(published)
    latencies = []
    for t in sent:
        before = [p for p in marks if p <= t]
        if before and before[-1] >= measured_from:
            latencies.append(t - before[-1])
    label = "alpaca broker (local server)" if alpaca else "simulated broker"
    first, last = min(sent, default=0.0), max(sent, default=0.0)
    assert latencies, (
        f"no order measured ({len(sent)} sent, {len(marks)} steps published, sent "
        f"{first - measured_from:.1f}..{last - measured_from:.1f} s from the measurement's start)"
    )
    print(
        f"{label:<30} N={n:<4} orders {len(latencies):<5} bar-received to order-sent "
        f"p50 {percentile(latencies, 0.5) * 1000:7.1f} ms  "
        f"p99 {percentile(latencies, 0.99) * 1000:7.1f} ms",
        flush=True,
    )


def _all_running(db: Database, runtime: PaperRuntime, n: int, interval: float) -> None:
    """Wait until every session decided on a live bar and none has a backlog left."""
    started = time.monotonic()
    while True:
        with db.transaction() as session:
            running = session.query(PaperSession).filter_by(status="running").count()
        if running == n:
            break
        assert time.monotonic() - started < 60 + n * 5, f"only {running} of {n} running"
        time.sleep(0.2)
    while any(live.backlog for live in list(runtime.sessions.values())):
        time.sleep(0.1)
    time.sleep(2 * interval)


def _platform_home(settings: Settings, root: Path) -> tuple[Database, BarStore, Any]:
    """A migrated database and the standard symbols' bars in ``settings.home``."""
    db = Database(settings.resolved_database_url)
    db.migrate()
    bars = open_bar_store(settings)
    csvs = root / "csv"
    if not csvs.exists():
        csvs.mkdir()
        for symbol in STANDARD:
            shutil.copy(DATA / "daily" / f"{symbol}.csv", csvs)
    assert import_path(bars, csvs).ok
    return db, bars, open_artifact_store(settings)


def baseline(n: int, steps: int, interval: float, replay_start: date) -> None:
    """N processes each running its own Backtrader loop; a publisher writes every step."""
    store_rows = {}
    for symbol in STANDARD:
        lines = (DATA / "daily" / f"{symbol}.csv").read_text().splitlines()[1:]
        store_rows[symbol] = {
            row[0]: [float(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[6])]
            for row in (line.split(",") for line in lines)
        }
    times = sorted(set.intersection(*(set(r) for r in store_rows.values())))
    times = [t for t in times if t >= replay_start.isoformat()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BASELINE, str(AGENT), ",".join(STANDARD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        for _ in range(n)
    ]
    latencies: list[float] = []
    total = WARMUP_BARS + 2 + steps
    host0 = time.process_time()
    agents0 = cpu_s([p.pid for p in procs])
    measured_from = WARMUP_BARS + 2
    pss = 0
    for seq, ts in enumerate(times[:total]):
        if seq == measured_from:
            host0, agents0 = time.process_time(), cpu_s([p.pid for p in procs])
        line = json.dumps({"seq": seq, "ts": ts, "bars": {s: store_rows[s][ts] for s in STANDARD}})
        published = time.monotonic()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(line + "\n")
            p.stdin.flush()
        waiting = {p.stdout: p for p in procs if p.stdout is not None}
        while waiting and seq >= 30:  # next() runs once the SMA(30) crossover is ready
            ready, _, _ = select.select(list(waiting), [], [], 60)
            assert ready, "a baseline agent stopped answering"
            for out in ready:
                out.readline()
                del waiting[out]
                if seq >= measured_from:
                    latencies.append(time.monotonic() - published)
        if seq == total - 1:
            pss = pss_kb([p.pid for p in procs])
        time.sleep(max(0.0, interval - (time.monotonic() - published)))
    host = time.process_time() - host0
    agent_cpu = cpu_s([p.pid for p in procs]) - agents0
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.kill()
        p.wait()
    report("baseline (process per agent)", n, latencies, host, agent_cpu, len(latencies), pss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50")
    parser.add_argument("--steps", type=int, default=20, help="measured steps per size")
    parser.add_argument("--interval", type=float, default=1.0, help="wall seconds per step")
    parser.add_argument("--brokers", action="store_true", help="simulated vs Alpaca latency")
    parser.add_argument(
        "--replay-start", type=date.fromisoformat, default=REPLAY_START, help="the replay's start"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="farm-bench-paper-") as tmp:
        for n in sizes:
            if args.brokers:
                brokers(n, args.steps, args.interval, Path(tmp), alpaca=False)
                brokers(n, args.steps, args.interval, Path(tmp), alpaca=True)
                continue
            platform(n, args.steps, args.interval, Path(tmp), args.replay_start)
            baseline(n, args.steps, args.interval, args.replay_start)


if __name__ == "__main__":
    main()
