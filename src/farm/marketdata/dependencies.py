"""FastAPI dependencies of the market data service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from farm.marketdata.store import BarStore


def get_bar_store(request: Request) -> BarStore:
    """The bar store of the app's platform context."""
    store: BarStore = request.app.state.context.bars
    return store


BarStoreDep = Annotated[BarStore, Depends(get_bar_store)]
