"""Database engine, sessions (one transaction per unit of work) and migrations."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, false, text, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
#: Set in ``session.info`` by a unit of work that wrote outbox events (see farm.outbox).
WROTE_EVENTS = "farm.wrote_events"


class Database:
    """An engine and its session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = _create_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._on_events: list[Callable[[], None]] = []

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises.

        After a commit that wrote outbox events, the :meth:`on_events` hooks run (the relay).
        """
        with self._sessions.begin() as session:
            yield session
        if session.info.get(WROTE_EVENTS):
            for hook in self._on_events:
                hook()

    def on_events(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` after every commit that wrote outbox events."""
        self._on_events.append(hook)

    def migrate(self) -> None:
        """Apply every Alembic migration that is not applied yet."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def sqlite_write_lock(session: Session, column: InstrumentedAttribute[Any]) -> None:
    """On SQLite, take the database's write lock now, for the rest of the transaction: a write
    statement takes it even if it changes nothing (``column``'s table is left as it is), and
    reads that follow see every committed write, so a claim read-then-update cannot race.
    Nothing on PostgreSQL (row locks do that job there)."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(column.class_).where(false()).values({column.key: column}))


def _create_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
