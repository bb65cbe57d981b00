"""Signing in (API token, or OIDC ID token when configured) and out."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse

from farm.users.oidc import OidcVerifier
from farm.web.auth import (
    Csrf,
    MaybeUser,
    check_csrf,
    check_sign_in_rate,
    resolve,
    sign_in,
    sign_out,
)
from farm.web.render import PageRoute, page, see_other

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def safe_next(target: str | None, default: str = "/agents") -> str:
    """``target`` when it is a path of this site (never another host: no open redirect)."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    if "\\" in target:
        return default
    return target


def _oidc_name(request: Request) -> str | None:
    """The OIDC issuer accepted at sign-in, if any."""
    oidc: OidcVerifier | None = request.app.state.oidc
    return None if oidc is None else oidc.issuer


@router.get("/signin", response_class=HTMLResponse)
def sign_in_page(request: Request, user: MaybeUser, next: str | None = None) -> Response:
    """The sign-in form (signed-in visitors go straight on)."""
    if user is not None:
        return see_other(safe_next(next))
    return page(request, "signin.html", user=None, next=safe_next(next), oidc=_oidc_name(request))


@router.post("/signin", response_class=HTMLResponse)
async def sign_in_submit(
    request: Request,
    token: Annotated[str, Form(max_length=8192)] = "",
    next: Annotated[str, Form(max_length=2000)] = "",
    csrf: Csrf = None,
) -> Response:
    """Check the token, then set the session cookie and go on."""
    check_csrf(request, csrf)
    await check_sign_in_rate(request, failed=False)
    token = token.strip()
    user = await resolve(request, token) if token else None
    if user is None:
        await check_sign_in_rate(request, failed=True)
        return page(
            request,
            "signin.html",
            401,
            user=None,
            next=safe_next(next),
            oidc=_oidc_name(request),
            error="That token is not valid. Check it, or ask for a new one.",
        )
    response = see_other(safe_next(next))
    sign_in(request, response, token)
    return response


@router.post("/signout")
def sign_out_submit(request: Request, csrf: Csrf = None) -> Response:
    """Forget the session and go to the leaderboard."""
    check_csrf(request, csrf)
    response = see_other("/")
    sign_out(request, response)
    return response
