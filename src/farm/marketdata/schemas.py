"""API bodies of the market data service."""

from __future__ import annotations

from datetime import date

from farm.marketdata.store import Source, SymbolInfo
from farm.schemas import ApiModel


class SymbolOut(ApiModel):
    """One stored symbol: first and last bar dates (UTC), bar count, and where the bars came
    from (``synthetic`` data is for demos: results on it are labelled and never ranked)."""

    symbol: str
    first_date: date
    last_date: date
    bars: int
    source: Source

    @classmethod
    def of(cls, info: SymbolInfo) -> SymbolOut:
        """The API view of a store entry."""
        return cls(
            symbol=info.symbol,
            first_date=info.first.date(),
            last_date=info.last.date(),
            bars=info.bars,
            source=info.source,
        )


class SymbolList(ApiModel):
    """Every stored symbol, sorted."""

    symbols: list[SymbolOut]
    total: int
