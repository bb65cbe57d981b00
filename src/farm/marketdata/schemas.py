"""API bodies of the market data service."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import Field

from farm.marketdata.feed import FeedState, FeedStatus
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


class FeedOut(ApiModel):
    """The live feed: where it is, what it published last, and which symbols that step lacked."""

    source: str = Field(description="replay, or off when this platform runs no feed")
    state: FeedState
    message: str | None = Field(default=None, description="Why it ended or failed")
    replay_start: date | None = Field(default=None, description="First replayed date")
    last_bar_time: datetime | None = Field(default=None, description="Bar time of the last step")
    last_published_at: datetime | None = Field(default=None, description="When it was published")
    steps_published: int = 0
    bars_published: int = 0
    symbols: list[str] = Field(default_factory=list, description="The symbols the feed carries")
    missing_at_last_step: list[str] = Field(
        default_factory=list, description="Carried symbols without a bar in the last step"
    )

    @classmethod
    def of(cls, status: FeedStatus) -> FeedOut:
        """The API view of the feed's saved status."""
        return cls(
            source=status.source,
            state=status.state,
            message=status.message,
            replay_start=status.replay_start,
            last_bar_time=status.last_bar_time,
            last_published_at=status.last_published_at,
            steps_published=status.steps_published,
            bars_published=status.bars_published,
            symbols=list(status.symbols),
            missing_at_last_step=list(status.missing_at_last_step),
        )
