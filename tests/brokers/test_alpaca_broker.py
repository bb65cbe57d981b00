"""The Alpaca broker against the local Alpaca server, through the real alpaca-py clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alpaca_server import FakeAlpaca, alpaca_server
from farm.brokers.alpaca import (
    MAX_ATTEMPTS,
    AlpacaBroker,
    AlpacaKey,
    RateBudget,
    alpaca_client_id,
    trade_stream_url,
)
from farm.core.account import Account
from farm.core.bars import Bar, Step
from farm.core.orders import OrderEvent, OrderRequest, OrderStatus, OrderType
from farm.fmel.capture import StepCapture
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import RECONCILED

SINCE = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[tuple[FakeAlpaca, str]]:
    with alpaca_server(FakeAlpaca(prices={"AAPL": Decimal("100"), "MSFT": Decimal("50")})) as s:
        yield s


def _broker(fake: FakeAlpaca, url: str, cash: float = 100_000.0, **kw: object) -> AlpacaBroker:
    broker = AlpacaBroker(
        Account(cash), AlpacaKey(fake.key_id, fake.secret_key, url), since=SINCE, **kw
    )
    # reconciled at start and once the trade stream connected: the REST thread is idle
    _until(lambda: fake.trade_connected == 1 and broker.reconciliations >= 2)
    return broker


def _until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Session:
    """Steps a broker the way the session loop does, collecting its events."""

    def __init__(self, broker: AlpacaBroker) -> None:
        self.broker = broker
        self.events: list[OrderEvent] = []
        self.ts = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

    def step(self, close: float = 100.0) -> list[OrderEvent]:
        self.ts += timedelta(minutes=1)
        bar = Bar(close, close, close, close, 100)
        events = self.broker.process(Step(self.ts, {"AAPL": bar}))
        self.events += events
        return events

    def until(self, check: Callable[[], bool]) -> None:
        def stepped() -> bool:
            self.step()
            return check()

        _until(stepped)

    def statuses(self, cid: str) -> list[OrderStatus]:
        return [e.status for e in self.events if e.client_order_id == cid]

    def order(self, cid: str, size: float, kind: OrderType = OrderType.MARKET, **kw: object):
        return OrderRequest(cid, "AAPL", size, kind, self.ts, 100.0, 0, **kw)  # type: ignore[arg-type]


def test_client_ids_are_deterministic_and_short() -> None:
    long = "4f1c2d3e-0000-4000-8000-123456789abc-123456789-12"
    assert alpaca_client_id("s-1-1") == "s-1-1"
    assert alpaca_client_id(long) == alpaca_client_id(long)
    assert len(alpaca_client_id(long)) <= 48
    assert alpaca_client_id(long) != alpaca_client_id(long + "3")
    assert trade_stream_url("https://paper-api.alpaca.markets") == (
        "wss://paper-api.alpaca.markets/stream"
    )


def test_full_and_partial_fills_reach_the_account(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    broker = _broker(server, url)
    try:
        s = Session(broker)
        broker.submit(s.order("o-1", 10))
        broker.submit(s.order("o-2", 5, OrderType.LIMIT, price=99.5))
        broker.submit(s.order("o-1", 10))  # a replayed submit: ignored
        s.until(lambda: len(server.orders) == 2)
        s.step()
        server.fill("o-1", 4, "100.5")
        server.fill("o-1", 6, "101")
        server.fill("o-2", 5, "99.5")
        s.until(lambda: not broker.open_orders)
        assert server.posted == ["o-1", "o-2"]
        assert s.statuses("o-1") == [
            OrderStatus.SUBMITTED,
            OrderStatus.ACCEPTED,
            OrderStatus.PARTIAL,
            OrderStatus.COMPLETED,
        ]
        fills = [(f.client_order_id, f.size, f.price) for f in broker.account.fills]
        assert fills == [("o-1", 4.0, 100.5), ("o-1", 6.0, 101.0), ("o-2", 5.0, 99.5)]
        assert broker.account.cash == pytest.approx(float(server.cash))
        assert broker.account.positions["AAPL"].size == 15
        assert server.orders["o-2"].limit_price == Decimal("99.5")
        assert server.orders["o-2"].time_in_force == "gtc"
    finally:
        broker.close()


def test_refusals_reach_the_agent_as_rejected(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    broker = _broker(server, url)
    try:
        s = Session(broker)
        broker.submit(s.order("big", 5000))  # 500,000 > 100,000: 403 buying power
        broker.submit(OrderRequest("bad", "NOPE", 1, OrderType.MARKET, s.ts, 1.0, 0))  # 422
        broker.submit(s.order("frac", 0.5))  # Alpaca cannot take it here: refused at once
        later = s.ts + timedelta(days=3)
        broker.submit(s.order("exp", 1, OrderType.LIMIT, price=90.0, valid_until=later))
        s.until(lambda: len([e for e in s.events if e.status is OrderStatus.REJECTED]) == 4)
        reasons = {e.client_order_id: e.reason for e in s.events if e.reason}
        assert "insufficient buying power" in reasons["big"]
        assert "403" in reasons["big"]
        assert "not active" in reasons["bad"]
        assert "422" in reasons["bad"]
        assert "whole" in reasons["frac"]
        assert "good till cancelled" in reasons["exp"]
        assert server.posted == ["big", "bad"]
        assert not broker.open_orders
    finally:
        broker.close()


def test_missed_trade_updates_are_recovered(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    broker = _broker(server, url)
    try:
        s = Session(broker)
        broker.submit(s.order("o-1", 10))
        s.until(lambda: OrderStatus.ACCEPTED in s.statuses("o-1"))
        server.drop_trade_streams(stay_down=True)
        server.fill("o-1", 3, "100")  # nobody listens: the update is lost
        server.fill("o-1", 7, "102")
        server.restore_trade_stream()  # the stream reconnects, then reconciles
        s.until(lambda: OrderStatus.COMPLETED in s.statuses("o-1"))
        assert broker.account.positions["AAPL"].size == 10
        assert broker.account.cash == pytest.approx(float(server.cash))
        assert broker.account.positions["AAPL"].price == pytest.approx(101.4)
        assert any("missed by the trade stream" in d for d in broker.differences)
        assert broker.status()["differences"]
    finally:
        broker.close()


def test_a_burst_of_429s_loses_no_order(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    server.auto_fill = True
    broker = _broker(server, url)
    try:
        s = Session(broker)
        server.fail_next = [429, 429, 429, 500, 429]
        for n in range(5):
            broker.submit(s.order(f"o-{n}", 1))
        s.until(lambda: len(broker.account.fills) == 5)
        assert server.posted == [f"o-{n}" for n in range(5)]
        assert broker.link.retries == 5
        assert broker.account.positions["AAPL"].size == 5
    finally:
        broker.close()


def test_an_order_that_cannot_be_sent_is_rejected(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    broker = _broker(server, url)
    try:
        s = Session(broker)
        server.fail_next = [429] * MAX_ATTEMPTS
        broker.submit(s.order("o-1", 1))
        s.until(lambda: OrderStatus.REJECTED in s.statuses("o-1"))
        reason = next(e.reason for e in s.events if e.status is OrderStatus.REJECTED)
        assert "could not be sent" in reason
        assert "rate limit" in reason
        assert server.posted == []
    finally:
        broker.close()


def test_a_restart_reattaches_and_never_sends_twice(fake: tuple[FakeAlpaca, str]) -> None:
    server, url = fake
    first = _broker(server, url)
    s = Session(first)
    first.submit(s.order("o-1", 10))
    first.submit(s.order("o-2", 4, OrderType.LIMIT, price=95.0))
    s.until(lambda: len(server.orders) == 2)
    server.fill("o-1", 10, "100")
    first.close()  # the server dies; a fill happens while it is down
    server.fill("o-2", 4, "95")
    server.auto_fill = True

    second = _broker(server, url)  # the restart replays its steps: the same orders again
    try:
        s2 = Session(second)
        second.submit(s2.order("o-1", 10))
        second.submit(s2.order("o-2", 4, OrderType.LIMIT, price=95.0))
        second.submit(s2.order("o-3", 1))  # a new one
        s2.until(lambda: not second.open_orders)
        second.reconcile()
        s2.until(lambda: second.reconciliations >= 2)
        s2.step()
        assert server.posted == ["o-1", "o-2", "o-3"]
        assert second.account.cash == pytest.approx(float(server.cash))
        assert second.differences == []  # the replay re-attached them: nothing to correct
        positions = {k: v.size for k, v in second.account.positions.items()}
        assert positions == {k: float(q) for k, (q, _) in server.positions.items()}
    finally:
        second.close()

    third = _broker(server, url)  # a restart with nothing to replay (a live feed) restores too
    try:
        s3 = Session(third)
        s3.until(lambda: len(third.account.fills) == 3)
        assert third.account.cash == pytest.approx(float(server.cash))
        assert third.account.positions["AAPL"].size == 15
        assert third.differences == []
        assert not third.open_orders
        assert server.posted == ["o-1", "o-2", "o-3"]
    finally:
        third.close()


def test_an_order_a_frozen_owner_sends_after_a_takeover_is_attached_not_sent_twice(
    fake: tuple[FakeAlpaca, str],
) -> None:
    """A worker frozen past its lease wakes up and sends the order of its step in flight after
    the new owner listed the key's orders: the new owner's POST of the same client id gets
    Alpaca's 422 (client_order_id must be unique), and it attaches the order instead."""
    server, url = fake
    frozen = _broker(server, url)
    key = AlpacaKey(server.key_id, server.secret_key, url)
    owner = AlpacaBroker(Account(100_000.0), key, since=SINCE)  # lists nothing yet
    try:
        _until(lambda: server.trade_connected == 2 and owner.reconciliations >= 2)
        frozen.submit(Session(frozen).order("o-1", 10))
        _until(lambda: server.posted == ["o-1"])
        s = Session(owner)
        owner.submit(s.order("o-1", 10))
        _until(lambda: server.posted == ["o-1", "o-1"])  # refused: Alpaca has that client id
        s.until(lambda: OrderStatus.ACCEPTED in s.statuses("o-1"))
        server.fill("o-1", 10, "100")
        s.until(lambda: "AAPL" in owner.account.positions)
        assert list(server.orders) == ["o-1"], "one order at Alpaca"
        assert owner.account.positions["AAPL"].size == 10
        assert s.statuses("o-1") == [
            OrderStatus.SUBMITTED,
            OrderStatus.ACCEPTED,
            OrderStatus.COMPLETED,
        ]
        assert owner.differences == []
    finally:
        owner.close()
        frozen.close()


def test_the_budget_holds_requests_past_its_rate() -> None:
    budget = RateBudget(per_minute=3)
    stop = threading.Event()
    assert all(budget.acquire(stop) for _ in range(3))
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert not budget.acquire(stop)  # it waited for room until stopped
    assert time.monotonic() - started >= 0.25


def test_close_stops_the_trade_stream_at_once(fake: tuple[FakeAlpaca, str]) -> None:
    """A runtime stopping N Alpaca sessions closes them one after the other: each close must
    not wait out alpaca-py's 5 s receive timeout."""
    server, url = fake
    broker = _broker(server, url)
    started = time.monotonic()
    broker.close()
    assert time.monotonic() - started < 2.0
    assert broker.link._stream_thread is not None
    assert not broker.link._stream_thread.is_alive()
    _until(lambda: server.trade_connected == 0)


def test_reconciliation_corrections_reach_fmel(
    fake: tuple[FakeAlpaca, str], tmp_path: Path
) -> None:
    """A position and cash changed at Alpaca behind the session's back: the reconciliation
    corrects the account, and each correction is an FMEL execution record ``reconciled``."""
    server, url = fake
    broker = _broker(server, url)
    try:
        s = Session(broker)
        s.step()
        assert broker.corrections() == []
        with server.lock:
            server.positions["AAPL"] = (Decimal(5), Decimal(90))
            server.cash -= Decimal(450)
        broker.reconcile()
        s.until(lambda: len(broker.differences) >= 2)
        corrections = broker.corrections()
        assert broker.corrections() == []  # taken once
    finally:
        broker.close()
    assert {c.symbol for c in corrections} == {"", "AAPL"}
    assert any("AAPL: held 0, the broker has 5" in c.text for c in corrections)
    with FmelRecorder(tmp_path, "agent-1", "session-1", "user-1", "PAPER") as recorder:
        StepCapture(recorder).on_corrections(7, corrections)
    files = sorted(tmp_path.rglob("executions-*.parquet"))
    assert files, "no executions part written"
    rows = pa.concat_tables(pq.read_table(f) for f in files).to_pylist()
    assert sorted((r["status"], r["symbol"], r["seq"]) for r in rows) == [
        (RECONCILED, "", 7),
        (RECONCILED, "AAPL", 7),
    ]
    assert any("the broker has 99,550.00" in r["reason"] for r in rows)


def test_each_key_has_its_own_book(fake: tuple[FakeAlpaca, str]) -> None:
    """Two Alpaca accounts (two key pairs) at the same server: each sees only its own orders,
    positions and cash, so neither reconciliation reports a difference."""
    server, url = fake
    server.other_keys["PKOTHER"] = "other-secret"
    server.auto_fill = True
    mine = _broker(server, url)
    other = AlpacaBroker(Account(100_000.0), AlpacaKey("PKOTHER", "other-secret", url), since=SINCE)
    try:
        _until(lambda: server.trade_connected == 2 and other.reconciliations >= 2)
        s, t = Session(mine), Session(other)
        mine.submit(s.order("o-1", 10))
        s.until(lambda: "AAPL" in mine.account.positions)
        other.submit(t.order("o-1", 3))  # client order ids are unique per account
        t.until(lambda: "AAPL" in other.account.positions)
        done = (mine.reconciliations, other.reconciliations)
        mine.reconcile()
        other.reconcile()
        _until(lambda: mine.reconciliations > done[0] and other.reconciliations > done[1])
        s.step()
        t.step()
        assert mine.differences == []
        assert other.differences == []
        assert server.book("PKOTHER").posted == ["o-1"]
        assert server.book("PKOTHER").positions["AAPL"][0] == 3
        assert server.positions["AAPL"][0] == 10
        assert other.account.positions["AAPL"].size == 3
        assert other.account.cash == pytest.approx(float(server.book("PKOTHER").cash))
        assert mine.account.cash == pytest.approx(float(server.cash))
    finally:
        other.close()
        mine.close()
