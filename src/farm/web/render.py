"""Rendering pages: one Jinja2 environment (autoescaped), number filters, HTML error pages."""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape

from farm import __version__
from farm.errors import FarmError, Forbidden, InvalidInput
from farm.web import TEMPLATES_DIR
from farm.web.auth import (
    CSRF_FIELD,
    CsrfRejected,
    SignInRequired,
    csrf_token,
    keep_csrf_cookie,
)

NOTHING = "\u2013"  # an en dash: no value


def money(value: object) -> str:
    """``$1,234.56`` (``-$5.00``); a dash for nothing."""
    number = _finite(value)
    if number is None:
        return NOTHING
    sign = "-" if number < 0 else ""
    return f"{sign}${abs(number):,.2f}"


def pct(value: object, digits: int = 2) -> str:
    """A fraction as a percentage; a dash for nothing."""
    number = _finite(value)
    return NOTHING if number is None else f"{number * 100:.{digits}f}%"


def num(value: object, digits: int = 2) -> str:
    """A number with ``digits`` decimals and thousands separators; a dash for nothing."""
    number = _finite(value)
    return NOTHING if number is None else f"{number:,.{digits}f}"


def when(value: datetime | None) -> str:
    """A UTC time, to the minute (the date alone at midnight)."""
    if value is None:
        return NOTHING
    if (value.hour, value.minute, value.second) == (0, 0, 0):
        return value.strftime("%Y-%m-%d")
    return value.strftime("%Y-%m-%d %H:%M UTC")


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
    number = float(value)
    return number if math.isfinite(number) else None


def query_with(query: Mapping[str, str], name: str, value: object) -> str:
    """``query`` (a page's query string) with ``name`` set to ``value``, URL-encoded."""
    return urlencode({**query, name: str(value)})


@cache
def environment() -> Environment:
    """The templates, autoescaped: everything a user wrote is text, never markup."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, pct=pct, num=num, when=when)
    env.globals.update(version=__version__, csrf_field=CSRF_FIELD, query_with=query_with)
    return env


SECURITY_HEADERS = {
    # Scripts only from this site (no inline script runs, whatever a page contains), no
    # framing (no clickjacking of a form), forms post only here.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def page(request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
    """Render ``template`` with ``values``, the request and this browser's CSRF token."""
    html = (
        environment()
        .get_template(template)
        .render(request=request, csrf=csrf_token(request), **values)
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    keep_csrf_cookie(request, response)
    return response


def see_other(url: str) -> RedirectResponse:
    """Go to ``url`` after a form post (303: the browser follows with a GET)."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: FarmError) -> Response:
    """An error a user caused, as a page: another user's things are simply not found (404),
    signed-out visitors go to the sign-in page."""
    if isinstance(exc, SignInRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return see_other(f"/signin?{urlencode({'next': target})}")
    status, message = exc.status_code, exc.message
    if isinstance(exc, Forbidden) and not isinstance(exc, CsrfRejected):
        status, message = 404, "no such page (or it is not yours)"
    response = page(request, "error.html", status, status=status, message=message)
    response.headers.update(exc.headers)
    return response


class PageRoute(APIRoute):
    """A route answering errors a user can cause (and malformed queries and forms) with an
    HTML page rather than JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except FarmError as exc:
                return error_page(request, exc)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
                )
                return error_page(request, InvalidInput(problems or "invalid request"))

        return handle
