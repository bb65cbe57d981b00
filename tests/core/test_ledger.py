"""Hand-computed reference values for the host ledger (BackBroker semantics, 0.1% commission)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from farm.core.bars import Bar, Step
from farm.core.ledger import Ledger
from farm.core.orders import OrderEvent, OrderRequest, OrderStatus, OrderType, Position

S = OrderStatus
Ohlc = tuple[float, float, float, float]
_ids = itertools.count(1)


def ts(day: int) -> datetime:
    return datetime(2024, 1, day, 21, tzinfo=UTC)


def step(day: int, **bars: Ohlc) -> Step:
    return Step(ts(day), {sym: Bar(*ohlc, volume=1000.0) for sym, ohlc in bars.items()})


def order(
    size: float,
    kind: OrderType = OrderType.MARKET,
    *,
    day: int = 1,
    created: float = 100.0,
    price: float | None = None,
    limit: float | None = None,
    valid: datetime | None = None,
    sym: str = "X",
    oid: str | None = None,
    seq: int = 0,
) -> OrderRequest:
    return OrderRequest(
        client_order_id=oid or f"o{next(_ids)}",
        symbol=sym,
        size=size,
        type=kind,
        created_ts=ts(day),
        created_price=created if price is None else price,
        decision_seq=seq,
        price=price,
        limit_price=limit,
        valid_until=valid,
    )


def statuses(events: list[OrderEvent]) -> list[OrderStatus]:
    return [e.status for e in events]


def fill_at(ledger: Ledger, req: OrderRequest, bar: Ohlc) -> float:
    """Submit ``req`` and process one bar of X on day 2; return the fill price."""
    ledger.submit(req)
    ledger.process(step(2, X=bar))
    assert len(ledger.fills) == 1, "expected exactly one fill"
    return ledger.fills[0].price


def test_market_buy_fills_at_next_open_with_commission() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(10, seq=3))
    events = ledger.process(step(2, X=(101, 103, 100, 102)))
    assert statuses(events) == [S.SUBMITTED, S.ACCEPTED, S.COMPLETED]
    done = events[-1]
    assert (done.fill_size, done.fill_price, done.commission) == (10, 101, pytest.approx(1.01))
    # cash = 10000 - 10 * 101 - 10 * 101 * 0.001
    assert ledger.cash == pytest.approx(8988.99)
    assert ledger.positions == {"X": Position(10, 101)}
    # value = cash + 10 * close 102
    assert ledger.mark(step(2, X=(101, 103, 100, 102))) == pytest.approx(10_008.99)
    assert ledger.equity == [(ts(2), pytest.approx(10_008.99))]
    assert ledger.fills[0].decision_seq == 3


def test_market_order_waits_for_a_bar_after_creation() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(1, day=2))
    assert statuses(ledger.process(step(2, X=(1, 1, 1, 1)))) == [S.SUBMITTED, S.ACCEPTED]
    assert statuses(ledger.process(step(3, X=(5, 5, 5, 5)))) == [S.COMPLETED]
    assert ledger.fills[0].price == 5


def test_symbol_without_bar_keeps_orders_pending_and_value_uses_last_close() -> None:
    ledger = Ledger(10_000.0, commission=0.0)
    ledger.submit(order(1, sym="X"))
    ledger.submit(order(2, sym="Y"))
    ledger.process(step(2, X=(10, 10, 10, 11)))
    assert [f.symbol for f in ledger.fills] == ["X"]
    assert ledger.mark(step(2, X=(10, 10, 10, 11))) == 10_000 - 10 + 11
    ledger.process(step(3, Y=(20, 20, 20, 21)))
    # X has no bar on day 3: valued at its day-2 close 11; Y at 21
    assert ledger.mark(step(3, Y=(20, 20, 20, 21))) == 10_000 - 10 - 40 + 11 + 42


@pytest.mark.parametrize(
    ("size", "limit", "bar", "expected"),
    [
        (1, 99.0, (100, 101, 98, 100), 99.0),  # buy: low touches the limit -> limit
        (1, 101.0, (100, 102, 99, 100), 100.0),  # buy: opens below the limit -> open
        (-1, 105.0, (106, 107, 104, 105), 106.0),  # sell: opens above the limit -> open
        (-1, 105.0, (104, 105.5, 103, 104), 105.0),  # sell: high reaches the limit -> limit
    ],
)
def test_limit_fills(size: float, limit: float, bar: Ohlc, expected: float) -> None:
    assert fill_at(Ledger(10_000.0), order(size, OrderType.LIMIT, price=limit), bar) == expected


def test_limit_not_reached_stays_pending_then_fills() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(1, OrderType.LIMIT, price=99.0, oid="lim"))
    assert ledger.open_orders == ["lim"]
    assert statuses(ledger.process(step(2, X=(100, 101, 99.5, 100)))) == [S.SUBMITTED, S.ACCEPTED]
    assert ledger.open_orders == ["lim"]
    assert statuses(ledger.process(step(3, X=(99.8, 100, 98, 99)))) == [S.COMPLETED]
    assert ledger.fills[0].price == 99.0
    assert ledger.open_orders == []


@pytest.mark.parametrize(
    ("size", "stop", "bar", "expected"),
    [
        (1, 105.0, (103, 106, 102, 104), 105.0),  # buy: high crosses the stop -> stop
        (1, 105.0, (107, 108, 106, 107), 107.0),  # buy: gaps over the stop -> open
        (-1, 95.0, (97, 98, 94, 96), 95.0),  # sell: low crosses the stop -> stop
        (-1, 95.0, (93, 94, 92, 93), 93.0),  # sell: gaps under the stop -> open
    ],
)
def test_stop_fills(size: float, stop: float, bar: Ohlc, expected: float) -> None:
    assert fill_at(Ledger(10_000.0), order(size, OrderType.STOP, price=stop), bar) == expected


@pytest.mark.parametrize(
    ("stop", "limit", "bar", "expected"),
    [
        (105.0, 106.0, (103, 107, 102, 104), 105.0),  # triggered in session, limit above stop
        (105.0, 104.0, (103, 106, 102, 102.5), 104.0),  # open > close: limit >= close -> limit
        (105.0, 106.0, (106, 107, 105, 106), 106.0),  # gap over the stop -> limit rules at open
    ],
)
def test_stop_limit_buy_fills(stop: float, limit: float, bar: Ohlc, expected: float) -> None:
    req = order(1, OrderType.STOP_LIMIT, price=stop, limit=limit)
    assert fill_at(Ledger(10_000.0), req, bar) == expected


def test_stop_limit_triggered_without_fill_becomes_a_limit() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(-1, OrderType.STOP_LIMIT, price=95.0, limit=96.0))
    # low crosses the stop, open > close and limit 96 > close 94.5: triggered, no fill
    ledger.process(step(2, X=(97, 97.5, 94, 94.5)))
    assert ledger.fills == []
    # now a plain sell limit at 96: high 96.2 reaches it
    ledger.process(step(3, X=(95, 96.2, 94, 95)))
    assert ledger.fills[0].price == 96.0


def test_percentage_slippage_matches_backbroker() -> None:
    slip = 50.0  # bps
    # market buy: open 100 slipped up 0.5% = 100.5, inside the high
    assert fill_at(Ledger(1e4, 0, slip), order(1), (100, 101, 99, 100)) == pytest.approx(100.5)
    # market buy: slipped price above the high is capped at the high (slip_match, no slip_out)
    assert fill_at(Ledger(1e4, 0, slip), order(1), (100, 100.2, 99, 100)) == 100.2
    # market sell: capped at the low
    assert fill_at(Ledger(1e4, 0, slip), order(-1), (100, 101, 99.9, 100)) == 99.9
    # stop buy crossed in session: stop 105 slipped to 105.525, capped by the high 105.3
    req = order(1, OrderType.STOP, price=105.0)
    assert fill_at(Ledger(1e4, 0, slip), req, (103, 105.3, 102, 104)) == 105.3
    # sell limit 105 gapped through at 106: 106 * 0.995 = 105.47 (above the limit)
    req = order(-1, OrderType.LIMIT, price=105.0)
    assert fill_at(Ledger(1e4, 0, slip), req, (106, 107, 104, 105)) == pytest.approx(105.47)
    # ... with 200 bps: 106 * 0.98 = 103.88 < limit: capped at the limit (not at the low)
    assert fill_at(Ledger(1e4, 0, 200.0), req, (106, 107, 104, 105)) == 105.0
    # limit hit inside the bar is never slipped
    req = order(1, OrderType.LIMIT, price=99.0)
    assert fill_at(Ledger(1e4, 0, slip), req, (100, 101, 98, 100)) == 99.0


def test_margin_at_submission_keeps_running_cash_negative() -> None:
    ledger = Ledger(1_000.0)
    a, b, c = order(6, oid="a"), order(6, oid="b"), order(1, oid="c")
    for req in (a, b, c):
        ledger.submit(req)
    events = ledger.process(step(2, X=(100, 100, 100, 100)))
    # a: 1000 - 600.6 = 399.4 -> accepted; b: 399.4 - 600.6 < 0 -> margin;
    # c: -201.2 - 100.1 < 0 -> margin too (Backtrader does not restore the cash)
    assert [(e.client_order_id, e.status) for e in events] == [
        ("a", S.SUBMITTED),
        ("b", S.SUBMITTED),
        ("c", S.SUBMITTED),
        ("a", S.ACCEPTED),
        ("b", S.MARGIN),
        ("c", S.MARGIN),
        ("a", S.COMPLETED),
    ]
    assert ledger.cash == pytest.approx(399.4)


def test_margin_at_execution_when_the_open_gaps_up() -> None:
    ledger = Ledger(1_000.0)
    ledger.submit(order(9))  # 9 * 100 * 1.001 = 900.9 <= 1000: accepted
    events = ledger.process(step(2, X=(120, 121, 119, 120)))  # 9 * 120 * 1.001 > 1000
    assert statuses(events) == [S.SUBMITTED, S.ACCEPTED, S.MARGIN]
    assert ledger.cash == 1_000.0
    assert ledger.fills == []
    assert ledger.positions == {}


def test_reversal_without_cash_closes_then_ends_in_margin() -> None:
    ledger = Ledger(1_000.0)
    ledger.submit(order(-5))
    ledger.process(step(2, X=(100, 100, 100, 100)))
    assert ledger.cash == pytest.approx(1_499.5)  # short sale adds 500, minus 0.5 commission
    ledger.submit(order(14, day=2))
    events = ledger.process(step(3, X=(110, 110, 110, 110)))
    # submit check at 100: close 5 -> 1499.5 - 500 - 0.5 = 999; open 9 -> 999 - 900.9 = 98.1 >= 0
    # execution at 110: close 5 -> 1499.5 - 500 - 50 - 0.55 = 948.95; open 9 needs 991.0: margin
    assert statuses(events) == [S.SUBMITTED, S.ACCEPTED, S.PARTIAL, S.MARGIN]
    assert (events[2].fill_size, events[2].fill_price) == (5, 110)
    assert events[2].commission == pytest.approx(0.55)
    assert ledger.cash == pytest.approx(948.95)
    assert ledger.positions == {}
    (trade,) = ledger.trades
    assert (trade.pnl, trade.commission) == (pytest.approx(-50), pytest.approx(1.05))


def test_cancel_pending_order_and_cancel_before_acceptance_is_ignored() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(1, OrderType.LIMIT, price=90.0, oid="lim"))
    ledger.process(step(2, X=(100, 100, 100, 100)))
    ledger.cancel("lim")
    ledger.submit(order(1, oid="mkt", day=2))
    ledger.cancel("mkt")  # not accepted yet: Backtrader's cancel finds nothing to cancel
    ledger.cancel("unknown")
    events = ledger.process(step(3, X=(100, 100, 100, 100)))
    assert [(e.client_order_id, e.status) for e in events] == [
        ("lim", S.CANCELLED),
        ("mkt", S.SUBMITTED),
        ("mkt", S.ACCEPTED),
        ("mkt", S.COMPLETED),
    ]
    assert events[0].ts == ts(2)


def test_expiry_after_valid_until_but_not_for_market_orders() -> None:
    ledger = Ledger(10_000.0)
    valid = ts(2) + timedelta(hours=1)
    ledger.submit(order(1, OrderType.LIMIT, price=90.0, valid=valid, oid="lim"))
    ledger.submit(order(1, valid=ts(1), oid="mkt"))
    ledger.process(step(2, X=(100, 100, 99, 100)))  # not expired yet: day 2 <= valid
    events = ledger.process(step(3, X=(100, 100, 99, 100)))
    assert [(e.client_order_id, e.status) for e in events] == [("lim", S.EXPIRED)]
    assert [f.client_order_id for f in ledger.fills] == ["mkt"]


def test_duplicate_client_order_id_is_ignored_and_invalid_orders_rejected() -> None:
    ledger = Ledger(10_000.0)
    req = order(1, oid="same")
    ledger.submit(req)
    ledger.submit(req)
    ledger.submit(order(5, oid="same"))
    ledger.submit(order(0, oid="zero"))
    ledger.submit(OrderRequest("nolimit", "X", 1, OrderType.LIMIT, ts(1), 100.0, 0))
    ledger.submit(order(1, OrderType.STOP_LIMIT, price=100.0, oid="nolim2"))
    ledger.submit(order(float("nan"), oid="nan"))
    events = ledger.process(step(2, X=(100, 100, 100, 100)))
    rejected = [e.client_order_id for e in events if e.status is S.REJECTED]
    assert rejected == ["zero", "nolimit", "nolim2", "nan"]
    assert all(e.reason for e in events if e.status is S.REJECTED)
    assert [(f.client_order_id, f.size) for f in ledger.fills] == [("same", 1)]


def test_trade_pnl_partial_closes() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(10, seq=1))
    ledger.process(step(2, X=(100, 100, 100, 100)))  # buy 10 @ 100, commission 1.0
    ledger.submit(order(-4, day=2, seq=2))
    ledger.process(step(3, X=(110, 110, 110, 110)))  # pnl 4 * 10 = 40, commission 0.44
    assert ledger.trades == []
    (open_trade,) = ledger.open_trades.values()
    assert (open_trade.size, open_trade.pnl, open_trade.bars_held) == (6, 40, 1)
    ledger.submit(order(-6, day=3, seq=3))
    ledger.process(step(4, X=(90, 90, 90, 90)))  # pnl 6 * -10 = -60, commission 0.54
    (trade,) = ledger.trades
    assert trade.pnl == pytest.approx(-20.0)
    assert trade.commission == pytest.approx(1.98)
    assert trade.pnl_net == pytest.approx(-21.98)
    assert (trade.size, trade.entry_price) == (10, 100)
    assert trade.exit_price == pytest.approx((4 * 110 + 6 * 90) / 10)
    assert (trade.entry_ts, trade.exit_ts, trade.bars_held) == (ts(2), ts(4), 2)
    assert (trade.opened_by_seq, trade.closed_by_seq) == (1, 3)
    assert ledger.cash == pytest.approx(10_000 - 20 - 1.98)


def test_reversal_closes_one_trade_and_opens_another() -> None:
    ledger = Ledger(10_000.0)
    ledger.submit(order(10, seq=1))
    ledger.process(step(2, X=(100, 100, 100, 100)))  # long 10 @ 100, commission 1.0
    ledger.submit(order(-15, day=2, seq=2))
    ledger.process(step(3, Y=(1, 1, 1, 1)))  # no X bar: stays pending, not a bar held
    events = ledger.process(step(4, X=(110, 110, 110, 110)))
    # close 10 (pnl 100, commission 1.1) and open short 5 @ 110 (commission 0.55)
    assert events[-1].commission == pytest.approx(1.65)
    (first,) = ledger.trades
    assert (first.pnl, first.commission, first.pnl_net) == (
        pytest.approx(100),
        pytest.approx(2.1),
        pytest.approx(97.9),
    )
    assert first.bars_held == 1
    assert ledger.positions == {"X": Position(-5, 110)}
    ledger.submit(order(5, day=4, seq=3))
    ledger.process(step(5, X=(100, 100, 100, 100)))  # cover 5 @ 100: pnl 50, commission 0.5
    second = ledger.trades[1]
    assert (second.size, second.entry_price, second.exit_price) == (-5, 110, 100)
    assert (second.pnl, second.commission, second.pnl_net) == (
        pytest.approx(50),
        pytest.approx(1.05),
        pytest.approx(48.95),
    )
    assert (second.opened_by_seq, second.closed_by_seq, second.bars_held) == (2, 3, 1)
    # 10000 + 100 + 50 - (1.0 + 1.65 + 0.5)
    assert ledger.cash == pytest.approx(10_146.85)
    assert ledger.value == ledger.cash


# -- risk rules (issue 8): margin on gross exposure, absurd orders, open-order cap ---------------


def test_short_proceeds_cannot_fund_buying_beyond_the_margin_multiple() -> None:
    ledger = Ledger(100_000.0, max_leverage=2.0)
    ledger.submit(order(-1_500, sym="Y", oid="short"))  # 150k short: 1.5x equity
    ledger.process(step(2, X=(100, 100, 100, 100), Y=(100, 100, 100, 100)))
    assert ledger.cash == pytest.approx(249_850.0)  # the short sale credits cash
    ledger.submit(order(1_000, day=2, oid="big"))  # 100k more: 250k gross > 2 x 99.7k equity
    ledger.submit(order(400, day=2, oid="small", sym="Z"))  # 40k more: 190k gross fits
    events = ledger.process(step(3, X=(100, 100, 100, 100), Y=(100, 100, 100, 100), Z=(100,) * 4))
    assert [(e.client_order_id, e.status) for e in events][-2:] == [
        ("big", S.MARGIN),
        ("small", S.COMPLETED),
    ]
    assert "2x equity" in events[-2].reason
    assert dict(ledger.positions) == {"Y": Position(-1_500, 100), "Z": Position(400, 100)}

    plain = Ledger(100_000.0)  # without the rule: Backtrader lets short proceeds pay for anything
    plain.submit(order(-1_500, sym="Y"))
    plain.process(step(2, X=(100, 100, 100, 100), Y=(100, 100, 100, 100)))
    plain.submit(order(1_000, day=2, oid="big-plain"))
    events = plain.process(step(3, X=(100, 100, 100, 100), Y=(100, 100, 100, 100)))
    assert (events[-1].client_order_id, events[-1].status) == ("big-plain", S.COMPLETED)


def test_a_reversal_beyond_the_margin_multiple_closes_then_ends_in_margin() -> None:
    ledger = Ledger(10_000.0, max_leverage=2.0)
    ledger.submit(order(-150, sym="Y"))  # 15k short
    ledger.submit(order(-40))  # 4k short: 19k gross, within 2 x ~10k
    ledger.process(step(2, X=(100, 100, 100, 100), Y=(100, 100, 100, 100)))
    ledger.submit(order(100, day=2))  # closes 40, then 15k + 6k = 21k gross: too much
    events = ledger.process(step(3, X=(100, 100, 100, 100), Y=(100, 100, 100, 100)))
    assert statuses(events)[-2:] == [S.PARTIAL, S.MARGIN]
    assert events[-2].fill_size == 40
    assert dict(ledger.positions) == {"Y": Position(-150, 100)}


def test_the_margin_rule_refuses_every_opening_once_equity_is_gone() -> None:
    ledger = Ledger(10_000.0, max_leverage=2.0)
    ledger.submit(order(-150))  # 15k short
    ledger.process(step(2, X=(100, 100, 100, 100)))
    ledger.mark(step(3, X=(170, 170, 170, 170)))  # the short lost 10.5k: equity < 0
    assert ledger.value < 0
    ledger.submit(order(1, sym="Y", day=3))
    events = ledger.process(step(4, X=(170,) * 4, Y=(10, 10, 10, 10)))
    assert statuses(events)[-1] is S.MARGIN


@pytest.mark.parametrize(
    ("req", "fragment"),
    [
        (order(1e9 * 1e3 + 1), "at most 1e+12 shares"),
        (order(-1e308), "at most 1e+12 shares"),
        (order(1, created=1e300), "created_price"),
        (order(1, OrderType.LIMIT, price=1e300), "1e+12"),
        (order(1, OrderType.STOP_LIMIT, price=100.0, limit=float("inf")), "at most 1e+12"),
    ],
)
def test_absurd_sizes_and_prices_are_rejected(req: OrderRequest, fragment: str) -> None:
    ledger = Ledger(100_000.0)
    ledger.submit(req)
    ledger.submit(order(1, oid=f"after-{req.client_order_id}"))
    events = ledger.process(step(2, X=(100, 100, 100, 100)))
    assert (events[0].client_order_id, events[0].status) == (req.client_order_id, S.REJECTED)
    assert fragment in events[0].reason
    assert [f.client_order_id for f in ledger.fills] == [f"after-{req.client_order_id}"]
    assert ledger.value == pytest.approx(99_999.9)


def test_orders_past_the_open_order_cap_are_rejected_until_some_are_done() -> None:
    ledger = Ledger(100_000.0, max_open_orders=3)
    for i in range(5):
        ledger.submit(order(1, OrderType.LIMIT, price=50.0, oid=f"l{i}"))
    events = ledger.process(step(2, X=(100, 100, 100, 100)))
    rejected = [e for e in events if e.status is S.REJECTED]
    assert [e.client_order_id for e in rejected] == ["l3", "l4"]
    assert "open order limit" in rejected[0].reason
    assert ledger.open_orders == ["l0", "l1", "l2"]
    ledger.cancel("l1")
    ledger.submit(order(1, OrderType.LIMIT, price=50.0, oid="l5", day=2))
    ledger.submit(order(1, OrderType.LIMIT, price=50.0, oid="l6", day=2))
    events = ledger.process(step(3, X=(100, 100, 100, 100)))
    assert [(e.client_order_id, e.status) for e in events if e.status is S.REJECTED] == [
        ("l6", S.REJECTED)
    ]
    assert ledger.open_orders == ["l0", "l2", "l5"]


def test_a_step_touches_only_the_resting_orders_its_bars_can_fill_or_expire(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tried: list[str] = []
    original = Ledger._try_exec

    def counting(self: Ledger, o: Any, bar: Bar, now: datetime) -> bool:
        tried.append(o.id)
        return bool(original(self, o, bar, now))

    monkeypatch.setattr(Ledger, "_try_exec", counting)
    ledger = Ledger(1e9)
    for i in range(10_000):
        ledger.submit(order(1, OrderType.LIMIT, price=1.0 + i / 1e5, oid=f"never{i}"))
    ledger.submit(order(1, OrderType.LIMIT, price=90.0, oid="dip", valid=ts(4)))
    ledger.submit(order(-1, OrderType.STOP, price=95.0, oid="stop"))
    ledger.process(step(2, X=(100, 101, 99, 100)))
    assert tried == []  # 10,002 resting orders, none of which this bar can fill
    ledger.process(step(3, X=(100, 101, 89, 100)))
    assert tried == ["dip", "stop"]  # the low reached both, tried in submission order
    assert [f.client_order_id for f in ledger.fills] == ["dip", "stop"]
    assert len(ledger.open_orders) == 10_000


def test_resting_orders_fill_in_submission_order_when_cash_runs_out() -> None:
    # Each order costs about 6k of the 10k cash and both fill at day 4's bars: whichever was
    # submitted first gets the cash, whatever its kind or symbol (Backtrader's pending queue).
    for first, second in (("stop", "limit"), ("limit", "stop")):
        ledger = Ledger(10_000.0)
        reqs = {
            "stop": lambda day: order(60, OrderType.STOP, price=101.0, oid="stop", day=day),
            "limit": lambda day: order(60, OrderType.LIMIT, price=99.0, sym="Y", oid="limit"),
        }
        flat = (100, 100, 100, 100)
        ledger.submit(reqs[first](1))
        ledger.process(step(2, X=flat, Y=flat))
        ledger.submit(reqs[second](2))
        ledger.process(step(3, X=flat, Y=flat))
        events = ledger.process(step(4, X=(100, 102, 99, 100), Y=(100, 102, 98, 100)))
        assert [(e.client_order_id, e.status) for e in events] == [
            (first, S.COMPLETED),
            (second, S.MARGIN),
        ]


def test_cancelled_orders_are_compacted_away_and_the_rest_still_fill() -> None:
    ledger = Ledger(1e9)
    day = 1
    for _ in range(5):  # 5 x 1,000 orders placed and cancelled: the books shed them
        ids = [f"c{day}-{i}" for i in range(1_000)]
        for oid in ids:
            ledger.submit(order(1, OrderType.LIMIT, price=50.0, oid=oid, day=day))
        day += 1
        ledger.process(step(day, X=(100, 100, 100, 100)))
        for oid in ids:
            ledger.cancel(oid)
    ledger.submit(order(2, OrderType.LIMIT, price=80.0, oid="keep", day=day))
    ledger.process(step(day + 1, X=(100, 100, 100, 100)))
    assert sum(len(b.falling) + len(b.rising) for b in ledger._books.values()) < 2_100
    ledger.process(step(day + 2, X=(100, 100, 40, 100)))
    assert [(f.client_order_id, f.size) for f in ledger.fills] == [("keep", 2)]
    assert ledger.open_orders == []
