"""The platform's backends, built once per process from settings and shared by every service."""

from __future__ import annotations

from dataclasses import dataclass

from farm.agents.service import AgentService
from farm.config import Settings
from farm.events import EventBus, InProcessBus
from farm.storage.artifacts import ArtifactStore, open_artifact_store
from farm.storage.db import Database


@dataclass
class Context:
    """Everything a request or a job needs, wired for the configured deployment shape."""

    settings: Settings
    db: Database
    artifacts: ArtifactStore
    bus: EventBus
    agents: AgentService

    @classmethod
    def build(cls, settings: Settings) -> Context:
        """Wire the backends chosen by ``settings`` (nothing is connected until first use)."""
        settings.home.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        artifacts = open_artifact_store(settings.artifacts_url, settings.artifacts_dir)
        bus = InProcessBus()
        agents = AgentService(db, artifacts, bus, settings.max_agent_bytes)
        return cls(settings=settings, db=db, artifacts=artifacts, bus=bus, agents=agents)

    def close(self) -> None:
        """Release connections."""
        self.db.dispose()
