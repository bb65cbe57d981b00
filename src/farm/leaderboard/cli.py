"""``farm leaderboard``: the ranked boards, as the API serves them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from farm.cli_support import DEFAULT_URL, JsonOpt, TokenOpt, UrlOpt, respond, table


def leaderboard(
    board: Annotated[
        str, typer.Option("--type", help="headline, backtest or paper_trading")
    ] = "headline",
    metric: Annotated[
        str,
        typer.Option(help="sharpe, returns, win_rate, total_pnl, sortino, calmar, max_drawdown"),
    ] = "sharpe",
    timeframe: Annotated[str, typer.Option(help="daily, weekly, monthly or all_time")] = "all_time",
    limit: Annotated[int, typer.Option(help="How many rows (1 to the server's maximum)")] = 20,
    url: UrlOpt = DEFAULT_URL,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a leaderboard (GET /api/leaderboard)."""
    params = {"type": board, "metric": metric, "timeframe": timeframe, "limit": limit}

    def show(result: Any) -> None:
        rows = [
            (
                r["agentId"],
                r["rank"] or "-",
                r["agentName"],
                r["userId"],
                _num(r["metric"]),
                r["status"],
            )
            for r in result["leaderboard"]
        ]
        table(
            f"Leaderboard: {board}, {metric}, {timeframe}",
            ["agent", "rank", "name", "owner", metric, "status"],
            rows,
        )

    respond(url, token, "GET", "/api/leaderboard", as_json=as_json, show=show, params=params)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:,.4f}"
