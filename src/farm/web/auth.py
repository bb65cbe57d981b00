"""Who is browsing: the session cookie, CSRF tokens on every form, sign-in rate limiting.

The session cookie holds the token the user signed in with (an API token, or an OIDC ID
token when ``FARM_OIDC_ISSUER`` is set), HttpOnly, SameSite=Lax and Secure over HTTPS; every
page resolves it exactly as the gateway resolves a Bearer token. Forms carry a CSRF token
that must equal the ``farm_csrf`` cookie (double submit): a page of another site can neither
read that cookie nor set it, so it cannot forge a form post.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

import anyio
from fastapi import Depends, Form, Request, Response

from farm.context import Context
from farm.deps import get_context
from farm.errors import FarmError, Forbidden, RateLimited
from farm.ratelimit import RateLimits
from farm.storage.models import User
from farm.users.oidc import OidcVerifier
from farm.users.service import user_for_bearer

SESSION_COOKIE = "farm_session"
CSRF_COOKIE = "farm_csrf"
CSRF_FIELD = "csrf"
SESSION_MAX_AGE_S = 7 * 24 * 3600

Csrf = Annotated[str | None, Form(alias=CSRF_FIELD)]
"""A form's CSRF token field (checked by :func:`check_csrf`)."""


class SignInRequired(FarmError):
    """The page needs a signed-in user (answered with a redirect to the sign-in page)."""

    status_code = 401
    error = "unauthorized"


class CsrfRejected(Forbidden):
    """A form came without this browser's CSRF token (403)."""


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def csrf_token(request: Request) -> str:
    """The CSRF token of this browser (its ``farm_csrf`` cookie, or a new one that
    :func:`keep_csrf_cookie` sets on the answer)."""
    token = request.cookies.get(CSRF_COOKIE)
    if not token or len(token) > 100:
        token = getattr(request.state, "new_csrf", None) or secrets.token_urlsafe(32)
        request.state.new_csrf = token
    return token


def keep_csrf_cookie(request: Request, response: Response) -> None:
    """Set the CSRF cookie on ``response`` when this request made a new token."""
    token = getattr(request.state, "new_csrf", None)
    if token:
        response.set_cookie(
            CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request)
        )


def check_csrf(request: Request, sent: str | None) -> None:
    """Refuse (403) a form whose CSRF token is missing or is not this browser's."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfRejected(
            "the form's security token is missing or stale; reload the page and retry"
        )


def sign_in(request: Request, response: Response, token: str) -> None:
    """Remember the signed-in ``token`` in the session cookie."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_MAX_AGE_S,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def sign_out(request: Request, response: Response) -> None:
    """Forget the session cookie."""
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="lax", secure=_secure(request))


async def resolve(request: Request, token: str) -> User | None:
    """The user of ``token`` (API or ID token), looked up off the event loop; 503 when an ID
    token's issuer cannot be reached (as the gateway answers)."""
    context: Context = get_context(request)
    oidc: OidcVerifier | None = request.app.state.oidc
    return await anyio.to_thread.run_sync(user_for_bearer, context.db, oidc, token)


async def check_sign_in_rate(request: Request, failed: bool) -> None:
    """Count a failed sign-in against the address (as the gateway counts invalid tokens) and
    refuse (429) an address over the limit."""
    limits: RateLimits = request.app.state.rate_limits
    address = request.client.host if request.client else "unknown"
    if failed:
        await limits.hit(limits.auth_failures, "auth", address)
    wait = await limits.blocked(limits.auth_failures, "auth", address)
    if wait is not None:
        raise RateLimited(f"too many invalid tokens from your address; retry in {wait} s", wait)


async def optional_user(request: Request) -> User | None:
    """The signed-in user, or None (public pages)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await resolve(request, token)


async def required_user(
    user: Annotated[User | None, Depends(optional_user)],
) -> User:
    """The signed-in user; otherwise the page redirects to the sign-in page."""
    if user is None:
        raise SignInRequired("sign in to see this page")
    return user


MaybeUser = Annotated[User | None, Depends(optional_user)]
PageUser = Annotated[User, Depends(required_user)]
