"""HTTP routes of the market data service."""

from __future__ import annotations

from fastapi import APIRouter

from farm.marketdata.dependencies import BarStoreDep, FeedDep
from farm.marketdata.schemas import FeedOut, SymbolList, SymbolOut

router = APIRouter(prefix="/api/data", tags=["data"])
feed_router = APIRouter(tags=["data"])


@router.get("/symbols")
def list_symbols(store: BarStoreDep) -> SymbolList:
    """Every symbol with bars: first and last date, bar count, and source (real or synthetic)."""
    symbols = [SymbolOut.of(info) for info in store.symbols()]
    return SymbolList(symbols=symbols, total=len(symbols))


@feed_router.get("/api/feed")
def feed_status(feed: FeedDep) -> FeedOut:
    """The live feed: source, state, the last bar time published and when, how many steps and
    bars it published, the symbols it carries and those without a bar at its last step."""
    return FeedOut.of(feed.status())
