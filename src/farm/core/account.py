"""The account of one session: cash, positions, fills, trades and equity (DESIGN §4).

The account applies fills whatever produced them (the simulated broker's matcher at a step, or
a real broker's executions arriving on their own, partial ones included) and marks positions to
market. Every update uses Backtrader's float operations in Backtrader's order, so a backtest's
numbers stay bit-identical to a plain ``BackBroker`` run. It never matches orders: that is the
broker's job (:mod:`farm.brokers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from farm.core.bars import Bar, Step
from farm.core.orders import ClosedTrade, Fill, Position


@dataclass(frozen=True, slots=True)
class OpenTrade:
    """A trade that is still open (Backtrader's ``Trade`` while ``isopen``)."""

    symbol: str
    size: float
    entry_ts: datetime
    entry_price: float
    pnl: float
    commission: float
    bars_held: int
    opened_by_seq: int


class _Trade:
    """Mutable state of an open trade, updated exactly like ``backtrader.Trade.update``."""

    __slots__ = (
        "bars",
        "commission",
        "entry_ts",
        "exit_size",
        "exit_value",
        "opened_by",
        "peak",
        "pnl",
        "price",
        "size",
        "symbol",
    )

    def __init__(self, symbol: str, ts: datetime, seq: int) -> None:
        self.symbol = symbol
        self.entry_ts = ts
        self.opened_by = seq
        self.size = 0.0
        self.price = 0.0
        self.commission = 0.0
        self.pnl = 0.0
        self.bars = 0
        self.peak = 0.0
        self.exit_size = 0.0
        self.exit_value = 0.0


def split(psize: float, size: float) -> tuple[float, float]:
    """``Position.update``: the (opened, closed) parts of ``size`` against a position ``psize``."""
    new = psize + size
    if not new:
        return 0.0, size
    if not psize:
        return size, 0.0
    if psize > 0:
        if size > 0:
            return size, 0.0
        return (0.0, size) if new > 0 else (new, -psize)
    if size < 0:
        return size, 0.0
    return (0.0, size) if new < 0 else (new, -psize)


def avg_price(psize: float, pprice: float, size: float, price: float) -> float:
    """``Position.update``: the average price after adding ``size`` at ``price``."""
    new = psize + size
    if not new:
        return 0.0
    if not psize or (psize > 0) != (new > 0):
        return price
    if (psize > 0) == (size > 0):
        return (pprice * psize + size * price) / new
    return pprice


class Account:
    """Cash, positions at their last closes, fills, closed trades and the equity curve.

    Call :meth:`begin_step` when a step's bars arrive (before any fill of that step),
    :meth:`execute` for each execution, and :meth:`mark` to record the value at the closes.
    """

    __slots__ = (
        "_closes",
        "_exposure",
        "_fills_before",
        "_open",
        "_positions",
        "_rank",
        "cash",
        "equity",
        "fills",
        "trades",
    )

    def __init__(self, cash: float) -> None:
        self.cash = float(cash)
        self._positions: dict[str, Position] = {}
        self._rank: dict[str, int] = {}
        self._closes: dict[str, float] = {}
        self._open: dict[str, _Trade] = {}
        self._exposure: list[float] | None = None  # [gross, net] position value this step
        self._fills_before = 0  # fills made before a restore (not in ``fills``)
        self.fills: list[Fill] = []
        self.trades: list[ClosedTrade] = []
        self.equity: list[tuple[datetime, float]] = []

    @classmethod
    def restore(
        cls,
        cash: float,
        positions: Mapping[str, tuple[Position, float]],
        trades: list[ClosedTrade],
        equity: list[tuple[datetime, float]],
        internals: Mapping[str, Any],
    ) -> Account:
        """The account as it was persisted: ``cash``, the positions with their last closes, the
        closed trades, the equity curve and :meth:`internals` (what those rows do not hold).
        Its ``fills`` start empty; :attr:`fill_count` goes on from the persisted count."""
        account = cls(cash)
        account._rank = {s: i for i, s in enumerate(internals["rank"])}
        for symbol, (position, close) in positions.items():
            account._rank.setdefault(symbol, len(account._rank))
            account._positions[symbol] = position
            account._closes[symbol] = close
        for symbol, entry, opened_by, *numbers in internals["open"]:
            trade = account._open[symbol] = _Trade(symbol, datetime.fromisoformat(entry), opened_by)
            (
                trade.size,
                trade.price,
                trade.commission,
                trade.pnl,
                trade.bars,
                trade.peak,
                trade.exit_size,
                trade.exit_value,
            ) = numbers
        account._fills_before = internals["fills"]
        account.trades = list(trades)
        account.equity = list(equity)
        return account

    def internals(self) -> dict[str, Any]:
        """What the account's rows (cash, positions, trades, equity) do not hold, as JSON
        values: the order positions are valued in, the fill count and the open trades."""
        return {
            "rank": sorted(self._rank, key=self._rank.__getitem__),
            "fills": self.fill_count,
            "open": [
                [
                    t.symbol,
                    t.entry_ts.isoformat(),
                    t.opened_by,
                    t.size,
                    t.price,
                    t.commission,
                    t.pnl,
                    t.bars,
                    t.peak,
                    t.exit_size,
                    t.exit_value,
                ]
                for t in self._open.values()
            ],
        }

    @property
    def fill_count(self) -> int:
        """How many fills the account made (those before a restore included)."""
        return self._fills_before + len(self.fills)

    @property
    def positions(self) -> Mapping[str, Position]:
        """Open positions by symbol (read-only view)."""
        return MappingProxyType(self._positions)

    @property
    def closes(self) -> Mapping[str, float]:
        """The last known close of every symbol held (read-only view)."""
        return MappingProxyType(self._closes)

    @property
    def value(self) -> float:
        """Cash plus positions at their last known closes (``BackBroker.getvalue``).

        Positions are summed in the order Backtrader keeps them (first order per symbol), so the
        value is bit-identical, not just close.
        """
        held = 0.0
        positions = self._positions
        for sym in sorted(positions, key=self._rank.__getitem__):
            pos = positions[sym]
            close = self._closes[sym]
            dvalue = pos.size * close
            if dvalue > 0:  # Backtrader "unlevers" long values; same float operations
                unrealized = pos.size * (close - pos.price)
                held += dvalue - unrealized
                held += unrealized
            else:
                held += dvalue
        return self.cash + held

    @property
    def open_trades(self) -> Mapping[str, OpenTrade]:
        """Trades still open, by symbol, with bars held so far (``Trade.barlen``)."""
        return {
            t.symbol: OpenTrade(
                t.symbol, t.size, t.entry_ts, t.price, t.pnl, t.commission, t.bars, t.opened_by
            )
            for t in self._open.values()
        }

    def track(self, symbol: str) -> None:
        """An order for ``symbol`` was submitted: positions are valued in that order."""
        self._rank.setdefault(symbol, len(self._rank))

    def begin_step(self, step: Step) -> None:
        """A step's bars arrived: open trades age a bar where their symbol traded."""
        self._exposure = None
        for trade in self._open.values():
            if trade.symbol in step.bars:
                trade.bars += 1

    def update_closes(self, bars: Mapping[str, Bar]) -> None:
        """Remember the closes of the held symbols that have a bar in ``bars``."""
        for sym in self._positions:
            bar = bars.get(sym)
            if bar is not None:
                self._closes[sym] = bar.close
        self._exposure = None

    def mark(self, step: Step) -> float:
        """Value the account at ``step``'s closes (last known close otherwise); append to equity."""
        self.update_closes(step.bars)
        value = self.value
        self.equity.append((step.ts, value))
        return value

    def execute(
        self,
        order_id: str,
        symbol: str,
        ts: datetime,
        size: float,
        price: float,
        close: float,
        decision_seq: int,
        *,
        commission: float,
        max_leverage: float | None = None,
        enforce: bool = True,
    ) -> tuple[Fill | None, str]:
        """Book an execution of ``size`` of ``symbol`` at ``price`` (``BackBroker._execute``,
        then ``Trade.update``): cash, the position, the trade it opens, adds to or closes, and
        ``close`` as the symbol's mark. ``commission`` is a fraction of traded value.

        With ``enforce`` the opening part (what opens or adds to the position) is refused when
        cash would go negative or, with ``max_leverage``, when gross exposure would exceed that
        multiple of equity; the closing part always executes. Returns the fill (None when
        nothing executed) and why the opening part was refused ("" when it was not). A real
        broker's executions, partial ones included, are applied with ``enforce`` off.
        """
        held = self._positions.get(symbol)
        psize, pprice = (held.size, held.price) if held else (0.0, 0.0)
        opened, closed = split(psize, size)
        cash = self.cash
        closedcomm = openedcomm = 0.0
        if closed:
            pnl = -closed * (price - pprice)
            cash += -closed * pprice + pnl
            closedcomm = abs(closed) * commission * price
            cash -= closedcomm
            self.cash = cash
        refused = ""
        if opened:
            cash -= opened * price
            openedcomm = abs(opened) * commission * price
            cash -= openedcomm
            if enforce and cash < 0.0:
                refused = "insufficient cash"
            elif (
                enforce
                and max_leverage is not None
                and not self._within_margin(
                    max_leverage, symbol, psize + closed + opened, price, cash
                )
            ):
                refused = f"gross exposure would exceed {max_leverage:g}x equity"
            if refused:
                opened = 0.0
                openedcomm = 0.0
            else:
                self.cash = cash
        execsize = closed + opened
        if not execsize:
            return None, refused
        self._rank.setdefault(symbol, len(self._rank))
        newsize = psize + execsize
        if newsize:
            self._positions[symbol] = Position(newsize, avg_price(psize, pprice, execsize, price))
        else:
            del self._positions[symbol]
        self._revalue(symbol, psize, newsize * close)
        self._closes[symbol] = close
        fill = Fill(order_id, symbol, ts, execsize, price, closedcomm + openedcomm, decision_seq)
        self.fills.append(fill)
        self._book_trade(fill, closed, closedcomm, opened, openedcomm)
        return fill, refused

    def align(
        self, ts: datetime, cash: float, positions: Mapping[str, Position], tolerance: float
    ) -> list[tuple[str, str]]:
        """Bring cash and positions to a real broker's (reconciliation at ``ts``); returns the
        differences beyond ``tolerance`` (cash) or any share, as (symbol, sentence) pairs, the
        symbol empty for cash. A position the broker changed restarts its open trade at the
        broker's average price."""
        found = []
        if abs(self.cash - cash) > tolerance:
            found.append(("", f"cash was {self.cash:,.2f}, the broker has {cash:,.2f}"))
        self.cash = float(cash)
        for sym in sorted(set(self._positions) | set(positions)):
            mine, theirs = self._positions.get(sym), positions.get(sym)
            if mine == theirs or (
                mine is not None and theirs is not None and abs(mine.size - theirs.size) < 1e-9
            ):
                continue
            found.append(
                (
                    sym,
                    f"{sym}: held {mine.size if mine else 0:g}, "
                    f"the broker has {theirs.size if theirs else 0:g}",
                )
            )
            self._open.pop(sym, None)
            if theirs is None:
                del self._positions[sym]
                continue
            self._positions[sym] = theirs
            self._rank.setdefault(sym, len(self._rank))
            self._closes.setdefault(sym, theirs.price)
            trade = self._open[sym] = _Trade(sym, ts, -1)
            trade.size = trade.peak = theirs.size
            trade.price = theirs.price
        self._exposure = None
        return found

    def _gross_net(self) -> list[float]:
        """[gross, net] value of the positions at their last known closes, kept current through
        this step's executions."""
        if self._exposure is None:
            closes = self._closes
            values = [p.size * closes[s] for s, p in self._positions.items()]
            self._exposure = [sum(abs(v) for v in values), sum(values)]
        return self._exposure

    def _within_margin(
        self, leverage: float, sym: str, newsize: float, price: float, cash: float
    ) -> bool:
        """Whether holding ``newsize`` of ``sym`` at ``price`` with ``cash`` keeps gross exposure
        within ``leverage`` times equity (False when equity is not positive)."""
        gross, net = self._gross_net()
        held = self._positions.get(sym)
        old = held.size * self._closes[sym] if held else 0.0
        value = newsize * price
        equity = cash + net - old + value
        return gross - abs(old) + abs(value) <= leverage * equity

    def _revalue(self, sym: str, psize: float, value: float) -> None:
        """Update this step's exposure after ``sym`` went from ``psize`` to a position worth
        ``value`` (at its new close)."""
        exposure = self._exposure
        if exposure is not None:
            old = psize * self._closes[sym] if psize else 0.0
            exposure[0] += abs(value) - abs(old)
            exposure[1] += value - old

    def _book_trade(
        self,
        fill: Fill,
        closed: float,
        closedcomm: float,
        opened: float,
        openedcomm: float,
    ) -> None:
        """``Strategy._addnotification``: close bit then open bit, as ``Trade.update`` does."""
        sym, ts, price = fill.symbol, fill.ts, fill.price
        if closed:
            trade = self._open[sym]
            trade.commission += closedcomm
            trade.size += closed
            trade.pnl += -closed * (price - trade.price)
            trade.exit_size += closed
            trade.exit_value += closed * price
            if not trade.size:
                del self._open[sym]
                self.trades.append(
                    ClosedTrade(
                        symbol=sym,
                        size=trade.peak,
                        entry_ts=trade.entry_ts,
                        exit_ts=ts,
                        entry_price=trade.price,
                        exit_price=trade.exit_value / trade.exit_size,
                        pnl=trade.pnl,
                        pnl_net=trade.pnl - trade.commission,
                        commission=trade.commission,
                        bars_held=trade.bars,
                        opened_by_seq=trade.opened_by,
                        closed_by_seq=fill.decision_seq,
                    )
                )
        if opened:
            current = self._open.get(sym)
            if current is None:
                current = self._open[sym] = _Trade(sym, ts, fill.decision_seq)
            current.commission += openedcomm
            old = current.size
            current.size += opened
            current.price = (old * current.price + opened * price) / current.size
            if abs(current.size) > abs(current.peak):
                current.peak = current.size
