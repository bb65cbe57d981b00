"""``farm decisions`` and ``farm explain``: read an agent's decision record from a terminal.

Agent-reported text is untrusted: everything printed goes through ``cli_support.inert``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer

from farm.cli_support import (
    DEFAULT_URL,
    JsonOpt,
    QuietOpt,
    TokenOpt,
    UrlOpt,
    console,
    inert,
    print_id,
    respond,
    table,
)

MAX_BARS_SHOWN = 10
REASONING_PREVIEW = 60


def decisions(
    session_id: str,
    limit: Annotated[int, typer.Option(help="How many, newest first (1 to 1000)")] = 20,
    action: Annotated[
        str | None, typer.Option(help="Only this action: buy, sell, hold or mixed")
    ] = None,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List a session's decisions, newest first (--quiet: only their ids, one a line)."""
    params: dict[str, Any] = {"sessionId": session_id, "limit": limit}
    if action:
        params["action"] = action

    def show(result: Any) -> None:
        rows = []
        for d in result["decisions"]:
            said = d["agentReported"]
            reasoning = said["reasoning"] or ""
            if len(reasoning) > REASONING_PREVIEW:
                reasoning = reasoning[: REASONING_PREVIEW - 1] + "…"
            rows.append(
                (
                    d["decisionId"],
                    d["barTime"],
                    d["action"],
                    "; ".join(_order(o) for o in d["orders"]),
                    _percent(said["confidence"]),
                    reasoning,
                )
            )
        shown = len(result["decisions"])
        table(
            f"Decisions of session {session_id} ({shown} of {result['total']}, newest first)",
            ["decision", "bar time", "action", "orders", "confidence", "reasoning"],
            rows,
        )

    path = "/api/fmel/decisions"
    shown = print_id("decisionId", each_of="decisions") if quiet else show
    respond(url, token, "GET", path, as_json=as_json and not quiet, show=shown, params=params)


def explain(
    decision_id: str,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Explain one decision: what the agent saw, read and said, what it did, how it turned out."""
    path = f"/api/fmel/decisions/{decision_id}"
    respond(url, token, "GET", path, as_json=as_json, show=_print_explanation)


def _print_explanation(detail: dict[str, Any]) -> None:
    for line in explanation(detail):
        console.print(inert(line), highlight=False, soft_wrap=True)


def explanation(d: dict[str, Any]) -> list[str]:
    """A readable account of one decision (the API's decision detail body); raw text, to be
    printed through ``inert``. Numbers the API sends as null (non-finite) read ``n/a``."""
    said = d["agentReported"]
    lines = [
        f"Decision {d['decisionId']} — step {d['seq']} of session {d['sessionId']} "
        f"({d['mode']}), agent {d['agentId']}",
        f"Bar time {d['barTime']}, recorded at {d['wallTime']}",
        "",
        f"Portfolio: cash {_num(d['portfolio']['cash'], ',.2f')}, "
        f"value {_num(d['portfolio']['value'], ',.2f')}",
        "Positions: "
        + (
            ", ".join(
                f"{p['symbol']} {_num(p['size'], 'g')} @ {_num(p['price'], '.2f')}"
                for p in d["positions"]
            )
            or "none"
        ),
    ]
    bars = d["bars"]
    lines.append("Market (this bar):")
    for b in bars[:MAX_BARS_SHOWN]:
        lines.append(
            f"  {b['symbol']}: open {_num(b['open'], '.2f')} high {_num(b['high'], '.2f')} "
            f"low {_num(b['low'], '.2f')} close {_num(b['close'], '.2f')} "
            f"volume {_num(b['volume'], ',.0f')}"
        )
    if len(bars) > MAX_BARS_SHOWN:
        lines.append(f"  ... and {len(bars) - MAX_BARS_SHOWN} more symbols")
    lines += ["", "What the agent reported (not verified by the platform):"]
    reads = [f"{a['symbol']}.{a['field']}[{a['index']}]" for a in said["dataAccessed"]]
    more = " (more were not recorded)" if said["dataAccessedTruncated"] else ""
    lines.append(f"  It read: {', '.join(reads) or 'nothing'}{more}")
    indicators = [
        (f"{i['name']}[{i['line']}]" if i["line"] else i["name"]) + f" = {_num(i['value'], '.4g')}"
        for i in said["indicators"]
    ]
    lines.append(f"  Indicators: {', '.join(indicators) or 'none'}")
    reasoning = said["reasoning"]
    cut = " [truncated]" if said["reasoningTruncated"] else ""
    lines.append(f"  Reasoning: {reasoning + cut if reasoning else '(none given)'}")
    lines.append(f"  Confidence: {_percent(said['confidence']) or '(none given)'}")
    for error in said["hookErrors"]:
        lines.append(f"  Hook error: {error}")
    lines += ["", f"Action: {d['action'].upper()}"]
    for order in d["orders"]:
        lines.append(f"  order {_order(order)}")
    for cid in d["cancels"]:
        lines.append(f"  cancel {cid}")
    lines.append("Executions:" if d["executions"] else "Executions: none")
    for e in d["executions"]:
        if e["status"] == "filled":
            lines.append(
                f"  filled {e['side']} {_num(e['size'], 'g')} {e['symbol']} "
                f"@ {_num(e['price'], '.2f')}, commission {_num(e['commission'], '.2f')}, "
                f"at {e['time']}"
            )
        else:
            reason = f": {e['reason']}" if e["reason"] else ""
            what = "".join(f"{p} " for p in (e["side"], e["symbol"]) if p)  # reconciled: no side
            lines.append(f"  {what}ended {e['status']}{reason} at {e['time']}")
    lines.append("Trades:" if d["trades"] else "Trades: none opened or closed here")
    for t in d["trades"]:
        lines.append(
            f"  {t['role']} a {t['symbol']} trade ({t['entryTime']} -> {t['exitTime']}, "
            f"{t['barsHeld']} bars): net P&L {_num(t['pnlNet'], '+,.2f')} "
            f"(gross {_num(t['pnl'], '+,.2f')})"
        )
    return lines


def _order(o: dict[str, Any]) -> str:
    prices = [
        f"{name} {_num(o[key], '.2f')}"
        for name, key in (("limit", "limitPrice"), ("stop", "stopPrice"))
        if o[key] is not None
    ]
    price = f" ({', '.join(prices)})" if prices else ""
    return f"{o['side']} {_num(o['size'], 'g')} {o['symbol']} {o['type']}{price} [{o['status']}]"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.0%}"


def _num(value: float | None, spec: str) -> str:
    """A number formatted by ``spec``; ``n/a`` for null (how the API sends NaN) or NaN."""
    return "n/a" if value is None or math.isnan(value) else format(value, spec)
