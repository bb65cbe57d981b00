"""The ASGI application: ``create_app`` mounts every service (or a chosen subset)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farm import __version__
from farm.agents.router import router as agents_router
from farm.agents.router import runtime_router
from farm.backtest.router import router as backtest_router
from farm.config import Settings
from farm.context import Context
from farm.contract import install_contract
from farm.errors import FarmError, IdentityProviderUnavailable, PayloadTooLarge, RateLimited
from farm.fmel.router import router as fmel_router
from farm.health import router as health_router
from farm.leaderboard.router import router as leaderboard_router
from farm.logs import request_id, request_id_from
from farm.marketdata.router import feed_router
from farm.marketdata.router import router as data_router
from farm.metrics import UNMATCHED, observe_request
from farm.monitoring import router as metrics_router
from farm.papertrading.router import router as accounts_router
from farm.papertrading.router import sessions_router as paper_router
from farm.ratelimit import RateLimits
from farm.schemas import errors
from farm.users.oidc import OidcVerifier
from farm.users.service import user_for_bearer
from farm.web import mount_static
from farm.web.router import router as web_router

log = logging.getLogger("farm.app")

SERVICES: dict[str, list[APIRouter]] = {
    "agents": [agents_router, runtime_router],
    "backtest": [backtest_router],
    "data": [data_router, feed_router],
    "fmel": [fmel_router],
    "leaderboard": [leaderboard_router],
    "paper-trading": [accounts_router, paper_router],
    "web": [web_router],
}


def create_app(
    settings: Settings | None = None,
    *,
    services: Collection[str] | None = None,
    context: Context | None = None,
) -> FastAPI:
    """One FastAPI app serving ``services`` (default: all of them) over one context."""
    settings = settings or (context.settings if context else Settings())
    chosen = list(SERVICES) if services is None else list(services)
    unknown = set(chosen) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown services: {sorted(unknown)}; known: {sorted(SERVICES)}")

    rate_limits = RateLimits(settings)
    oidc = _oidc(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = context or Context.build(settings)
        ctx.start()
        app.state.context = ctx
        try:
            yield
        finally:
            await rate_limits.close()
            ctx.close()

    app = FastAPI(
        title="The Farm",
        version=__version__,
        description="Submit trading agents, backtest them in a sandbox, explain every decision, "
        "rank them.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_contract(app)
    app.state.oidc = oidc  # the web pages sign in with the same tokens as the gateway
    app.state.rate_limits = rate_limits
    app.include_router(health_router)
    app.include_router(metrics_router)
    for name in chosen:
        for router in SERVICES[name]:
            app.include_router(router, responses=errors(429))
    if "web" in chosen:
        mount_static(app)
    _install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(Gateway, limits=rate_limits, oidc=oidc)
    app.add_middleware(Observer)  # outermost: every answer is counted and has a request id
    return app


def _oidc(settings: Settings) -> OidcVerifier | None:
    if settings.oidc_issuer is None or settings.oidc_audience is None:
        return None
    return OidcVerifier(
        settings.oidc_issuer,
        settings.oidc_audience,
        settings.oidc_jwks_url,
        refresh_s=settings.oidc_jwks_refresh_s,
    )


def error_response(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    """The ``{error, message, timestamp}`` body every error uses."""
    body = {"error": error, "message": message, "timestamp": datetime.now(UTC).isoformat()}
    return JSONResponse({**body, **extra}, status_code=status)


def farm_error_response(exc: FarmError) -> JSONResponse:
    """The answer to a user-facing error: its status, body and headers (``Retry-After``)."""
    response = error_response(exc.status_code, exc.error, exc.message, **exc.extra)
    response.headers.update(exc.headers)
    return response


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(FarmError)
    async def farm_error(_: Request, exc: FarmError) -> JSONResponse:
        return farm_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
        return error_response(400, "invalid_input", problems or "invalid request")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        name = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, name, str(exc.detail))
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(app, request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "an unexpected error occurred; it was logged")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """The methods the OpenAPI document gives the request's path (a literal path such as
    ``/api/agents/submit`` wins over a template such as ``/api/agents/{agent_id}``); FastAPI
    makes one route per operation, so Starlette's own ``Allow`` names only the first match's."""
    matches = [
        (template.count("{"), operations)
        for template, operations in app.openapi()["paths"].items()
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), request.url.path)
    ]
    if not matches:
        return []
    _, operations = min(matches, key=lambda m: m[0])
    return sorted(method.upper() for method in operations)


class BodySizeLimit:
    """Answer 413 to request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0
        too_large = False

        async def limited() -> Message:
            nonlocal received, too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                too_large = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replace_when_too_large(message: Message) -> None:
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                await self._reject(scope, receive, send)

        await self.app(scope, limited, replace_when_too_large)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        too_large = PayloadTooLarge(f"request body is over {self.max_bytes} bytes")
        await farm_error_response(too_large)(scope, receive, send)


class Observer:
    """Give every request an id (the caller's ``X-Request-ID`` or a new one), returned on its
    answer and carried by every log line written while it is answered, and count the answer
    in ``/metrics`` under its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(Headers(scope=scope).get("x-request-id"))
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # The template of the route that answered; none for paths no route serves and
            # for requests the gateway refused before routing (429).
            template = getattr(scope.get("route"), "path", UNMATCHED)
            observe_request(scope["method"], template, status, time.perf_counter() - started)
            request_id.reset(token)


UNLIMITED_PATHS = frozenset({"/health", "/metrics"})


class Gateway:
    """Who is calling, and whether they are over their rate (DESIGN §2, gateway concerns).

    A request with a Bearer token has the token looked up once, in a worker thread: an API
    token, or (with ``FARM_OIDC_ISSUER``) an OIDC ID token verified against the issuer's keys;
    the ``current_user`` dependency reads the result from ``request.state.user``. A valid token
    counts against its user's rate, anything else against the client address's. After too
    many invalid tokens (of either kind) from an address, every request carrying a token from
    it, valid or not, gets 429 until the window passes, so guessing earns no answers. An ID
    token whose issuer's keys cannot be fetched gets 503 (the caller is not at fault: no
    failure is counted, only the address's rate). ``/health`` and ``/metrics`` are never
    limited.
    """

    def __init__(self, app: ASGIApp, limits: RateLimits, oidc: OidcVerifier | None) -> None:
        self.app = app
        self.limits = limits
        self.oidc = oidc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        limits = self.limits
        address = scope["client"][0] if scope.get("client") else "unknown"
        token = _bearer_token(scope)
        unavailable: IdentityProviderUnavailable | None = None
        if token is None:
            wait = await limits.hit(limits.address, "address", address)
            why = f"too many requests from your address (limit: {limits.address})"
        elif wait := await limits.blocked(limits.auth_failures, "auth", address):
            why = f"too many invalid API tokens from your address (limit: {limits.auth_failures})"
        else:
            context: Context = scope["app"].state.context
            try:
                user = await anyio.to_thread.run_sync(user_for_bearer, context.db, self.oidc, token)
            except IdentityProviderUnavailable as exc:
                unavailable = exc
                user = None
            else:
                if user is None:
                    await limits.hit(limits.auth_failures, "auth", address)
            scope.setdefault("state", {})["user"] = user
            if user is None:
                wait = await limits.hit(limits.address, "address", address)
                why = f"too many requests from your address (limit: {limits.address})"
            else:
                wait = await limits.hit(limits.user, "user", user.id)
                why = f"too many requests with your API token (limit: {limits.user})"
        if wait is not None:
            await farm_error_response(RateLimited(f"{why}; retry in {wait} s", wait))(
                scope, receive, send
            )
        elif unavailable is not None:
            await farm_error_response(unavailable)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _bearer_token(scope: Scope) -> str | None:
    """The Bearer token of the request, parsed exactly as ``fastapi.security.HTTPBearer``."""
    scheme, token = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
    return token if scheme.lower() == "bearer" and token else None
