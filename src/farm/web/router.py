"""Every page of the web app, mounted at ``/`` by ``create_app`` (none is in the OpenAPI)."""

from __future__ import annotations

from fastapi import APIRouter

from farm.web import (
    agent_pages,
    backtest_pages,
    decision_pages,
    leaderboard_pages,
    paper_pages,
    sign_in,
)

router = APIRouter(include_in_schema=False)
for pages in (
    leaderboard_pages,
    sign_in,
    agent_pages,
    backtest_pages,
    decision_pages,
    paper_pages,
):
    router.include_router(pages.router)
