"""Migrations build exactly the schema the models describe, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.exc import StatementError

from farm.storage.db import MIGRATIONS, Database
from farm.storage.models import Base, PaperAccount, User


def test_the_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_migrations_go_down_and_up_again(db: Database) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    db.migrate()
    with db.transaction() as session:
        session.add(User(id="u", name="someone"))


def test_times_come_back_timezone_aware_utc(db: Database) -> None:
    paris = timezone(timedelta(hours=1))
    created = datetime(2024, 3, 1, 12, 30, tzinfo=paris)
    with db.transaction() as session:
        session.add(User(id="u", name="someone", created_at=created))
    with db.transaction() as session:
        user = session.get(User, "u")
        assert user is not None
        assert user.created_at == created
        assert user.created_at.tzinfo == UTC

    def store_naive() -> None:
        with db.transaction() as session:
            session.add(User(id="v", name="naive", created_at=datetime(2024, 3, 1)))

    with pytest.raises(StatementError, match="naive datetime"):
        store_naive()


def test_money_comes_back_exact_and_refuses_what_it_cannot_hold(db: Database) -> None:
    with db.transaction() as session:
        session.add(User(id="u", name="someone"))
    amounts = [Decimal("999999999.99"), Decimal("0.000001"), Decimal("-12.5"), Decimal("0.1")]
    with db.transaction() as session:
        for n, amount in enumerate(amounts):
            session.add(_account(f"a{n}", amount))
    with db.transaction() as session:
        for n, amount in enumerate(amounts):
            account = session.get(PaperAccount, f"a{n}")
            assert account is not None
            assert account.cash == amount
            assert isinstance(account.cash, Decimal)

    for bad, problem in [(Decimal("0.0000001"), "at most 6 decimals"), (0.1, "must be a Decimal")]:
        with pytest.raises(StatementError, match=problem), db.transaction() as session:
            session.add(_account("bad", bad))  # type: ignore[arg-type]


def _account(account_id: str, cash: Decimal) -> PaperAccount:
    return PaperAccount(
        id=account_id, user_id="u", name="n", initial_cash=cash, cash=cash, funded=Decimal(0)
    )
