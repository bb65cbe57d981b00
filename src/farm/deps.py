"""FastAPI dependencies: the platform context and the authenticated user."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from farm.context import Context
from farm.errors import Unauthorized
from farm.storage.models import User

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token (`farm users create` / `farm users token`), or an OIDC ID token "
    "of FARM_OIDC_ISSUER when it is set",
)


def get_context(request: Request) -> Context:
    """The platform context of the running app."""
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The user whose Bearer token came with the request (looked up by ``farm.app.Gateway``);
    401 otherwise."""
    if credentials is None:
        raise Unauthorized("send an API token: Authorization: Bearer <token>")
    user: User | None = request.state.user
    if user is None:
        raise Unauthorized("the API token is not valid")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
