"""Shared API schema pieces: camelCase JSON and the error body."""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# Dates a request may name (issue 8: 0001-01-01 and 9999-12-31 overflowed into 500s).
MIN_DATE = date(1900, 1, 1)
MAX_DATE = date(2100, 12, 31)
DATE_BOUNDS = f"{MIN_DATE} to {MAX_DATE}"


class ApiModel(BaseModel):
    """Base of every API body: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 100
PageNumber = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"1 to {MAX_PAGE}")]
PageSize = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description=f"1 to {MAX_PAGE_SIZE}")]
"""The ``page`` and ``limit`` query parameters of numbered lists (bounded: a huge page number
would overflow the database's OFFSET)."""


class Pagination(ApiModel):
    """Where a page sits in the whole result."""

    page: int
    limit: int
    total: int
    pages: int

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> Pagination:
        """Page ``page`` of ``limit`` items out of ``total``."""
        return cls(page=page, limit=limit, total=total, pages=math.ceil(total / limit))


class ErrorBody(BaseModel):
    """Every error response: what went wrong and what to fix."""

    error: str
    message: str
    timestamp: datetime


def bounded_date(default: date, description: str) -> Any:
    """A date field within ``MIN_DATE``..``MAX_DATE``; the bounds are in its OpenAPI schema."""
    return Field(
        default=default,
        ge=MIN_DATE,
        le=MAX_DATE,
        description=f"{description}, {DATE_BOUNDS}",
        json_schema_extra={"formatMinimum": str(MIN_DATE), "formatMaximum": str(MAX_DATE)},
    )


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Invalid input; the message says what to fix"},
    401: {"model": ErrorBody, "description": "Missing or invalid API token"},
    403: {"model": ErrorBody, "description": "Not yours"},
    404: {"model": ErrorBody, "description": "No such resource"},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's current state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    429: {
        "model": ErrorBody,
        "description": "Too many requests, or over a quota; Retry-After says when to retry",
    },
    503: {"model": ErrorBody, "description": "A backend this needs is unavailable; says why"},
}


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI descriptions of the given error statuses."""
    return {code: ERROR_RESPONSES.get(code, {"model": ErrorBody}) for code in codes}
