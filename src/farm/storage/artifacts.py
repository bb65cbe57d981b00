"""The artifact store: agent source files and other blobs, addressed by key."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Protocol

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,299}$")


class ArtifactStore(Protocol):
    """Blob storage by key (a local folder embedded; object storage when scaled out)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` atomically (replacing what was there)."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``KeyError`` if there are none."""

    def local_path(self, key: str) -> Path:
        """A local file holding the bytes of ``key`` (for binding into a sandbox)."""

    def delete(self, key: str) -> None:
        """Remove ``key``, or every key below it when it is a prefix (nothing there is fine)."""

    def healthy(self) -> bool:
        """True when the store can be written."""


class LocalArtifactStore:
    """Artifacts as files below one folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.match(key) or ".." in key.split("/"):
            raise ValueError(f"invalid artifact key: {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def local_path(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise KeyError(key)
        return path

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def healthy(self) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.root, os.W_OK)


def open_artifact_store(url: str | None, default_root: Path) -> ArtifactStore:
    """The store for ``FARM_ARTIFACTS_URL`` (a path or ``file://`` URL; default a folder)."""
    if url is None:
        return LocalArtifactStore(default_root)
    if url.startswith("file://") or "://" not in url:
        return LocalArtifactStore(Path(url.removeprefix("file://")))
    raise ValueError(f"unsupported FARM_ARTIFACTS_URL scheme: {url!r} (use a folder path)")
