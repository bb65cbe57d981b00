"""HTTP routes of the market data service."""

from __future__ import annotations

from fastapi import APIRouter

from farm.marketdata.dependencies import BarStoreDep
from farm.marketdata.schemas import SymbolList, SymbolOut

router = APIRouter(prefix="/api/data", tags=["data"])


@router.get("/symbols")
def list_symbols(store: BarStoreDep) -> SymbolList:
    """Every symbol with bars: first and last date, bar count, and source (real or synthetic)."""
    symbols = [SymbolOut.of(info) for info in store.symbols()]
    return SymbolList(symbols=symbols, total=len(symbols))
