"""Object storage test helpers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bucket:
    """A fresh bucket on the local S3 server; ``url(name)`` is an ``s3://`` URL in it."""

    endpoint: str
    name: str

    def url(self, prefix: str) -> str:
        return f"s3://{self.name}/{prefix}"
