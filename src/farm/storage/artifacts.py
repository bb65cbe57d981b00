"""The artifact store: agent source files and other blobs, addressed by key."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from farm.storage.objects import LocalRoot, Root, open_root

if TYPE_CHECKING:
    from farm.config import Settings

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,299}$")


class ArtifactStore(Protocol):
    """Blob storage by key (a local folder embedded; object storage when scaled out)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (replacing what was there)."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``KeyError`` if there are none."""

    def open(self, key: str) -> IO[bytes]:
        """The bytes under ``key`` opened for seekable reading; ``KeyError`` if there are none."""

    def local_path(self, key: str) -> Path:
        """A local file holding the bytes of ``key`` (for binding into a sandbox)."""

    def delete(self, key: str) -> None:
        """Remove ``key``, or every key below it when it is a prefix (nothing there is fine)."""

    def healthy(self) -> bool:
        """True when the store can be written."""


class RootArtifactStore:
    """Artifacts as files below a :class:`Root` (writes are atomic there).

    On object storage, :meth:`local_path` downloads the key into ``cache`` (a fresh copy on
    every call, renamed into place), since a sandbox can only bind local files.
    """

    def __init__(self, root: Root, cache: Path) -> None:
        self.root = root
        self.cache = cache

    def _path(self, key: str) -> str:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid artifact key: {key!r}")
        return self.root.join(key)

    def put(self, key: str, data: bytes) -> None:
        self.root.write(self._path(key), data)

    def get(self, key: str) -> bytes:
        try:
            return self.root.read(self._path(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.root.open(self._path(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not self.root.remote:
            if not os.path.isfile(path):
                raise KeyError(key)
            return Path(path)
        copy = LocalRoot(self.cache).join(key)
        LocalRoot(self.cache).write(copy, self.get(key))
        return Path(copy)

    def delete(self, key: str) -> None:
        self.root.delete(self._path(key))

    def healthy(self) -> bool:
        return self.root.reachable()


def open_artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``FARM_ARTIFACTS_URL`` names (a folder, or ``s3://bucket/prefix``)."""
    root = open_root(settings.artifacts_url, settings.artifacts_dir, settings.s3_endpoint_url)
    return RootArtifactStore(root, settings.home / "cache" / "artifacts")
