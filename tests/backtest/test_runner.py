"""run_backtest end to end: real sandboxed agents on real bars.

Parity with a plain Backtrader run, no look-ahead, broker tampering, agent failures and the FMEL
fields an agent reports.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backtrader as bt
import pytest
from backtest_support import AGENTS, EXAMPLES, STANDARD, Market
from backtrader.utils.dateintern import num2date

from farm.backtest.runner import BacktestConfig, BacktestOutcome, run_backtest
from farm.config import SandboxMode
from farm.core.orders import OrderStatus
from farm.sandbox.host import DecisionRecord
from farm.sandbox.launcher import SandboxLimits

pytestmark = pytest.mark.sandbox

CASH = 100_000.0
PARITY_AGENTS = [AGENTS / "sma_cross.py", AGENTS / "rsi_limits.py", *sorted(EXAMPLES.glob("*.py"))]


@dataclass
class Reference:
    value: float
    trades: int
    fills: list[tuple[Any, ...]]


def load_strategy(path: Path) -> type[bt.Strategy]:
    name = f"reference_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    (cls,) = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, bt.Strategy) and v.__module__ == name
    ]
    return cls


class _ClosedTrades(bt.Analyzer):
    def start(self) -> None:
        self.closed = 0

    def notify_trade(self, trade: Any) -> None:
        if trade.isclosed:
            self.closed += 1


def reference(
    market: Market, agent: Path, symbols: tuple[str, ...], *, preload: bool = False
) -> Reference:
    """A plain Backtrader run: PandasData from the CSVs, 0.1% commission, no platform code."""
    cerebro = bt.Cerebro(preload=preload, stdstats=False)
    for sym in symbols:
        cerebro.adddata(
            bt.feeds.PandasData(dataname=market.frame(sym), openinterest=None), name=sym
        )
    cerebro.addstrategy(load_strategy(agent))
    cerebro.broker.setcash(CASH)
    cerebro.broker.setcommission(commission=0.001)
    cerebro.addanalyzer(_ClosedTrades, _name="trades")
    (strategy,) = cerebro.run()
    fills = [
        (num2date(bit.dt).date(), order.data._name, bit.size, bit.price, bit.comm)
        for order in cerebro.broker.orders
        for bit in order.executed.exbits
    ]
    return Reference(cerebro.broker.getvalue(), strategy.analyzers.trades.closed, sorted(fills))


def platform(
    market: Market,
    agent: Path,
    symbols: tuple[str, ...],
    *,
    mode: SandboxMode = "bwrap",
    steps: int | None = None,
    records: list[DecisionRecord] | None = None,
    **config: Any,
) -> BacktestOutcome:
    all_steps = market.steps(symbols)
    return run_backtest(
        all_steps[:steps],
        agent,
        BacktestConfig(symbols=symbols, initial_cash=CASH, sandbox=mode, **config),
        on_step=None if records is None else records.append,
    )


def assert_parity(outcome: BacktestOutcome, ref: Reference) -> None:
    assert outcome.failure is None
    assert outcome.value == pytest.approx(ref.value, rel=1e-12, abs=1e-6)
    assert len(outcome.trades) == ref.trades
    got = sorted((f.ts.date(), f.symbol, f.size, f.price, f.commission) for f in outcome.fills)
    assert len(got) == len(ref.fills)
    for mine, theirs in zip(got, ref.fills, strict=True):
        assert mine[:2] == theirs[:2]
        assert mine[2:] == pytest.approx(theirs[2:], rel=1e-12, abs=1e-6)


# -- parity ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("agent", PARITY_AGENTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_parity_with_plain_backtrader_on_10_symbols(market: Market, agent: Path) -> None:
    ref = reference(market, agent, STANDARD)
    assert ref.fills, "the agent should trade"
    assert_parity(platform(market, agent, STANDARD), ref)


def test_parity_holds_with_decision_recording_on(market: Market) -> None:
    agent = AGENTS / "sma_cross.py"
    records: list[DecisionRecord] = []
    outcome = platform(market, agent, STANDARD, record_decisions=True, records=records)
    assert_parity(outcome, reference(market, agent, STANDARD))
    assert len(records) == outcome.steps == len(market.steps(STANDARD))
    assert sum(len(r.fills) for r in records) == len(outcome.fills)
    assert sum(len(r.orders) for r in records) >= len(outcome.fills)


@pytest.mark.slow
@pytest.mark.parametrize(
    "agent",
    [AGENTS / "sma_cross.py", EXAMPLES / "rsi_mean_reversion.py"],
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_parity_with_plain_backtrader_on_100_symbols(market: Market, agent: Path) -> None:
    if not agent.exists():
        pytest.skip(f"{agent} is not there yet")
    symbols = market.symbols(100)
    assert_parity(platform(market, agent, symbols), reference(market, agent, symbols))


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason="Backtrader matches stop/limit orders against a stale bar when a symbol has no bar in "
    "a step (even one from before the order existed); the host ledger deliberately waits for "
    "the symbol's next bar",
)
def test_stop_and_limit_orders_on_gappy_symbols_differ_from_backtrader(market: Market) -> None:
    agent = AGENTS / "rsi_limits.py"
    symbols = market.symbols(100)
    assert_parity(platform(market, agent, symbols), reference(market, agent, symbols))


def test_ten_symbols_end_to_end(market: Market) -> None:
    # its speed is measured by bench/backtest.py (performance is measured, not asserted)
    steps = market.steps(STANDARD)
    outcome = run_backtest(
        steps, AGENTS / "sma_cross.py", BacktestConfig(symbols=STANDARD, sandbox="bwrap")
    )
    assert outcome.failure is None
    assert outcome.steps == len(steps) > 1100


# -- look-ahead -----------------------------------------------------------------------------------


def test_no_probe_reveals_a_bar_beyond_the_current_step(market: Market, shared_data: Path) -> None:
    symbols = ("AAPL", "ISTB")  # ISTB misses days: its feed sits out steps and gets retried
    records: list[DecisionRecord] = []
    outcome = platform(
        market,
        AGENTS / "peek.py",
        symbols,
        record_decisions=True,
        params={"data_dir": str(shared_data / "daily")},
        records=records,
    )
    assert outcome.failure is None
    last_close: dict[str, float] = {}
    sat_out = 0
    for record in records:
        for sym, bar in record.bars.items():
            last_close[sym] = bar.close
        if not record.next_called:
            continue
        seen = json.loads(record.reasoning or "{}")
        assert seen["listdir"] == "FileNotFoundError"
        assert seen["file"] == "FileNotFoundError"
        for sym in symbols:
            probe = seen[sym]
            assert probe["dataname"] == repr(sym)
            assert probe["len"] == probe["buflen"] == probe["array"] == probe["dt_array"]
            assert probe["close1"] == "IndexError"
            assert probe["get"] == []
            assert probe["close0"] == probe["last_close"] == last_close[sym]
            sat_out += sym not in record.bars
    assert sat_out > 0, "the probe should have run while ISTB had no bar"


def test_plain_backtrader_leaks_the_future_the_platform_does_not(market: Market) -> None:
    symbols = ("AAPL", "MSFT")
    leaked = reference(market, AGENTS / "cheat.py", symbols, preload=True)
    assert leaked.value > 3 * CASH  # reading tomorrow's close is a money machine
    outcome = platform(market, AGENTS / "cheat.py", symbols)
    assert outcome.failure is None
    assert outcome.fills == []
    assert outcome.value == CASH


# -- tampering ------------------------------------------------------------------------------------


def test_tampering_with_the_mirror_broker_changes_nothing(market: Market) -> None:
    honest = platform(market, AGENTS / "sma_cross.py", STANDARD, mode="unsafe-local")
    tampered = platform(market, AGENTS / "tamper.py", STANDARD, mode="unsafe-local")
    assert tampered.failure is None
    assert tampered.fills == honest.fills
    assert tampered.trades == honest.trades
    assert tampered.equity == honest.equity
    assert (tampered.cash, tampered.positions) == (honest.cash, honest.positions)


def test_orders_sized_from_tampered_cash_are_rejected(market: Market) -> None:
    records: list[DecisionRecord] = []
    outcome = platform(
        market, AGENTS / "greedy.py", ("AAPL",), mode="unsafe-local", steps=20, records=records
    )
    assert outcome.failure is None
    assert outcome.fills == []
    assert outcome.value == CASH
    statuses = [e.status for r in records for e in r.events]
    assert statuses == [OrderStatus.SUBMITTED, OrderStatus.MARGIN]


# -- failures -------------------------------------------------------------------------------------


def test_agent_exception_reports_only_agent_frames(market: Market) -> None:
    outcome = platform(market, AGENTS / "broken.py", ("AAPL",), steps=50)
    failure = outcome.failure
    assert failure is not None
    assert failure.reason == "agent_error"
    assert failure.message == "ValueError: boom at bar 7"
    assert outcome.steps == 6
    frames = [line for line in failure.traceback.splitlines() if line.startswith("  File ")]
    assert [f.rsplit(" in ", 1)[1] for f in frames] == ["next", "helper", "explode"]
    assert all("agent.py" in f for f in frames)
    assert "backtrader" not in failure.traceback
    assert "farm" not in failure.traceback


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = 1\n", "exactly one backtrader.Strategy subclass (found: none)"),
        (
            "import backtrader as bt\nclass A(bt.Strategy): pass\nclass B(bt.Strategy): pass\n",
            "(found: A, B)",
        ),
        ("def broken(:\n", "SyntaxError"),
        ("raise ImportError('numpyy')\n", "ImportError: numpyy"),
    ],
)
def test_invalid_agents(market: Market, tmp_path: Path, source: str, expected: str) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(source)
    outcome = platform(market, agent, ("AAPL",), mode="unsafe-local", steps=5)
    assert outcome.failure is not None
    assert outcome.failure.reason == "invalid_agent"
    assert expected in outcome.failure.message
    assert outcome.steps == 0


@pytest.mark.parametrize(
    ("body", "reason", "expected"),
    [
        (
            "self.buy_bracket(size=1, price=1.0, stopprice=0.5, limitprice=2.0)",
            "agent_error",
            "bracket orders",
        ),
        (
            "self.buy(size=1, exectype=bt.Order.StopTrail, trailamount=1.0)",
            "agent_error",
            "StopTrail orders are not supported",
        ),
        ("self.buy(size=1, exectype=bt.Order.Close)", "agent_error", "Close orders"),
        ("self.broker.set_coc(True)", "agent_error", "cheat-on-close"),
        (
            "self.buy(size=1, oco=self.sell(size=1, exectype=bt.Order.Limit, price=1e4))",
            "agent_error",
            "OCO orders",
        ),
        ("self.buy(size=float('nan'))", "agent_error", "finite non-zero"),
        ("import os; os._exit(3)", "agent_error", "exit code 3"),
        ("import os; os.write(4, b'\\x00\\x00\\x00\\x03abc')", "agent_error", "protocol violation"),
        ("import os; os.write(4, b'\\xff\\xff\\xff\\xff')", "agent_error", "exceeds"),
        ("while True: pass", "timeout", "no answer within 2 s"),
    ],
)
def test_agent_misbehaviour_fails_the_session(
    market: Market, tmp_path: Path, body: str, reason: str, expected: str
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import backtrader as bt\n\nclass Bad(bt.Strategy):\n    def next(self):\n"
        f"        if len(self) == 3:\n            {body}\n"
    )
    outcome = platform(market, agent, ("AAPL",), mode="unsafe-local", steps=10, step_timeout_s=2)
    assert outcome.failure is not None
    assert outcome.failure.reason == reason
    assert expected in outcome.failure.message
    assert outcome.steps == 2


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ("orders=[WireOrder('x', 'EVIL', 1.0, 'market')]", "unknown symbol 'EVIL'"),
        ("orders=[WireOrder('x', 'AAPL', float('nan'), 'market')]", "finite and non-zero"),
        ("orders=[WireOrder('x', 'AAPL', 0.0, 'market')]", "finite and non-zero"),
        ("orders=[WireOrder('x', 'AAPL', 1.0, 'market')] * 2", "duplicate order id 'x'"),
        ("orders=[WireOrder('x', 'AAPL', 1.0, 'limit')]", "positive prices"),
        ("orders=[WireOrder('x', 'AAPL', 1.0, 'stop_limit', 2.0, -1.0)]", "positive prices"),
        ("cancels=['never-sent']", "cancel of unknown order"),
        ("seq=seq + 1", "expected the decision for step 2"),
    ],
)
def test_forged_decisions_are_validated(
    market: Market, tmp_path: Path, fields: str, expected: str
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import os\nimport backtrader as bt\nimport msgspec\n"
        "from farm.sandbox.protocol import Decision, WireOrder\n\n"
        "class Forger(bt.Strategy):\n    def next(self):\n        if len(self) == 3:\n"
        "            seq = self.broker._farm_clock.seq\n"
        f"            fields = {{'seq': seq, **dict({fields})}}\n"
        "            body = msgspec.msgpack.encode(Decision(**fields))\n"
        "            os.write(4, len(body).to_bytes(4, 'big') + body)\n"
    )
    outcome = platform(market, agent, ("AAPL",), mode="unsafe-local", steps=10)
    assert outcome.failure is not None
    assert outcome.failure.reason == "agent_error"
    assert outcome.failure.message.startswith("protocol violation: ")
    assert expected in outcome.failure.message
    assert outcome.steps == 2
    assert outcome.fills == []


@pytest.mark.parametrize(
    ("mode", "limits", "body", "reason"),
    [
        ("bwrap", SandboxLimits(memory_mb=200), "blob = b'x' * (600 << 20)", "memory"),
        ("unsafe-local", SandboxLimits(output_kb=64), "print('x' * (1 << 20))", "output"),
        ("unsafe-local", SandboxLimits(wall_s=2), "import time; time.sleep(60)", "timeout"),
    ],
)
def test_sandbox_limits_end_the_session(
    market: Market, tmp_path: Path, mode: SandboxMode, limits: SandboxLimits, body: str, reason: str
) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import backtrader as bt\n\nclass Hog(bt.Strategy):\n    def next(self):\n"
        f"        if len(self) == 3:\n            {body}\n"
    )
    outcome = platform(market, agent, ("AAPL",), mode=mode, steps=10, limits=limits)
    assert outcome.failure is not None
    assert outcome.failure.reason == reason
    assert outcome.steps == 2


def test_failure_in_strategy_init_is_reported(market: Market, tmp_path: Path) -> None:
    agent = tmp_path / "agent.py"
    agent.write_text(
        "import backtrader as bt\n\nclass Early(bt.Strategy):\n    def __init__(self):\n"
        "        raise KeyError('missing setting')\n"
    )
    outcome = platform(market, agent, ("AAPL",), mode="unsafe-local", steps=10)
    assert outcome.failure is not None
    assert outcome.failure.reason == "agent_error"
    assert outcome.failure.message == "KeyError: 'missing setting'"
    assert "in __init__" in outcome.failure.traceback
    assert outcome.steps == 0


# -- FMEL fields ----------------------------------------------------------------------------------


def test_decision_fields_are_captured(market: Market) -> None:
    symbols = ("AAPL", "MSFT")
    records: list[DecisionRecord] = []
    outcome = platform(
        market, AGENTS / "explained.py", symbols, steps=12, record_decisions=True, records=records
    )
    assert outcome.failure is None
    warmup = [r for r in records if not r.next_called]
    decided = [r for r in records if r.next_called]
    assert len(warmup) == 4
    assert len(decided) == 8
    assert all(r.reasoning is None and not r.data_accesses for r in warmup)
    for i, record in enumerate(decided, start=5):
        aapl, msft = record.bars["AAPL"], record.bars["MSFT"]
        assert record.reasoning is not None
        assert record.reasoning.startswith(f"close={aapl.close} ")
        assert f"high={msft.high} read-after={aapl.open}" in record.reasoning
        reads = [("AAPL", "close", 0), ("AAPL", "close", -1), ("MSFT", "high", 0)]
        if i == 8:  # creating the order reads the bar too
            assert record.data_accesses[:3] == reads
        else:
            assert record.data_accesses == reads
        if i % 3 == 0:
            assert record.confidence is None
            assert record.hook_errors == [
                "get_decision_confidence raised ValueError: no confidence today"
            ]
        else:
            assert record.confidence == 0.25
            assert not record.hook_errors
        closes = [r.bars["AAPL"].close for r in records[i - 5 : i]]
        assert record.indicators["sma"] == pytest.approx(sum(closes) / 5)
        assert record.indicators["gappy"] == [None, 1.0]
        assert set(record.indicators) == {
            "sma",
            "gappy",
            "rsis[0]",
            "rsis[1]",
            "highs[AAPL]",
            "highs[MSFT]",
        }
        assert record.indicators["highs[MSFT]"] == max(
            r.bars["MSFT"].high for r in records[i - 2 : i]
        )
    (order,) = [o for r in records for o in r.orders]
    assert order.decision_seq == decided[3].seq
    assert order.size == 1
    assert [f.client_order_id for r in records for f in r.fills] == [order.client_order_id]


def test_nothing_is_captured_when_recording_is_off(market: Market) -> None:
    records: list[DecisionRecord] = []
    outcome = platform(market, AGENTS / "explained.py", ("AAPL", "MSFT"), steps=12, records=records)
    assert outcome.failure is None
    assert len(records) == 12
    for record in records:
        assert not record.next_called
        assert record.reasoning is None
        assert record.confidence is None
        assert not record.indicators
        assert not record.data_accesses
