"""Agents API bodies (camelCase, as in the original contract)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from farm.schemas import ApiModel, ErrorBody, Pagination


class AgentStatus(StrEnum):
    """Where an agent is in its life."""

    ACTIVE = "active"
    PAPER_TRADING = "paper_trading"
    DELETED = "deleted"


class SubmitResponse(ApiModel):
    """Answer to a successful submission."""

    success: bool
    agent_id: str
    message: str


class AgentOut(ApiModel):
    """An agent's metadata (and its source when asked for)."""

    agent_id: str
    agent_name: str
    description: str
    tags: list[str]
    status: AgentStatus
    strategy_class: str
    declared_params: dict[str, str | None] | None = Field(
        default=None,
        description="The strategy's params and their defaults' types (null: any), as parsed "
        "at submission; null when they are not literals",
    )
    code_sha256: str
    code_bytes: int
    owner: str
    created_at: datetime
    updated_at: datetime
    source: str | None = None


class AgentList(ApiModel):
    """One page of agents, newest first."""

    agents: list[AgentOut]
    pagination: Pagination


class DeleteResponse(ApiModel):
    """Answer to a deletion."""

    success: bool
    agent_id: str
    message: str


class DuplicateAgent(ErrorBody):
    """409: the same code is already one of your live agents."""

    existingAgentId: str  # the wire name of the original contract


class Package(ApiModel):
    """One installed distribution an agent can import."""

    name: str
    version: str


class RuntimeInfo(ApiModel):
    """What agent code runs on in the sandbox (docs/agents.md): its Python and every package."""

    python: str
    packages: list[Package]
