"""Errors a user can cause, each rendered as ``{error, message, timestamp}`` with its status."""

from __future__ import annotations

from typing import Any


class FarmError(Exception):
    """Base of every user-facing error; ``message`` says what to fix."""

    status_code = 400
    error = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers: dict[str, str] = {}


class InvalidInput(FarmError):
    """The request is malformed or fails validation (400)."""

    status_code = 400
    error = "invalid_input"


class Unauthorized(FarmError):
    """No valid API token (401)."""

    status_code = 401
    error = "unauthorized"


class Forbidden(FarmError):
    """The caller may not touch this resource (403)."""

    status_code = 403
    error = "forbidden"


class NotFound(FarmError):
    """The resource does not exist (404)."""

    status_code = 404
    error = "not_found"


class Conflict(FarmError):
    """The request conflicts with existing state (409)."""

    status_code = 409
    error = "conflict"


class PayloadTooLarge(FarmError):
    """The request body is over the limit (413)."""

    status_code = 413
    error = "payload_too_large"


class TooManyRequests(FarmError):
    """429: the client must wait ``retry_after_s`` seconds (sent as ``Retry-After``)."""

    status_code = 429
    error = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class RateLimited(TooManyRequests):
    """Too many requests from this user or address."""

    error = "rate_limited"


class ServiceUnavailable(FarmError):
    """A backend the request needs is not available (503)."""

    status_code = 503
    error = "service_unavailable"


class IdentityProviderUnavailable(ServiceUnavailable):
    """The OIDC issuer's keys cannot be fetched, so an ID token cannot be checked (503, with
    ``Retry-After``)."""

    error = "identity_provider_unavailable"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after_s)


class QuotaExceeded(TooManyRequests):
    """A per-user limit on queued or running work is reached."""

    error = "quota_exceeded"
