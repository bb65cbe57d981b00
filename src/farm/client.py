"""A small HTTP client for the Farm API, used by the CLI."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


class ApiError(Exception):
    """The server refused a request; ``message`` is the server's explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class FarmClient:
    """Calls the Farm API at ``url`` with a Bearer ``token``."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; the decoded JSON body, or ``ApiError`` with the server's message."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(
                0,
                f"cannot reach the server at {self._http.base_url} ({exc}); is it running? "
                "Set FARM_URL (or --url) to its address, e.g. the one `farm up` printed",
            ) from None
        except httpx.InvalidURL as exc:  # e.g. an id with control characters, typed by a user
            raise ApiError(0, f"not a valid request: {exc}") from None
        if response.is_success:
            return response.json()
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        raise ApiError(response.status_code, message)

    def submit_agent(self, path: Path, name: str, description: str, tags: str) -> Any:
        """Upload an agent file."""
        form = {"agentName": name, "description": description, "tags": tags}
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, "text/x-python")}
            return self.request("POST", "/api/agents/submit", data=form, files=files)
