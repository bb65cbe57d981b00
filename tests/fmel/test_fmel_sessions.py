"""The sessions with decisions a user can pick (the web app's compare picker), on SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fmel_helpers import ROWS_T0, Rows

from farm.context import Context
from farm.fmel.router import get_service
from farm.storage.models import User


def listed(context: Context, user: User, limit: int = 100) -> list[dict[str, Any]]:
    return [
        {
            "id": s.session_id,
            "agent": s.agent_id,
            "name": s.agent_name,
            "kind": s.kind,
            "at": s.created_at,
        }
        for s in get_service(context).sessions(user, limit=limit)
    ]


def test_my_sessions_that_took_steps_newest_first(context: Context) -> None:
    rows = Rows(context)
    (alice, _), (bob, _) = rows.user("alice"), rows.user("bob")
    swing = rows.agent(alice.id, "Swing")
    custom = rows.backtest(swing, hours=1)
    standard = rows.backtest(swing, hours=2, kind="standard")
    rows.backtest(swing, hours=3, bars=0)  # queued: no step yet
    rows.backtest(swing, hours=4, fmel=False)  # asked not to record decisions
    paper = rows.paper(swing, hours=5)
    rows.paper(swing, hours=6, bars=0)  # started, no bar yet
    gone = rows.agent(alice.id, "Gone", status="deleted")
    rows.backtest(gone, hours=7)
    theirs = rows.agent(bob.id, "Bob's")
    bobs = rows.backtest(theirs, hours=8)
    swing_of = {"agent": swing, "name": "Swing"}

    assert listed(context, alice) == [
        {"id": paper, "kind": "paper", "at": ROWS_T0 + timedelta(hours=5), **swing_of},
        {"id": standard, "kind": "standard", "at": ROWS_T0 + timedelta(hours=2), **swing_of},
        {"id": custom, "kind": "custom", "at": ROWS_T0 + timedelta(hours=1), **swing_of},
    ]
    assert [s["id"] for s in listed(context, alice, limit=2)] == [paper, standard]
    assert [s["id"] for s in listed(context, bob)] == [bobs]
