"""FMEL fixtures: users with tokens and agents in the database, stores written by the recorder."""

from __future__ import annotations

import pytest
from fmel_helpers import (
    Account,
    AddSession,
    MakeAccount,
    MakeAgent,
    Rows,
    World,
    new_id,
    write_old,
    write_small,
)

from farm.context import Context
from farm.storage.models import BacktestSession
from farm.users.service import create_user


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
        return Rows(context).agent(owner.user_id)

    return make


@pytest.fixture
def add_session(context: Context) -> AddSession:
    """Records a finished backtest of the owner's agent (FMEL is found through its row)."""

    def add(owner: Account, agent_id: str, session_id: str) -> None:
        with context.db.transaction() as session:
            session.add(
                BacktestSession(
                    id=session_id,
                    agent_id=agent_id,
                    user_id=owner.user_id,
                    kind="custom",
                    status="completed",
                    params={},
                )
            )

    return add


@pytest.fixture
def world(
    context: Context, make_account: MakeAccount, make_agent: MakeAgent, add_session: AddSession
) -> World:
    alice, bob = make_account("alice"), make_account("bob")
    agent, other, bobs = make_agent(alice), make_agent(alice), make_agent(bob)
    small, old = new_id(), new_id()
    root = context.settings.fmel_dir
    for owner, agent_id, session_id, write in [
        (alice, agent, small, write_small),
        (alice, agent, old, write_old),
        (alice, other, new_id(), write_small),
        (bob, bobs, new_id(), write_small),
    ]:
        write(root, agent_id, session_id, owner.user_id)
        add_session(owner, agent_id, session_id)
    return World(alice, bob, agent, other, bobs, small, old)
