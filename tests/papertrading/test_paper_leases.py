"""Leases on paper sessions (issue 13): a runtime claims only sessions whose lease lapsed, at
most as many as it may run; one that lost a session's lease writes nothing more for it; a
stopping runtime hands its sessions back. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from paper_support import paper_agent, paper_rig
from sqlalchemy import func, select, update

from farm.config import Settings
from farm.fmel.layout import session_dir
from farm.fmel.summary import SUMMARY_NAME
from farm.leases import HOST, claim
from farm.marketdata.store import open_bar_store
from farm.papertrading.schemas import PaperStart, PaperStop
from farm.papertrading.sessions import PaperService
from farm.storage.db import Database
from farm.storage.models import (
    Agent,
    PaperAccount,
    PaperEquity,
    PaperOrder,
    PaperSession,
    User,
    utcnow,
)
from support import wait_until

ONE = Decimal(1)


def test_only_lapsed_leases_are_claimed_and_at_most_the_limit(db_settings: Settings) -> None:
    db = Database(db_settings.resolved_database_url)
    db.migrate()
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    later, earlier = utcnow() + timedelta(minutes=5), utcnow() - timedelta(seconds=1)
    leases = {  # in the order the sessions were created
        "new": (None, None),
        "expired elsewhere": ("other-host:1-4242-dddddd", earlier),
        "ended here": (f"{HOST}-{int(ended.stdout)}-bbbbbb", later),
        "live here": (f"{HOST}-{os.getpid()}-aaaaaa", later),
        "live elsewhere": ("other-host:1-4242-cccccc", later),
    }
    tokens = {}
    with db.transaction() as session:
        session.add(User(id="u", name="u"))
        session.flush()
        for n, (name, (owner, expires)) in enumerate(leases.items()):
            agent_id = paper_agent(session, "u", n)
            session.add(PaperAccount(id=name, user_id="u", name=name, initial_cash=ONE, cash=ONE))
            session.flush()
            tokens[name] = str(uuid.uuid4()) if owner else None
            session.add(
                PaperSession(
                    id=name,
                    agent_id=agent_id,
                    user_id="u",
                    account_id=name,
                    status="running" if owner else "starting",
                    symbols=["SPY"],
                    initial_cash=ONE,
                    created_at=utcnow() + timedelta(seconds=n),
                    lease_owner=owner,
                    lease_token=tokens[name],
                    lease_expires_at=expires,
                )
            )
    try:
        taken = claim(db, PaperSession, "newcomer", 30, limit=2)
        assert [lease.session_id for lease in taken] == ["new", "expired elsewhere"]
        rest = claim(db, PaperSession, "newcomer", 30, limit=10)
        assert [lease.session_id for lease in rest] == ["ended here"]
        assert claim(db, PaperSession, "newcomer", 30, limit=10) == []
        with db.transaction() as session:
            rows = {r.id: r for r in session.scalars(select(PaperSession))}
            for lease in taken + rest:
                row = rows[lease.session_id]
                assert (row.lease_owner, row.lease_token) == ("newcomer", lease.token)
                assert row.lease_expires_at is not None
                assert row.lease_expires_at > utcnow() + timedelta(seconds=20)
            for name in ("live here", "live elsewhere"):  # live leases are never touched
                assert rows[name].lease_token == tokens[name]
    finally:
        db.dispose()


@pytest.mark.sandbox
@pytest.mark.timeout(120)
def test_a_runtime_that_lost_a_sessions_lease_writes_nothing_more_for_it(
    db_settings: Settings, real_bars: Path
) -> None:
    settings = db_settings.model_copy(
        update={
            "feed": "replay",
            "feed_symbols": ["SPY"],
            "feed_replay_start": date(2024, 9, 3),
            "feed_interval_s": 0.1,
            "paper_step_timeout_s": 10.0,
            # The runtime looks at its leases only once a minute: the step fence alone must
            # keep it from writing for a session it lost.
            "paper_poll_s": 60.0,
        }
    )
    with paper_rig(settings, real_bars) as rig:
        victim, kept = (
            rig.service.start(rig.user, PaperStart(agent_id=a, symbols=["SPY"])).session_id
            for a in rig.agents
        )
        row = rig.row

        def written(session_id: str) -> tuple[Any, ...]:
            """Everything a step of the session writes."""
            with rig.db.transaction() as session:
                found = session.get(PaperSession, session_id)
                assert found is not None
                account = session.get(PaperAccount, found.account_id)
                assert account is not None
                return (
                    found.status,
                    found.bars_processed,
                    found.last_bar_time,
                    found.books,
                    Decimal(account.cash),
                    session.scalar(
                        select(func.count()).where(PaperEquity.session_id == session_id)
                    ),
                    session.scalar(select(func.count()).where(PaperOrder.session_id == session_id)),
                )

        with rig.running() as runtime:
            wait_until(
                lambda: all(row(s).bars_processed >= 3 for s in (victim, kept)), 60, "both trading"
            )
            assert {row(s).lease_owner for s in (victim, kept)} == {runtime.owner}

            # Another worker takes the session over (as once its lease had expired).
            with rig.db.transaction() as session:
                session.execute(
                    update(PaperSession)
                    .where(PaperSession.id == victim)
                    .values(
                        lease_owner="other-host:1-4242-eeeeee",
                        lease_token=str(uuid.uuid4()),
                        lease_expires_at=utcnow() + timedelta(minutes=5),
                    )
                )
            taken_over = written(victim)
            progress = row(kept).bars_processed
            wait_until(lambda: row(kept).bars_processed >= progress + 10, 30, "ten more steps")
            assert written(victim) == taken_over, "not one write after the lease was lost"
            assert victim not in runtime.sessions, "the session was dropped here"
            assert kept in runtime.sessions
        # A stopping runtime hands back the sessions it holds, and only those.
        assert row(kept).lease_owner is None
        assert row(kept).status == "running"
        assert row(victim).lease_owner == "other-host:1-4242-eeeeee"
        # Closing a session it holds writes its FMEL summary; the one it lost is its new owner's.
        summary = {
            s: session_dir(settings.fmel_dir, row(s).agent_id, s) / SUMMARY_NAME
            for s in (victim, kept)
        }
        assert summary[kept].exists()
        assert not summary[victim].exists(), "the lost session's summary was written"


def test_a_session_no_runtime_claimed_stops_at_once(db_settings: Settings) -> None:
    """Every runtime is full: a stop request on a session still waiting for one ends it
    there (its account and agent are free again); one a runtime claimed is the runtime's."""
    db = Database(db_settings.resolved_database_url)
    db.migrate()
    service = PaperService(db, open_bar_store(db_settings), db_settings)
    with db.transaction() as session:
        user = User(id="u", name="u")
        session.add(user)
        session.flush()
        agents = {}
        for n, name in enumerate(("waiting", "claimed")):
            agents[name] = paper_agent(session, "u", n)
            session.add(
                PaperAccount(
                    id=name, user_id="u", name=name, initial_cash=ONE, cash=ONE,
                    running_session_id=name,
                )
            )  # fmt: skip
            session.get_one(Agent, agents[name]).status = "paper_trading"
            session.flush()
            session.add(
                PaperSession(
                    id=name, agent_id=agents[name], user_id="u", account_id=name,
                    status="starting", symbols=["SPY"], initial_cash=ONE,
                    lease_owner="other-host:1-4242-cccccc" if name == "claimed" else None,
                    lease_token="t" if name == "claimed" else None,
                    lease_expires_at=utcnow() + timedelta(minutes=5) if name == "claimed" else None,
                )
            )  # fmt: skip
    try:
        with db.transaction() as session:
            user = session.get_one(User, "u")
        waiting = service.stop(user, PaperStop(agent_id=agents["waiting"]))
        claimed = service.stop(user, PaperStop(agent_id=agents["claimed"]))
        assert waiting.status == "stopped"
        assert claimed.status == "starting"  # its runtime stops it
        with db.transaction() as session:
            rows = {r.id: r for r in session.scalars(select(PaperSession))}
            assert rows["waiting"].stopped_at is not None
            assert (rows["claimed"].status, rows["claimed"].stop_requested) == ("starting", True)
            assert session.get_one(PaperAccount, "waiting").running_session_id is None
            assert session.get_one(PaperAccount, "claimed").running_session_id == "claimed"
            assert session.get_one(Agent, agents["waiting"]).status == "active"
            assert session.get_one(Agent, agents["claimed"]).status == "paper_trading"
    finally:
        db.dispose()
