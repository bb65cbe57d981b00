"""FastAPI dependencies of the market data service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from farm.marketdata.feed import FeedRunner
from farm.marketdata.store import BarStore


def get_bar_store(request: Request) -> BarStore:
    """The bar store of the app's platform context."""
    store: BarStore = request.app.state.context.bars
    return store


BarStoreDep = Annotated[BarStore, Depends(get_bar_store)]


def get_feed(request: Request) -> FeedRunner:
    """The live feed of the app's platform context."""
    feed: FeedRunner = request.app.state.context.feed
    return feed


FeedDep = Annotated[FeedRunner, Depends(get_feed)]
