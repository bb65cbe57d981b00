"""The compare page: two sessions picked among the user's latest sessions with decisions (or
given by id), their analytics side by side."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from web_support import sign_in

from farm.context import Context
from farm.web import decision_pages
from fmel.fmel_helpers import Rows, write_small

OPTION = re.compile(r'<option value="([^"]*)"( selected)?>([^<]*)</option>')


def picker(html: str, name: str) -> list[tuple[str, bool, str]]:
    """The options of the picker ``name``: (value, selected, label)."""
    found = re.search(rf'<select name="{name}".*?</select>', html, re.S)
    assert found, f"the page has no picker {name}"
    return [(v, bool(s), label.strip()) for v, s, label in OPTION.findall(found.group(0))]


def test_the_picker_lists_my_sessions_with_decisions_and_compares_two(
    web: TestClient, web_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows, root = Rows(web_context), web_context.settings.fmel_dir
    (alice, token), (eve, eve_token) = rows.user("alice"), rows.user("eve")
    swing = rows.agent(alice.id, "Swing")
    backtest, paper = rows.backtest(swing, hours=1), rows.paper(swing, hours=2)
    queued = rows.backtest(swing, hours=3, bars=0)
    theirs = rows.agent(eve.id, "Eve's")
    eves = rows.backtest(theirs, hours=4)
    for agent_id, session_id, owner in [
        (swing, backtest, alice),
        (swing, paper, alice),
        (theirs, eves, eve),
    ]:
        write_small(root, agent_id, session_id, owner.id)

    sign_in(web, token)
    empty = web.get("/decisions/compare")
    assert empty.status_code == 200
    choices = [
        ("", False, "Choose a session"),
        (paper, False, f"Swing · paper trading · 2026-03-02 11:30 UTC · {paper[:8]}"),
        (backtest, False, f"Swing · backtest · 2026-03-02 10:30 UTC · {backtest[:8]}"),
    ]
    assert picker(empty.text, "a") == choices
    assert picker(empty.text, "b") == choices
    assert eves not in empty.text
    assert queued not in empty.text  # no step yet, so no decisions

    compared = web.get("/decisions/compare", params={"a": backtest, "b": paper})  # the form's GET
    assert compared.status_code == 200
    assert [v for v, selected, _ in picker(compared.text, "a") if selected] == [backtest]
    assert [v for v, selected, _ in picker(compared.text, "b") if selected] == [paper]
    assert f"<h3>{choices[2][2]}</h3>" in compared.text  # each side under its label
    assert f"<h3>{choices[1][2]}</h3>" in compared.text
    assert compared.text.count("8 decisions: 2 buy, 2 sell, 3 hold, 1 mixed") == 2

    # Bounded to the latest; an id given in the link is still compared (and kept chosen).
    monkeypatch.setattr(decision_pages, "SESSIONS_SHOWN", 1)
    linked = web.get("/decisions/compare", params={"a": backtest, "b": paper})
    assert picker(linked.text, "a")[1:] == [
        (backtest, True, f"Session {backtest}"),
        (paper, False, choices[1][2]),
    ]
    assert picker(linked.text, "b")[1:] == [(paper, True, choices[1][2])]
    assert linked.text.count("8 decisions:") == 2
    assert f"<h3>Session {backtest}</h3>" in linked.text

    assert web.get("/decisions/compare", params={"a": eves, "b": paper}).status_code == 404
    sign_in(web, eve_token)
    assert web.get("/decisions/compare", params={"a": backtest}).status_code == 404
    assert backtest not in web.get("/decisions/compare").text

    sign_in(web, rows.user("carol")[1])
    nothing = web.get("/decisions/compare").text
    assert "None of your sessions has recorded decisions yet" in nothing
    assert "<select" not in nothing
