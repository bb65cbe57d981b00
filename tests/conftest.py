"""Shared fixtures: real data from ../shared, settings in a temporary FARM_HOME, both databases."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.marketdata.importer import import_path
from farm.marketdata.store import BarStore
from farm.sandbox.launcher import SandboxUnavailable, check_sandbox
from farm.storage.db import Database
from support import POSTGRES_URL, fresh_schema, require_backend, user_token

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    """No live feed unless a test asks for one (``Settings(feed="replay")``), and a server key,
    which the scale-out shape (Redis or PostgreSQL) needs to start (``secret_key=None`` tests
    the key generated in FARM_HOME); servers started by end-to-end tests inherit both."""
    os.environ["FARM_FEED"] = "off"
    os.environ["FARM_SECRET_KEY"] = "farm-test-server-key"


@pytest.fixture(scope="session")
def sandbox_problem() -> str | None:
    """Why the bubblewrap sandbox cannot run here (None when it can)."""
    try:
        check_sandbox(Settings(sandbox="bwrap"))
    except SandboxUnavailable as exc:
        return str(exc)
    return None


@pytest.fixture(autouse=True)
def _sandbox_for_marked_tests(request: pytest.FixtureRequest) -> None:
    """Tests marked ``sandbox`` skip without a working sandbox (and fail under CI=true)."""
    if request.node.get_closest_marker("sandbox"):
        require_backend("the bubblewrap sandbox", request.getfixturevalue("sandbox_problem"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``FARM_TEST_DATA``): real bars; never copied into the repo."""
    path = Path(os.environ.get("FARM_TEST_DATA", REPO.parent / "shared" / "data"))
    if not (path / "daily").is_dir():
        pytest.fail(f"test data not found at {path}; set FARM_TEST_DATA")
    return path


STANDARD_SYMBOLS = ["SPY", "QQQ", "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM"]


@pytest.fixture(scope="session")
def real_bars(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bar store holding the ten standard symbols, imported once per session."""
    csvs = tmp_path_factory.mktemp("csv")
    for symbol in STANDARD_SYMBOLS:
        shutil.copy(shared_data / "daily" / f"{symbol}.csv", csvs)
    root = tmp_path_factory.mktemp("bars")
    assert import_path(BarStore(root), csvs).ok
    return root


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded-default settings in a fresh FARM_HOME."""
    return Settings(home=tmp_path / "farm", sandbox_wall_s=120)


def _postgres_problem() -> str | None:
    import psycopg

    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the real PostgreSQL, dropped afterwards; the URL selects it."""

    require_backend(f"PostgreSQL at {POSTGRES_URL}", _postgres_problem())
    with fresh_schema(POSTGRES_URL, "farm_test") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on SQLite, then on the real PostgreSQL (the same tests run on both)."""
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    return Settings(home=tmp_path / "farm", database_url=url, backtest_workers=0)


@pytest.fixture
def db(db_settings: Settings) -> Iterator[Database]:
    """A migrated database, on SQLite then on PostgreSQL."""
    database = Database(db_settings.resolved_database_url)
    database.migrate()
    yield database
    database.dispose()


@pytest.fixture
def client(db_settings: Settings) -> Iterator[TestClient]:
    """Real HTTP through the ASGI app (lifespan included) on each database."""
    with TestClient(create_app(db_settings)) as test_client:
        yield test_client


@pytest.fixture
def context(client: TestClient) -> Context:
    """The running app's context."""
    ctx: Context = client.app.state.context  # type: ignore[attr-defined]
    return ctx


@pytest.fixture
def make_user(context: Context) -> Callable[[str], dict[str, str]]:
    """Create a user; returns the Authorization header carrying its token."""

    def make(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {user_token(context, name)}"}

    return make
