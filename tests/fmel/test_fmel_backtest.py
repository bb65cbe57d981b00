"""FMEL on real sandboxed backtests over the shared bars: what the host saw is what is stored."""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import backtrader as bt
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from fmel_helpers import new_id, stored

from farm.backtest.runner import BacktestConfig, BacktestOutcome, run_backtest
from farm.core.bars import Bar, Step
from farm.fmel.capture import StepCapture
from farm.fmel.recorder import FmelRecorder

pytestmark = pytest.mark.sandbox

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "agents"
AGENTS = Path(__file__).parent / "agents"
STANDARD = ("SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM")


def rows(daily: Path, symbol: str) -> list[tuple[datetime, Bar]]:
    with (daily / f"{symbol}.csv").open(newline="") as fh:
        return [
            (
                datetime.fromisoformat(r["Date"]).astimezone(UTC),
                Bar(
                    float(r["Open"]),
                    float(r["High"]),
                    float(r["Low"]),
                    float(r["Close"]),
                    float(r["Volume"]),
                ),
            )
            for r in csv.DictReader(fh)
        ]


def steps(daily: Path, symbols: tuple[str, ...]) -> list[Step]:
    by_ts: dict[datetime, dict[str, Bar]] = defaultdict(dict)
    for symbol in symbols:
        for ts, bar in rows(daily, symbol):
            by_ts[ts][symbol] = bar
    return [Step(ts, by_ts[ts]) for ts in sorted(by_ts)]


def next_calls(daily: Path, agent: Path, symbols: tuple[str, ...]) -> int:
    """How many times a plain Backtrader run calls the strategy's ``next()``."""
    spec = importlib.util.spec_from_file_location(f"fmel_ref_{agent.stem}", agent)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    (strategy,) = [
        v for v in vars(module).values() if isinstance(v, type) and v.__module__ == spec.name
    ]
    calls = 0

    class Counted(strategy):  # type: ignore[misc, valid-type]
        def next(self) -> None:
            nonlocal calls
            calls += 1
            super().next()

    cerebro = bt.Cerebro(stdstats=False)
    for symbol in symbols:
        data = rows(daily, symbol)
        frame = pd.DataFrame(
            [(b.open, b.high, b.low, b.close, b.volume) for _, b in data],
            columns=["open", "high", "low", "close", "volume"],
            index=pd.DatetimeIndex([ts.replace(tzinfo=None) for ts, _ in data]),
        )
        cerebro.adddata(bt.feeds.PandasData(dataname=frame, openinterest=None), name=symbol)
    cerebro.addstrategy(Counted)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.run()
    return calls


@dataclass
class Run:
    outcome: BacktestOutcome
    root: Path
    agent_id: str
    session_id: str

    def table(self, kind: str) -> list[dict[str, Any]]:
        return sorted(
            stored(self.root, self.agent_id, kind).to_pylist(),
            key=lambda r: (r.get("seq", 0), r[list(r)[1]]),
        )


def backtest(
    tmp_path: Path, daily: Path, agent: Path, symbols: tuple[str, ...], **options: Any
) -> Run:
    root, agent_id, session_id = tmp_path / "fmel", new_id(), new_id()
    recorder = FmelRecorder(
        root, agent_id, session_id, "user-1", "BACKTEST", batch_size=100_000, flush_seconds=3600
    )
    capture = StepCapture(recorder)
    try:
        outcome = run_backtest(
            steps(daily, symbols),
            agent,
            BacktestConfig(symbols=symbols, record_decisions=True, **options),
            on_step=capture.on_step,
        )
        capture.on_trades(outcome.trades)
    finally:
        recorder.close()
    return Run(outcome, root, agent_id, session_id)


def assert_ledger_linked(run: Run) -> None:
    """Every ledger fill and trade is stored, linked to the decision that placed the order."""
    decisions = {d["decision_id"]: d for d in run.table("decisions")}
    fills = [e for e in run.table("executions") if e["status"] == "filled"]
    ledger = sorted(
        (f.decision_seq, f.client_order_id, f.size, f.price, f.commission)
        for f in run.outcome.fills
    )
    mine = sorted(
        (
            e["seq"],
            e["order_id"],
            e["size"] if e["side"] == "buy" else -e["size"],
            e["price"],
            e["commission"],
        )
        for e in fills
    )
    assert mine == ledger
    for fill in fills:
        decision = decisions[fill["decision_id"]]
        assert fill["order_id"] in {o["order_id"] for o in decision["orders"]}
    trades = run.table("trades")
    assert len(trades) == len(run.outcome.trades)
    for trade, closed in zip(
        sorted(trades, key=lambda t: (t["exit_ts"], t["symbol"])),
        sorted(run.outcome.trades, key=lambda t: (t.exit_ts, t.symbol)),
        strict=True,
    ):
        assert (trade["symbol"], trade["pnl_net"], trade["bars_held"]) == (
            closed.symbol,
            closed.pnl_net,
            closed.bars_held,
        )
        assert trade["opened_by_decision_id"] in decisions
        assert trade["closed_by_decision_id"] in decisions


def test_one_record_per_next_call_and_every_fill_and_trade_linked(
    shared_data: Path, tmp_path: Path
) -> None:
    daily = shared_data / "daily"
    agent = EXAMPLES / "sma_cross.py"
    run = backtest(tmp_path, daily, agent, STANDARD)
    assert run.outcome.failure is None
    assert run.outcome.fills, "the agent should trade"
    decisions = run.table("decisions")
    assert len(decisions) == next_calls(daily, agent, STANDARD)
    assert [d["seq"] for d in decisions] == sorted({d["seq"] for d in decisions})
    market = steps(daily, STANDARD)
    for d in decisions:
        step = market[d["seq"]]
        assert d["bar_ts"] == step.ts
        assert {b["symbol"]: b["close"] for b in d["bars"]} == {
            s: b.close for s, b in step.bars.items()
        }
    assert_ledger_linked(run)
    placed = sum(len(d["orders"]) for d in decisions)
    assert placed >= len(run.outcome.fills)


def test_reasoning_confidence_indicators_and_reads_are_recorded(
    shared_data: Path, tmp_path: Path
) -> None:
    daily = shared_data / "daily"
    agent = EXAMPLES / "explained_momentum.py"
    symbols = ("AAPL", "MSFT", "SPY")
    run = backtest(tmp_path, daily, agent, symbols)
    assert run.outcome.failure is None
    decisions = run.table("decisions")
    assert len(decisions) == next_calls(daily, agent, symbols)
    assert all(d["reasoning"] for d in decisions)
    assert any(d["reasoning"].startswith("buy ") for d in decisions)
    assert all(0.0 <= d["confidence"] <= 1.0 for d in decisions)
    assert {i["name"] for d in decisions for i in d["indicators"]} == {
        f"momentum[{s}]" for s in symbols
    }
    assert all(d["hook_errors"] == [] for d in decisions)
    assert_ledger_linked(run)


def test_a_raising_hook_is_recorded_and_does_not_fail_the_run(
    shared_data: Path, tmp_path: Path
) -> None:
    daily = shared_data / "daily"
    agent = AGENTS / "raising_hook.py"
    run = backtest(tmp_path, daily, agent, ("AAPL",))
    assert run.outcome.failure is None
    decisions = run.table("decisions")
    assert len(decisions) == next_calls(daily, agent, ("AAPL",))
    assert all(d["reasoning"] is None and d["confidence"] == 0.7 for d in decisions)
    assert all(len(d["hook_errors"]) == 1 for d in decisions)
    assert "get_decision_reasoning raised" in decisions[0]["hook_errors"][0]
    assert "reasoning is broken" in decisions[0]["hook_errors"][0]
    reads = {(a["symbol"], a["field"]) for d in decisions for a in d["data_accesses"]}
    assert ("AAPL", "close") in reads
    assert_ledger_linked(run)


def test_a_killed_agent_loses_no_decision_the_host_received(
    shared_data: Path, tmp_path: Path
) -> None:
    run = backtest(tmp_path, shared_data / "daily", AGENTS / "dies.py", ("AAPL",))
    assert run.outcome.failure is not None
    decisions = run.table("decisions")
    assert [d["reasoning"] for d in decisions] == [f"bar {n}" for n in range(1, 40)]
    assert [d["action"] for d in decisions if d["action"] != "hold"] == ["buy", "sell"]
    assert_ledger_linked(run)
    assert len(run.table("trades")) == 1


def test_a_recorded_backtest_is_served(
    shared_data: Path, tmp_path: Path, client: TestClient, make_account: Any, make_agent: Any
) -> None:
    alice = make_account("alice")
    agent_id = make_agent(alice)
    root = client.app.state.context.fmel.root  # type: ignore[attr-defined]
    recorder = FmelRecorder(root, agent_id, new_id(), alice.user_id, "BACKTEST")
    capture = StepCapture(recorder)
    with recorder:
        outcome = run_backtest(
            steps(shared_data / "daily", ("AAPL",)),
            AGENTS / "dies.py",
            BacktestConfig(symbols=("AAPL",), record_decisions=True),
            on_step=capture.on_step,
        )
        capture.on_trades(outcome.trades)
    body = client.get(
        "/api/fmel/analytics", headers=alice.headers, params={"agentId": agent_id}
    ).json()
    assert body["totalDecisions"] == 39
    assert body["actions"] == {"buy": 1, "sell": 1, "hold": 37, "mixed": 0}
    assert body["trades"]["total"] == 1
    latest = client.get(
        "/api/fmel/decisions", headers=alice.headers, params={"agentId": agent_id, "limit": 1}
    ).json()
    assert latest["decisions"][0]["agentReported"]["reasoning"] == "bar 39"
