"""FastAPI dependencies of the market data service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from farm.marketdata.store import BarStore


def get_bar_store(request: Request) -> BarStore:
    """The app's bar store (``app.state.bar_store``, created by the app factory)."""
    store: BarStore = request.app.state.bar_store
    return store


BarStoreDep = Annotated[BarStore, Depends(get_bar_store)]
