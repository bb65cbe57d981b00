"""HTTP routes of the agents service."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile, status

from farm.agents.schemas import (
    AgentList,
    AgentOut,
    AgentStatus,
    DeleteResponse,
    DuplicateAgent,
    Package,
    RuntimeInfo,
    SubmitResponse,
)
from farm.agents.service import Submission
from farm.deps import ContextDep, CurrentUser
from farm.sandbox.packages import installed_packages, python_version
from farm.schemas import PageNumber, PageSize, errors

router = APIRouter(prefix="/api/agents", tags=["agents"])
runtime_router = APIRouter(tags=["agents"])


@runtime_router.get("/api/runtime")
def runtime() -> RuntimeInfo:
    """The sandbox runtime agents run on (public): its Python and the packages an agent can
    import, with their versions (the standard library too)."""
    return RuntimeInfo(
        python=python_version(),
        packages=[Package(name=n, version=v) for n, v in installed_packages().items()],
    )


@router.post(
    "/submit",
    status_code=status.HTTP_201_CREATED,
    responses={
        **errors(400, 401, 413),
        409: {"model": DuplicateAgent, "description": "You already submitted this exact code"},
    },
)
async def submit_agent(
    context: ContextDep,
    user: CurrentUser,
    file: Annotated[UploadFile, File(description="The agent's .py file (UTF-8, at most 1 MiB)")],
    agent_name: Annotated[
        str, Form(alias="agentName", description="1 to 100 printable characters")
    ] = "",
    description: Annotated[
        str, Form(description="At most 500 printable characters (line breaks allowed)")
    ] = "",
    tags: Annotated[
        str, Form(description="Comma separated, at most 10 of 32 printable chars")
    ] = "",
) -> SubmitResponse:
    """Submit an agent: one Python file defining exactly one ``backtrader.Strategy``.

    The file is parsed (never run) in a separate process with a time and memory cap; a file
    too complex to check within them is refused (400)."""
    data = await file.read(context.settings.max_agent_bytes + 1)
    submission = Submission(agent_name, description, tags, file.filename or "", data)
    agent_id = await context.agents.submit(user, submission)
    return SubmitResponse(success=True, agent_id=agent_id, message="agent submitted")


@router.get("/list", responses=errors(400, 401))
def list_agents(
    context: ContextDep,
    user: CurrentUser,
    page: PageNumber = 1,
    limit: PageSize = 20,
    status: Literal["active", "paper_trading"] | None = None,
) -> AgentList:
    """Your agents, newest first; deleted agents never appear."""
    chosen = None if status is None else AgentStatus(status)
    return context.agents.list(user, page=page, limit=limit, status=chosen)


@router.get("/{agent_id}", responses=errors(401, 403, 404))
def get_agent(
    context: ContextDep,
    user: CurrentUser,
    agent_id: str,
    include: Literal["source"] | None = None,
) -> AgentOut:
    """One of your agents; ``?include=source`` adds its code."""
    return context.agents.show(user, agent_id, include_source=include == "source")


@router.delete("/{agent_id}", responses=errors(400, 401, 403, 404))
def delete_agent(context: ContextDep, user: CurrentUser, agent_id: str) -> DeleteResponse:
    """Soft-delete one of your agents (refused while it is paper trading)."""
    context.agents.delete(user, agent_id)
    return DeleteResponse(success=True, agent_id=agent_id, message="agent deleted")
