"""Memory of one backtest, host and agent, for the backtest worker's requests and limits.

    .venv/bin/python deploy/sizing.py [--sizes 10,100]

Runs the SMA example through the real sandbox (as bench/backtest.py does) on N symbols of the
shared data and prints: the host process's resident memory after importing the platform, its
peak during the backtest, and the sandboxed agent's peak (VmHWM of the agent's Python, sampled
from /proc while it runs).
docs/deploying.md derives the backtest worker's resources from these figures.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests")]

from backtest import AGENT, DATA, END, START, universe  # noqa: E402
from farm.backtest.runner import BacktestConfig, run_backtest  # noqa: E402
from farm.marketdata.importer import import_path  # noqa: E402
from farm.marketdata.store import BarStore  # noqa: E402
from support import descendants  # noqa: E402

MIB = 1024  # ru_maxrss is in KiB on Linux


def status_mib(field: str, pid: int | str = "self") -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM), in MiB; 0 once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / MIB
    return 0.0


class AgentPeak(threading.Thread):
    """Samples the peak resident memory of the sandboxed agents under this process."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for pid, (_, command) in descendants(os.getpid()).items():
                if "farm.sandbox.runtime" in command:
                    self.peak = max(self.peak, status_mib("VmHWM", pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(f"host after imports: {status_mib('VmRSS'):.0f} MiB resident", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = BarStore(Path(tmp) / "bars")
        import_path(store, DATA / "daily")
        for size in sizes:
            symbols = universe(store, size)
            steps = list(store.steps(symbols, START, END))
            before = status_mib("VmRSS")
            sampler = AgentPeak()
            sampler.start()
            begin = time.perf_counter()
            outcome = run_backtest(steps, AGENT, BacktestConfig(symbols=tuple(symbols)))
            seconds = time.perf_counter() - begin
            sampler.done.set()
            sampler.join()
            if outcome.failure is not None:
                raise SystemExit(f"backtest failed: {outcome.failure}")
            host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / MIB
            print(
                f"{size:>4} symbols, {len(steps):,} steps, {seconds:.1f} s: host {before:.0f} MiB "
                f"with the steps loaded, peak {host_peak:.0f} MiB; "
                f"agent peak {sampler.peak:.0f} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
