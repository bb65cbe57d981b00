"""Fixtures for the web pages: an app over real bars, users, a browser-like signed-in client."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.users.service import create_user

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def web(tmp_path: Path, real_bars: Path) -> Iterator[TestClient]:
    """The whole app (pages and API) over the ten standard symbols; no backtest workers."""
    home = tmp_path / "farm"
    shutil.copytree(real_bars, home / "bars")
    settings = Settings(home=home, backtest_workers=0)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.fixture
def web_context(web: TestClient) -> Context:
    context: Context = web.app.state.context  # type: ignore[attr-defined]
    return context


@pytest.fixture
def make_token(web_context: Context) -> Callable[[str], str]:
    """Create a user; returns its API token."""

    def make(name: str) -> str:
        with web_context.db.transaction() as session:
            _, token = create_user(session, name)
        return token

    return make


def csrf_of(html: str) -> str:
    """The CSRF token of the first form of a page."""
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, token: str) -> None:
    """Sign ``client`` in through the form, as a browser would (signing out anyone else)."""
    client.cookies.clear()
    form = client.get("/signin")
    response = client.post("/signin", data={"token": token, "csrf": csrf_of(form.text)})
    assert response.status_code == 303, response.text
    assert "farm_session" in client.cookies


@pytest.fixture
def signed_in(web: TestClient, make_token: Callable[[str], str]) -> TestClient:
    """``web`` signed in as a new user ``alice``."""
    sign_in(web, make_token("alice"))
    return web
