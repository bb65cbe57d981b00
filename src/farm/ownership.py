"""Rows a user may act on: 404 when there is none, 403 when it is someone else's."""

from __future__ import annotations

from typing import Protocol, TypeVar

from farm.errors import Forbidden, NotFound
from farm.storage.models import User


class _Owned(Protocol):
    @property
    def user_id(self) -> str: ...


OwnedT = TypeVar("OwnedT", bound=_Owned)


def owned(row: OwnedT | None, user: User, what: str, row_id: str) -> OwnedT:
    """``row`` (the ``what`` with id ``row_id``) if ``user`` owns it; :class:`NotFound` if it
    is ``None``, :class:`Forbidden` if it belongs to another user."""
    if row is None:
        raise NotFound(f"no {what} with id {row_id}")
    if row.user_id != user.id:
        raise Forbidden(f"this {what} belongs to another user")
    return row
