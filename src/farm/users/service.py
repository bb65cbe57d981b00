"""Create users, issue API tokens (shown once, stored hashed) and resolve a token to its user."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from farm.errors import Conflict, InvalidInput
from farm.storage.models import ApiToken, User

TOKEN_PREFIX = "farm_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_token(token: str) -> str:
    """The stored form of a token (tokens are 256-bit random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, name: str) -> tuple[User, str]:
    """Create a user and its first token; returns the user and the token in clear (once)."""
    if not _NAME.match(name):
        raise InvalidInput("user name must be 1-64 letters, digits, '_', '.' or '-'")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(id=str(uuid.uuid4()), name=name)
    session.add(user)
    session.flush()
    return user, issue_token(session, user)


def issue_token(session: Session, user: User) -> str:
    """A new token for ``user``; only its hash is kept."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(token_hash=hash_token(token), user_id=user.id))
    return token


def user_for_token(session: Session, token: str) -> User | None:
    """The user owning ``token``, or None."""
    return session.scalar(
        select(User)
        .join(ApiToken, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hash_token(token))
    )


def count_users(session: Session) -> int:
    """How many users exist."""
    return session.scalar(select(func.count()).select_from(User)) or 0
