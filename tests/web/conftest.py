"""Fixtures for the web pages: an app over real bars, users, a browser-like signed-in client."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web_support import sign_in

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from support import user_token


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
        return user_token(web_context, name)

    return make


@pytest.fixture
def signed_in(web: TestClient, make_token: Callable[[str], str]) -> TestClient:
    """``web`` signed in as a new user ``alice``."""
    sign_in(web, make_token("alice"))
    return web
