"""Helpers of the web page tests: a form's CSRF token, signing in and uploading an agent as a
browser does."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


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


def upload(client: TestClient, code: bytes, name: str) -> str:
    """Upload an agent through the form as ``client``'s user; the URL of its page."""
    csrf = csrf_of(client.get("/agents").text)
    response = client.post(
        "/agents", data={"name": name, "csrf": csrf}, files={"file": ("agent.py", code)}
    )
    assert response.status_code == 303, response.text
    return str(response.headers["location"])
