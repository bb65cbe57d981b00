"""FMEL fixtures: users with tokens and agents in the database, stores written by the recorder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fmel_helpers import new_id, write_old, write_small

from farm.context import Context
from farm.storage.models import Agent
from farm.users.service import create_user


@dataclass(frozen=True)
class Account:
    """A user and the Authorization header carrying its token."""

    user_id: str
    headers: dict[str, str]


MakeAccount = Callable[[str], Account]
MakeAgent = Callable[[Account], str]


@pytest.fixture
def make_account(context: Context) -> MakeAccount:
    def make(name: str) -> Account:
        with context.db.transaction() as session:
            user, token = create_user(session, name)
        return Account(user.id, {"Authorization": f"Bearer {token}"})

    return make


@pytest.fixture
def make_agent(context: Context) -> MakeAgent:
    def make(owner: Account) -> str:
        agent_id = new_id()
        with context.db.transaction() as session:
            session.add(
                Agent(
                    id=agent_id,
                    user_id=owner.user_id,
                    name=f"agent {agent_id[:8]}",
                    strategy_class="Strategy",
                    code_sha256=agent_id.replace("-", "").ljust(64, "0"),
                    code_bytes=1,
                    artifact_key=f"agents/{owner.user_id}/{agent_id}.py",
                )
            )
        return agent_id

    return make


@dataclass(frozen=True)
class World:
    alice: Account
    bob: Account
    agent: str  # alice's: sessions `small` (8 decisions) and `old` (3)
    other: str  # alice's second agent: one `small` session
    bobs: str  # bob's agent: one `small` session
    small: str
    old: str


@pytest.fixture
def world(context: Context, make_account: MakeAccount, make_agent: MakeAgent) -> World:
    alice, bob = make_account("alice"), make_account("bob")
    agent, other, bobs = make_agent(alice), make_agent(alice), make_agent(bob)
    small, old = new_id(), new_id()
    root = context.settings.fmel_dir
    write_small(root, agent, small, alice.user_id)
    write_old(root, agent, old, alice.user_id)
    write_small(root, other, new_id(), alice.user_id)
    write_small(root, bobs, new_id(), bob.user_id)
    return World(alice, bob, agent, other, bobs, small, old)
