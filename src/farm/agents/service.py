"""Agents: submit (validate, store code, record, announce), list, show, soft-delete."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, replace

import anyio
from sqlalchemy.orm import Session

from farm.agents import repository
from farm.agents.checker import AgentChecker
from farm.agents.schemas import AgentList, AgentOut, AgentStatus
from farm.agents.validation import CheckedAgent
from farm.errors import Conflict, Forbidden, InvalidInput, NotFound
from farm.events import AGENT_DELETED, AGENT_SUBMITTED
from farm.outbox import emit
from farm.schemas import Pagination
from farm.storage.artifacts import ArtifactStore
from farm.storage.db import Database
from farm.storage.models import Agent, User, utcnow

MAX_TAGS = 10
MAX_TAG_CHARS = 32
MAX_NAME_CHARS = 100
MAX_DESCRIPTION_CHARS = 500


@dataclass(frozen=True, slots=True)
class Submission:
    """A user's upload, as received."""

    name: str
    description: str
    tags: str
    filename: str
    data: bytes


class AgentService:
    """The agents service; owns agent code and metadata."""

    def __init__(
        self,
        db: Database,
        artifacts: ArtifactStore,
        checker: AgentChecker,
        max_agent_bytes: int,
    ) -> None:
        self._db = db
        self._artifacts = artifacts
        self._checker = checker
        self._max_agent_bytes = max_agent_bytes

    async def submit(self, user: User, submission: Submission) -> str:
        """Validate and store a new agent; returns its id. Publishes ``agent.submitted``.

        The file is parsed in a child process and stored from a worker thread: nothing the
        user sent is parsed on the event loop."""
        name = submission.name.strip()
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidInput(f"agentName must be 1 to {MAX_NAME_CHARS} characters")
        check_printable("agentName", name)
        description = submission.description.replace("\r\n", "\n")  # as browsers send them
        if len(description) > MAX_DESCRIPTION_CHARS:
            raise InvalidInput(f"description must be at most {MAX_DESCRIPTION_CHARS} characters")
        check_printable("description", description, newlines=True)
        tags = parse_tags(submission.tags)
        if not submission.filename.endswith(".py"):
            raise InvalidInput("file must be a Python file ending in .py")
        size = len(submission.data)
        if size > self._max_agent_bytes:
            raise InvalidInput(
                f"the agent file is {size} bytes; the limit is {self._max_agent_bytes} bytes"
            )
        agent = await self._checker.check(submission.data)
        checked = replace(submission, name=name, description=description)
        return await anyio.to_thread.run_sync(self._store, user, checked, tags, agent)

    def _store(
        self, user: User, submission: Submission, tags: list[str], agent: CheckedAgent
    ) -> str:
        sha256 = hashlib.sha256(submission.data).hexdigest()
        agent_id = str(uuid.uuid4())
        key = f"agents/{user.id}/{agent_id}.py"
        with self._db.transaction() as session:
            duplicate = repository.find_live_duplicate(session, user.id, sha256)
            if duplicate is not None:
                raise Conflict(
                    f"you already submitted this exact code as agent {duplicate.id}",
                    existingAgentId=duplicate.id,
                )
            self._artifacts.put(key, submission.data)
            session.add(
                Agent(
                    id=agent_id,
                    user_id=user.id,
                    name=submission.name,
                    description=submission.description,
                    tags=",".join(tags),
                    strategy_class=agent.strategy_class,
                    declared_params=agent.params,
                    code_sha256=sha256,
                    code_bytes=len(submission.data),
                    artifact_key=key,
                    status=AgentStatus.ACTIVE,
                )
            )
            emit(session, AGENT_SUBMITTED, {"agentId": agent_id, "userId": user.id})
        return agent_id

    def list(self, user: User, *, page: int, limit: int, status: AgentStatus | None) -> AgentList:
        """A page of the user's agents, newest first, with the real total."""
        if status is AgentStatus.DELETED:
            raise InvalidInput("status must be one of: active, paper_trading")
        with self._db.transaction() as session:
            rows, total = repository.list_for_user(
                session, user.id, status=status, offset=(page - 1) * limit, limit=limit
            )
            agents = [_out(agent, user.name) for agent in rows]
        return AgentList(agents=agents, pagination=Pagination.of(page, limit, total))

    def show(self, user: User, agent_id: str, *, include_source: bool) -> AgentOut:
        """One agent of the user's, optionally with its source code."""
        with self._db.transaction() as session:
            agent = owned_agent(session, user, agent_id)
            out = _out(agent, user.name)
        if include_source:
            out.source = self._artifacts.get(agent.artifact_key).decode("utf-8")
        return out

    def delete(self, user: User, agent_id: str) -> None:
        """Soft-delete an agent (refused while it paper trades). Publishes ``agent.deleted``."""
        with self._db.transaction() as session:
            agent = owned_agent(session, user, agent_id)
            if agent.status == AgentStatus.PAPER_TRADING:
                raise InvalidInput("stop the agent's paper trading before deleting it")
            agent.status = AgentStatus.DELETED
            agent.deleted_at = utcnow()
            emit(session, AGENT_DELETED, {"agentId": agent_id, "userId": user.id})


def owned_agent(session: Session, user: User, agent_id: str) -> Agent:
    """The live agent ``agent_id`` if ``user`` owns it: 404 if none, 403 if someone else's."""
    agent = repository.get(session, agent_id)
    if agent is None or agent.status == AgentStatus.DELETED:
        raise NotFound(f"no agent with id {agent_id}")
    if agent.user_id != user.id:
        raise Forbidden("this agent belongs to another user")
    return agent


def parse_tags(raw: str) -> list[str]:
    """Comma-separated tags: trimmed, de-duplicated, at most 10 of at most 32 printable
    characters."""
    tags = list(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    if len(tags) > MAX_TAGS:
        raise InvalidInput(f"at most {MAX_TAGS} tags are allowed, got {len(tags)}")
    long = [t for t in tags if len(t) > MAX_TAG_CHARS]
    if long:
        raise InvalidInput(f"tags must be at most {MAX_TAG_CHARS} characters: {long[0]!r}")
    for tag in tags:
        check_printable("tags", tag)
    return tags


def check_printable(field: str, text: str, *, newlines: bool = False) -> None:
    """Refuse control characters, NUL, bidirectional overrides and other invisible formatting
    (``str.isprintable``); ``newlines`` allows line breaks (descriptions)."""
    bad = next((c for c in text if not c.isprintable() and not (newlines and c == "\n")), None)
    if bad is not None:
        raise InvalidInput(
            f"{field} must be printable text; it contains U+{ord(bad):04X} at position "
            f"{text.index(bad)} (control characters and invisible formatting are not allowed)"
        )


def _out(agent: Agent, owner: str) -> AgentOut:
    return AgentOut(
        agent_id=agent.id,
        agent_name=agent.name,
        description=agent.description,
        tags=[t for t in agent.tags.split(",") if t],
        status=AgentStatus(agent.status),
        strategy_class=agent.strategy_class,
        declared_params=agent.declared_params,
        code_sha256=agent.code_sha256,
        code_bytes=agent.code_bytes,
        owner=owner,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
    )
