"""One decision told in words: what the agent saw, read, held, said and did, and what came of
it. Plain text only; the template escapes it."""

from __future__ import annotations

from farm.fmel.schemas import DecisionDetail, OrderOut
from farm.web.render import money

MAX_LISTED = 12


def _listed(parts: list[str], none: str) -> str:
    if not parts:
        return none
    shown = parts[:MAX_LISTED]
    more = f", and {len(parts) - MAX_LISTED} more" if len(parts) > MAX_LISTED else ""
    return "; ".join(shown) + more + "."


def _order(order: OrderOut) -> str:
    verb = "buy" if order.side == "buy" else "sell"
    price = ""
    if order.limit_price is not None:
        price = f" with a limit of {order.limit_price:,.2f}"
    if order.stop_price is not None:
        price += f" with a stop at {order.stop_price:,.2f}"
    return f"{verb} {abs(order.size):g} {order.symbol} ({order.type}{price}, {order.status})"


def _reads(decision: DecisionDetail) -> str:
    reported = decision.agent_reported
    reads = [
        f"{a.field} of {a.symbol} "
        + ("now" if a.index == 0 else f"{abs(a.index)} bar{'s' if abs(a.index) != 1 else ''} back")
        for a in reported.data_accessed
    ]
    reads += [
        f"indicator {i.name}{f' line {i.line}' if i.line else ''} = "
        + ("n/a" if i.value is None else f"{i.value:,.4g}")
        for i in reported.indicators
    ]
    return _listed(reads, "It read no recorded field or indicator.")


def _said(decision: DecisionDetail) -> str:
    reported = decision.agent_reported
    parts = []
    if reported.reasoning:
        cut = " (cut short)" if reported.reasoning_truncated else ""
        parts.append(f"“{reported.reasoning}”{cut}")
    if reported.confidence is not None:
        parts.append(f"confidence {reported.confidence:.0%}")
    if reported.hook_errors:
        parts.append(f"its reporting hooks failed: {'; '.join(reported.hook_errors)}")
    return ", ".join(parts) + "." if parts else "It gave no reasoning and no confidence."


def _outcome(decision: DecisionDetail) -> str:
    parts = []
    for e in decision.executions:
        if e.status == "filled" and e.price is not None:
            parts.append(
                f"{e.side} {abs(e.size):g} {e.symbol} filled at {e.price:,.2f} "
                f"(commission {money(e.commission)})"
            )
        else:
            what = " ".join(p for p in (e.side, e.symbol, e.status) if p)  # reconciled: no side
            parts.append(f"{what}: {e.reason}")
    for t in decision.trades:
        verb = "opened" if t.role == "opened" else "closed"
        parts.append(
            f"{verb} a {abs(t.size):g} {t.symbol} trade held {t.bars_held} bars, "
            f"{t.entry_price:,.2f} to {t.exit_price:,.2f}, net {money(t.pnl_net)}"
        )
    return _listed(parts, "Nothing was executed for it.")


def in_words(decision: DecisionDetail) -> list[tuple[str, str]]:
    """The decision as (heading, sentence) pairs."""
    saw = [
        f"{b.symbol} closed at {b.close:,.2f} (open {b.open:,.2f}, high {b.high:,.2f}, "
        f"low {b.low:,.2f}, volume {b.volume:,.0f})"
        for b in decision.bars
    ]
    held = [f"{p.size:g} {p.symbol} at {p.price:,.2f} on average" for p in decision.positions]
    portfolio = decision.portfolio
    did = [_order(o) for o in decision.orders] + [f"cancel order {c}" for c in decision.cancels]
    return [
        (
            "Saw",
            f"On the bar of {decision.bar_time:%Y-%m-%d %H:%M} UTC: " + _listed(saw, "no bar."),
        ),
        ("Read", _reads(decision)),
        (
            "Held",
            f"Cash {money(portfolio.cash)}, worth {money(portfolio.value)} in all; "
            + _listed(held, "no position."),
        ),
        ("Said", _said(decision)),
        ("Did", f"{decision.action.value.capitalize()}: " + _listed(did, "no order.")),
        ("Came of it", _outcome(decision)),
    ]
