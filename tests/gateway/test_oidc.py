"""OIDC ID tokens beside API tokens, checked against a JWKS served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from pydantic import ValidationError
from sqlalchemy import select

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.storage.models import OidcIdentity, User
from farm.users.oidc import Identity
from farm.users.service import user_for_identity
from support import free_port, serving

AUDIENCE = "farm-test"
RSA1 = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
RSA2 = RSAKey.generate_key(2048, parameters={"kid": "rsa-2"})
EC1 = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


@dataclass
class Issuer:
    """A tiny identity provider: openid-configuration and JWKS over real HTTP."""

    url: str = ""
    keys: list[Any] = field(default_factory=lambda: [RSA1, EC1])
    hits: dict[str, int] = field(default_factory=dict)
    delay_s: float = 0.0  # a slow issuer
    jwks_status: int = 200  # an issuer whose key endpoint fails

    def token(self, key: Any, alg: str, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300}
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode({"alg": alg, "kid": key.kid}, body, key)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            time.sleep(state.delay_s)
            if self.path == "/.well-known/openid-configuration":
                body: Any = {"issuer": state.url, "jwks_uri": f"{state.url}/jwks"}
            elif self.path == "/jwks" and state.jwks_status != 200:
                self.send_error(state.jwks_status)
                return
            elif self.path == "/jwks":
                body = {"keys": [k.as_dict(private=False) for k in state.keys]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def app(tmp_path: Path, issuer: Issuer, **overrides: Any) -> TestClient:
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        feed="off",
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
        **overrides,
    )
    return TestClient(create_app(settings))


def answer(client: TestClient, token: str) -> httpx.Response:
    return client.get("/api/agents/list", headers={"Authorization": f"Bearer {token}"})


def call(client: TestClient, token: str) -> int:
    response = client.get("/api/agents/list", headers={"Authorization": f"Bearer {token}"})
    return response.status_code


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_rs256_and_es256_tokens_sign_in_and_create_the_user_once(
    tmp_path: Path, issuer: Issuer
) -> None:
    with app(tmp_path, issuer) as client:
        assert call(client, issuer.token(RSA1, "RS256")) == 200
        assert call(client, issuer.token(EC1, "ES256")) == 200
        assert call(client, issuer.token(EC1, "ES256", sub="user-2", email="ann@x.org")) == 200
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        with context.db.transaction() as session:
            rows = session.execute(select(OidcIdentity.subject, User.name).join(User)).all()
    assert sorted(subject for subject, _ in rows) == ["user-1", "user-2"]
    assert any(name.startswith("ann-") for _, name in rows)
    # Keys came from the issuer's discovery document, fetched once.
    assert issuer.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}


def test_the_same_subject_of_two_issuers_is_two_users(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "farm", backtest_workers=0)
    context = Context.build(settings)
    try:
        context.db.migrate()
        with context.db.transaction() as session:
            a = user_for_identity(session, Identity("https://a.example", "same", {})).id
            b = user_for_identity(session, Identity("https://b.example", "same", {})).id
            again = user_for_identity(session, Identity("https://a.example", "same", {})).id
    finally:
        context.close()
    assert a != b
    assert again == a


def test_a_rotated_key_is_fetched_by_its_new_kid(tmp_path: Path, issuer: Issuer) -> None:
    with app(tmp_path, issuer, oidc_jwks_url=f"{issuer.url}/jwks", oidc_jwks_refresh_s=0.2) as c:
        assert call(c, issuer.token(RSA1, "RS256")) == 200
        issuer.keys = [RSA2]
        time.sleep(0.3)
        assert call(c, issuer.token(RSA2, "RS256")) == 200
    assert issuer.hits == {"/jwks": 2}  # the explicit JWKS URL: no discovery


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120},
        {"nbf": int(time.time()) + 600},
        {"aud": "someone-else"},
        {"iss": "https://evil.example"},
        {"sub": None},
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "no-subject"],
)
def test_tokens_with_bad_claims_are_refused(
    tmp_path: Path, issuer: Issuer, claims: dict[str, Any]
) -> None:
    with app(tmp_path, issuer) as client:
        assert call(client, issuer.token(RSA1, "RS256")) == 200
        assert call(client, issuer.token(RSA1, "RS256", **claims)) == 401


def test_unsigned_and_hmac_forged_tokens_are_refused(tmp_path: Path, issuer: Issuer) -> None:
    now = int(time.time())
    claims = {"iss": issuer.url, "aud": AUDIENCE, "sub": "user-1", "exp": now + 300}
    unsigned = f"{b64({'alg': 'none', 'kid': 'rsa-1'})}.{b64(claims)}."
    # HS256 keyed with the issuer's public key, which anyone can download.
    public = RSA1.as_pem(private=False)
    signing = f"{b64({'alg': 'HS256', 'kid': 'rsa-1'})}.{b64(claims)}"
    mac = hmac.new(public, signing.encode(), hashlib.sha256).digest()
    forged = f"{signing}.{b64(mac)}"
    with app(tmp_path, issuer) as client:
        assert call(client, issuer.token(RSA1, "RS256")) == 200
        assert call(client, unsigned) == 401
        assert call(client, forged) == 401


def test_unknown_kids_are_refused_and_fetch_the_jwks_at_most_once_per_interval(
    tmp_path: Path, issuer: Issuer
) -> None:
    stranger = RSAKey.generate_key(2048, parameters={"kid": "nobody"}).as_dict(private=True)
    with app(tmp_path, issuer, rate_limits=False) as client:
        for n in range(20):
            key = RSAKey.import_key(stranger, parameters={"kid": f"nobody-{n}"})
            assert call(client, issuer.token(key, "RS256")) == 401
    assert issuer.hits["/jwks"] == 1


def test_bad_id_tokens_count_as_failed_tokens(tmp_path: Path, issuer: Issuer) -> None:
    with app(tmp_path, issuer, rate_limit_auth_failures="3/minute") as client:
        bad = issuer.token(RSA1, "RS256", aud="someone-else")
        assert [call(client, bad) for _ in range(4)] == [401, 401, 401, 429]
        assert call(client, issuer.token(RSA1, "RS256")) == 429  # guessing earns no answers


def test_a_slow_issuer_does_not_stall_other_requests(tmp_path: Path, issuer: Issuer) -> None:
    """The keys are fetched in a worker thread: the event loop keeps answering meanwhile."""
    issuer.delay_s = 2.0
    settings = Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        feed="off",
        oidc_issuer=issuer.url,
        oidc_audience=AUDIENCE,
    )
    statuses: list[int] = []
    with serving(create_app(settings)) as url:
        headers = {"Authorization": f"Bearer {issuer.token(RSA1, 'RS256')}"}
        signing_in = threading.Thread(
            target=lambda: statuses.append(
                httpx.get(f"{url}/api/agents/list", headers=headers, timeout=30).status_code
            )
        )
        signing_in.start()
        while not issuer.hits:  # the sign-in is waiting for the issuer now
            time.sleep(0.01)
        started = time.monotonic()
        assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        waited = time.monotonic() - started
        signing_in.join(timeout=30)
    assert statuses == [200]
    assert waited < 1.0, f"/health waited {waited:.2f} s for the issuer"


def test_an_unreachable_issuer_is_503_naming_it_not_401(tmp_path: Path, issuer: Issuer) -> None:
    """Nobody listens where the keys should be: the token cannot be judged, so 503 (with
    Retry-After and the issuer's name), and no failed-token count toward a 429."""
    down = f"http://127.0.0.1:{free_port()}"
    token = issuer.token(RSA1, "RS256", iss=down)
    settings = {"rate_limit_auth_failures": "2/minute"}
    with TestClient(
        create_app(
            Settings(
                home=tmp_path / "farm",
                backtest_workers=0,
                feed="off",
                oidc_issuer=down,
                oidc_audience=AUDIENCE,
                **settings,
            )
        )
    ) as client:
        answers = [answer(client, token) for _ in range(4)]
    assert [a.status_code for a in answers] == [503, 503, 503, 503]
    body = answers[0].json()
    assert body["error"] == "identity_provider_unavailable"
    assert down in body["message"]
    assert "unreachable" in body["message"]
    assert 1 <= int(answers[0].headers["Retry-After"]) <= 5


def test_a_failing_jwks_endpoint_is_503_until_it_recovers(tmp_path: Path, issuer: Issuer) -> None:
    """The JWKS answers 500: 503 naming the issuer; once it answers again (after Retry-After),
    good tokens sign in and bad ones are 401 as before."""
    issuer.jwks_status = 500
    with app(tmp_path, issuer, oidc_jwks_refresh_s=1.0) as client:
        failed = answer(client, issuer.token(RSA1, "RS256"))
        assert failed.status_code == 503
        assert issuer.url in failed.json()["message"]
        assert "answered 500" in failed.json()["message"]
        retry_after = int(failed.headers["Retry-After"])
        assert retry_after == 1
        again = answer(client, issuer.token(RSA1, "RS256"))  # within the interval: no refetch
        assert again.status_code == 503
        assert issuer.hits["/jwks"] == 1
        issuer.jwks_status = 200
        time.sleep(retry_after)
        assert call(client, issuer.token(RSA1, "RS256")) == 200
        assert call(client, issuer.token(RSA1, "RS256", aud="someone-else")) == 401
        assert call(client, issuer.token(RSA2, "RS256")) == 401  # an unknown kid, issuer up
    assert issuer.hits["/jwks"] == 2


def test_an_issuer_without_an_audience_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="FARM_OIDC_AUDIENCE is required"):
        Settings(home=tmp_path / "farm", oidc_issuer="https://issuer.example")
