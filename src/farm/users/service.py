"""Create users, issue API tokens (shown once, stored hashed) and resolve a token to its user."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from farm.errors import Conflict, IdentityProviderUnavailable, InvalidInput, NotFound
from farm.storage.db import Database
from farm.storage.models import ApiToken, OidcIdentity, User
from farm.users.oidc import Identity, IssuerUnreachable, OidcVerifier, looks_like_jwt

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


def reissue_token(session: Session, name: str, *, revoke_others: bool) -> tuple[User, str, int]:
    """A new token for the user called ``name``; with ``revoke_others`` every older token of
    that user stops working. Returns the user, the token in clear and how many were revoked."""
    user = user_named(session, name)
    revoked = revoke_tokens(session, user) if revoke_others else 0
    return user, issue_token(session, user), revoked


def revoke_tokens(session: Session, user: User) -> int:
    """Revoke every API token of ``user``; how many there were."""
    result = session.execute(delete(ApiToken).where(ApiToken.user_id == user.id))
    return int(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for DELETE


def user_named(session: Session, name: str) -> User:
    """The user called ``name`` (NotFound otherwise)."""
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name!r}; create it with `farm users create {name}`")
    return user


def user_for_identity(session: Session, identity: Identity) -> User:
    """The user of an OIDC identity, created on its first sign-in (named after its e-mail or
    subject, made unique with a digest of issuer and subject)."""
    found = _identified(session, identity)
    if found is not None:
        return found
    digest = hashlib.sha256(f"{identity.issuer}\n{identity.subject}".encode()).hexdigest()[:10]
    hint = str(identity.claims.get("email") or identity.subject).split("@")[0]
    base = re.sub(r"[^A-Za-z0-9_.-]", "-", hint)[:40].strip("-_.") or "user"
    user = User(id=str(uuid.uuid4()), name=f"{base}-{digest}")
    try:
        with session.begin_nested():  # a concurrent first sign-in may win the race
            session.add(user)
            session.flush()
            session.add(
                OidcIdentity(issuer=identity.issuer, subject=identity.subject, user_id=user.id)
            )
            session.flush()
    except IntegrityError:
        found = _identified(session, identity)
        if found is None:
            raise
        return found
    return user


def _identified(session: Session, identity: Identity) -> User | None:
    return session.scalar(
        select(User)
        .join(OidcIdentity, OidcIdentity.user_id == User.id)
        .where(OidcIdentity.issuer == identity.issuer, OidcIdentity.subject == identity.subject)
    )


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


def user_for_bearer(db: Database, oidc: OidcVerifier | None, token: str) -> User | None:
    """The user of an API token or, when OIDC is configured (``oidc``), of a valid ID token
    (created on its first sign-in); None for anything else. Raises
    ``IdentityProviderUnavailable`` (503) when the issuer's keys cannot be fetched. Blocking:
    call it off the loop."""
    if oidc is not None and looks_like_jwt(token):
        try:
            identity = oidc.verify(token)
        except IssuerUnreachable as exc:
            raise IdentityProviderUnavailable(str(exc), exc.retry_after_s) from None
        if identity is None:
            return None
        with db.transaction() as session:
            return user_for_identity(session, identity)
    with db.transaction() as session:
        return user_for_token(session, token)
