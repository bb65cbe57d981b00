"""HTTP routes of the FMEL service: decisions, analytics, comparisons, search and exports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from farm.deps import ContextDep, CurrentUser
from farm.fmel.records import Action
from farm.fmel.schemas import (
    MAX_LIMIT,
    MAX_OFFSET,
    Analytics,
    Comparison,
    DateRange,
    DecisionDetail,
    DecisionList,
    ExportFormat,
    RecordKind,
    SearchResults,
)
from farm.fmel.service import MAX_DATE_CHARS, Export, Filters, FmelService
from farm.schemas import DATE_BOUNDS, errors

router = APIRouter(prefix="/api/fmel", tags=["fmel"])


def get_service(context: ContextDep) -> FmelService:
    """The FMEL service over the app's database and FMEL store."""
    return FmelService(context.db, context.fmel)


Service = Annotated[FmelService, Depends(get_service)]
AgentId = Annotated[str | None, Query(alias="agentId", description="One of your agents")]
SessionId = Annotated[
    str | None, Query(alias="sessionId", description="A backtest or paper session")
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"1 to {MAX_LIMIT}")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"0 to {MAX_OFFSET:,}")]
Range = Annotated[
    DateRange, Query(alias="dateRange", description="By the time decisions were recorded")
]


def decision_filters(
    agent_id: AgentId = None,
    session_id: SessionId = None,
    start_date: Annotated[
        str | None,
        Query(
            alias="startDate",
            max_length=MAX_DATE_CHARS,
            description=f"Bar time from (ISO date or date-time, {DATE_BOUNDS})",
        ),
    ] = None,
    end_date: Annotated[
        str | None,
        Query(
            alias="endDate",
            max_length=MAX_DATE_CHARS,
            description=f"Bar time until (a bare date includes that day; {DATE_BOUNDS})",
        ),
    ] = None,
    action: Annotated[Action | None, Query()] = None,
    symbol: Annotated[
        str | None, Query(description="Decisions that ordered or read this symbol")
    ] = None,
) -> Filters:
    """The filters shared by the decisions list and search."""
    return Filters(agent_id, session_id, start_date, end_date, action, symbol)


FiltersDep = Annotated[Filters, Depends(decision_filters)]


@router.get("/decisions", responses=errors(400, 401, 403, 404))
def list_decisions(
    service: Service, user: CurrentUser, filters: FiltersDep, limit: Limit = 50, offset: Offset = 0
) -> DecisionList:
    """Your agents' decisions, newest bar first, filtered, with the total that match.

    Without ``agentId`` or ``sessionId`` every one of your agents is searched.
    """
    return service.decisions(user, filters, limit=limit, offset=offset)


@router.get("/decisions/{decision_id}", responses=errors(401, 403, 404))
def get_decision(service: Service, user: CurrentUser, decision_id: str) -> DecisionDetail:
    """One decision with the executions of its orders and the trades it opened or closed."""
    return service.decision(user, decision_id)


@router.get("/analytics", responses=errors(400, 401, 403, 404))
def get_analytics(
    service: Service,
    user: CurrentUser,
    agent_id: Annotated[str, Query(alias="agentId", description="One of your agents")],
    session_id: SessionId = None,
    date_range: Range = DateRange.ALL,
) -> Analytics:
    """Action counts, confidence distribution and calibration, trade outcomes, reads, daily."""
    return service.analytics(user, agent_id, session_id, date_range)


@router.get("/compare", responses=errors(400, 401, 403, 404))
def compare_agents(
    service: Service,
    user: CurrentUser,
    agent_ids: Annotated[
        str,
        Query(
            alias="agentIds",
            min_length=1,
            description="Comma separated, up to 10 of your agents",
        ),
    ],
    date_range: Range = DateRange.ALL,
) -> Comparison:
    """The analytics of several of your agents side by side, in the order given."""
    return service.compare(user, agent_ids, date_range)


@router.get("/search", responses=errors(400, 401, 403, 404))
def search_reasoning(
    service: Service,
    user: CurrentUser,
    q: Annotated[str, Query(min_length=1, max_length=200, description="Words to look for")],
    filters: FiltersDep,
    limit: Limit = 50,
    offset: Offset = 0,
) -> SearchResults:
    """Full-text search in the agents' reasoning, best match first.

    Words match as prefixes, case-insensitively. Score: the sum over the query's words of
    ``tf / (tf + 1)`` (``tf``: how many words of the reasoning start with it); ties newest first.
    """
    return service.search(user, q, filters, limit=limit, offset=offset)


@router.get(
    "/export/{agent_id}",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The records, streamed",
            "content": {
                "application/vnd.apache.parquet": {},
                "text/csv": {},
                "application/x-ndjson": {},
            },
        },
        **errors(400, 401, 403, 404),
    },
)
def export_records(
    service: Service,
    user: CurrentUser,
    agent_id: str,
    session_id: SessionId = None,
    format: Annotated[ExportFormat, Query(description="parquet, csv or jsonl")] = (
        ExportFormat.PARQUET
    ),
    records: Annotated[RecordKind, Query(description="Which records")] = RecordKind.DECISIONS,
) -> StreamingResponse:
    """Stream an agent's records (one session or all) as Parquet, CSV or JSON Lines."""
    return streamed(service.export(user, agent_id, session_id, format, records))


def streamed(export: Export) -> StreamingResponse:
    """An export as a download (the API's and the web page's)."""
    return StreamingResponse(
        export.chunks,
        media_type=export.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )
