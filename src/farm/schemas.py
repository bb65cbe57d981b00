"""Shared API schema pieces: camelCase JSON and the error body."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base of every API body: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class ErrorBody(BaseModel):
    """Every error response: what went wrong and what to fix."""

    error: str
    message: str
    timestamp: datetime


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"model": ErrorBody, "description": "Invalid input; the message says what to fix"},
    401: {"model": ErrorBody, "description": "Missing or invalid API token"},
    403: {"model": ErrorBody, "description": "Not yours"},
    404: {"model": ErrorBody, "description": "No such resource"},
    409: {"model": ErrorBody, "description": "Conflicts with the resource's current state"},
    413: {"model": ErrorBody, "description": "Request body too large"},
    429: {"model": ErrorBody, "description": "Over a quota; retry after Retry-After seconds"},
    503: {"model": ErrorBody, "description": "A backend this needs is unavailable; says why"},
}


def errors(*codes: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI descriptions of the given error statuses."""
    return {code: ERROR_RESPONSES.get(code, {"model": ErrorBody}) for code in codes}
