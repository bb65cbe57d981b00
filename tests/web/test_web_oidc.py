"""Signing in to the web app with an OIDC ID token when FARM_OIDC_ISSUER is set (the keys are
served over real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import RSAKey
from web_support import csrf_of

from farm.app import create_app
from farm.config import Settings
from support import free_port

KEY = RSAKey.generate_key(2048, parameters={"kid": "web-1"})
ISSUER = "https://id.example.test"
AUDIENCE = "farm-web"


@pytest.fixture
def jwks_url() -> Iterator[str]:
    body = json.dumps({"keys": [KEY.as_dict(private=False)]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    finally:
        server.shutdown()
        server.server_close()


def id_token(**claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "s-1", "email": "ann@example.test"}
    body.update({"iat": now, "exp": now + 300, **claims})
    return jwt.encode({"alg": "RS256", "kid": KEY.kid}, body, KEY)


def test_an_id_token_signs_in_and_a_forged_one_does_not(tmp_path: Path, jwks_url: str) -> None:
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=jwks_url,
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        form = client.get("/signin")
        assert "API token or ID token" in form.text
        assert ISSUER in form.text
        csrf = csrf_of(form.text)
        wrong = client.post("/signin", data={"token": id_token(aud="other"), "csrf": csrf})
        assert wrong.status_code == 401
        signed = client.post("/signin", data={"token": id_token(), "csrf": csrf})
        assert signed.status_code == 303
        agents = client.get("/agents")
        assert agents.status_code == 200
        assert "Sign out ann-" in agents.text  # the user made on the first sign-in


def test_an_unreachable_issuer_is_a_503_page_not_a_failed_sign_in(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        oidc_issuer=ISSUER,
        oidc_audience=AUDIENCE,
        oidc_jwks_url=f"http://127.0.0.1:{free_port()}/jwks",  # nobody listens
    )
    with TestClient(create_app(settings), follow_redirects=False) as client:
        csrf = csrf_of(client.get("/signin").text)
        response = client.post("/signin", data={"token": id_token(), "csrf": csrf})
        assert response.status_code == 503
        assert "cannot fetch the signing keys" in response.text
        assert "Retry-After" in response.headers
