"""OIDC bearer tokens: RS256/ES256 JWTs checked against the issuer's JWKS (joserfc).

The keys are fetched on first use (from ``FARM_OIDC_JWKS_URL``, or the ``jwks_uri`` of the
issuer's ``/.well-known/openid-configuration``), cached, and fetched again when a token names
a ``kid`` the cache does not hold (key rotation), at most once per ``refresh_s``: a flood of
tokens with made-up ``kid`` values cannot hammer the issuer. When the keys cannot be fetched
(connection refused, timeout, an error status, a malformed answer) a token cannot be judged
either way: ``verify`` raises ``IssuerUnreachable`` (503 with ``Retry-After``), never "invalid".
Calls block (plain HTTP): the gateway runs them in a worker thread.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

log = logging.getLogger("farm.users.oidc")

ALGORITHMS = ("RS256", "ES256")
FETCH_TIMEOUT_S = 5.0
LEEWAY_S = 30
RETRY_UNREACHABLE_S = 5.0  # the most time between two fetches after a failed one


class IssuerUnreachable(Exception):
    """The issuer's keys cannot be fetched now; ``retry_after_s`` until the next attempt."""

    def __init__(self, issuer: str, reason: str, retry_after_s: int) -> None:
        super().__init__(f"cannot fetch the signing keys of the OIDC issuer {issuer}: {reason}")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Identity:
    """Who a verified token speaks for: ``(issuer, subject)`` is the identity."""

    issuer: str
    subject: str
    claims: dict[str, Any]


class OidcVerifier:
    """Verifies ID tokens of one issuer for one audience."""

    def __init__(
        self, issuer: str, audience: str, jwks_url: str | None = None, *, refresh_s: float = 60.0
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self._jwks_url = jwks_url
        self._refresh_s = refresh_s
        self._keys: KeySet | None = None
        self._fetched_at = -float("inf")
        self._failure: str | None = None  # why the last fetch failed (None: it worked)
        self._lock = threading.Lock()
        self.fetches = 0  # JWKS downloads so far (tests and /metrics read it)

    def verify(self, token: str) -> Identity | None:
        """The identity of a valid token, or None (bad signature, claims or an unknown key);
        raises ``IssuerUnreachable`` when the keys the token needs cannot be fetched."""
        try:
            header = jws.extract_compact(token.encode()).protected
        except (JoseError, ValueError):
            return None
        kid, alg = header.get("kid"), header.get("alg")
        if alg not in ALGORITHMS or not isinstance(kid, str):
            return None
        keys = self._keys_with(kid)
        if keys is None:
            return None
        try:
            decoded = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            JWTClaimsRegistry(
                leeway=LEEWAY_S,
                iss={"essential": True, "value": self.issuer},
                aud={"essential": True, "value": self.audience},
                exp={"essential": True},
                sub={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError):
            return None
        subject = decoded.claims["sub"]
        if not isinstance(subject, str) or not subject:
            return None
        return Identity(self.issuer, subject, dict(decoded.claims))

    def _keys_with(self, kid: str) -> KeySet | None:
        """The cached key set if it holds ``kid``; else a fresh one, fetched at most once per
        ``refresh_s`` (or ``RETRY_UNREACHABLE_S`` after a failed fetch). None when the key is
        still unknown; ``IssuerUnreachable`` while the keys cannot be fetched."""
        with self._lock:
            if self._keys is not None and _has(self._keys, kid):
                return self._keys
            interval = self._refresh_s
            if self._failure is not None:
                interval = min(interval, RETRY_UNREACHABLE_S)
            wait = self._fetched_at + interval - time.monotonic()
            if wait > 0:
                if self._failure is not None:
                    raise IssuerUnreachable(self.issuer, self._failure, math.ceil(wait))
                return None
            self._fetched_at = time.monotonic()
            try:
                self._keys = self._fetch()
            except (httpx.HTTPError, JoseError, ValueError, KeyError, TypeError) as exc:
                self._failure = _reason(exc)
                log.warning("cannot fetch the OIDC keys of %s: %s", self.issuer, self._failure)
                retry = math.ceil(min(self._refresh_s, RETRY_UNREACHABLE_S))
                raise IssuerUnreachable(self.issuer, self._failure, max(retry, 1)) from exc
            self._failure = None
            return self._keys if _has(self._keys, kid) else None

    def _fetch(self) -> KeySet:
        self.fetches += 1
        with httpx.Client(timeout=FETCH_TIMEOUT_S) as http:
            if self._jwks_url is None:
                discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                response = http.get(discovery)
                response.raise_for_status()
                self._jwks_url = str(response.json()["jwks_uri"])
            response = http.get(self._jwks_url)
            response.raise_for_status()
            keys = [
                key
                for key in response.json()["keys"]
                if key.get("kty") in ("RSA", "EC") and key.get("use", "sig") == "sig"
            ]
            return KeySet.import_key_set({"keys": keys})


def _reason(exc: Exception) -> str:
    """A short account of a failed fetch, for the caller and the log."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.url} answered {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException):
        return f"{exc.request.url} timed out"
    if isinstance(exc, httpx.RequestError):
        return f"{exc.request.url} is unreachable ({exc})"
    return f"the keys are malformed ({type(exc).__name__}: {exc})"


def _has(keys: KeySet, kid: str) -> bool:
    return any(key.kid == kid for key in keys.keys)


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer token has the shape of a compact JWS (three dot-separated parts)."""
    return token.count(".") == 2
