"""Where artifacts, bars and FMEL records live: a local folder or an S3-compatible bucket.

A :class:`Root` is addressed by plain string paths below its ``url``: absolute local paths for
:class:`LocalRoot` (the embedded default), ``s3://bucket/prefix/...`` for :class:`S3Root`. Writes
are crash-safe on both: a temporary file renamed into place locally, one PUT per object (atomic
per object) on S3. The S3 client is fsspec's s3fs; credentials and region come from the standard
AWS variables (``AWS_ACCESS_KEY_ID``...), the endpoint from ``FARM_S3_ENDPOINT_URL`` when it is
not AWS. Agent processes never see any of this: they get their data over the sandbox protocol.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Final, Protocol

import duckdb
import pyarrow as pa

S3_SCHEME: Final = "s3://"


class Root(Protocol):
    """Files below one root, addressed by string paths that start with ``url``."""

    url: str
    remote: bool

    def join(self, *parts: str) -> str:
        """The path of ``parts`` below the root."""

    def names(self, folder: str) -> tuple[str, ...]:
        """The names directly in ``folder`` (empty when there is none)."""

    def read(self, path: str) -> bytes:
        """The bytes of ``path``; ``FileNotFoundError`` when there are none."""

    def open(self, path: str) -> IO[bytes]:
        """``path`` opened for (seekable) reading; ``FileNotFoundError`` when absent."""

    def write(self, path: str, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically (readers see the old or the new bytes)."""

    def upload(self, local: Path, path: str) -> None:
        """Copy the local file ``local`` to ``path`` atomically."""

    def identity(self, path: str) -> tuple[object, ...] | None:
        """What changes whenever ``path`` is replaced (None when it does not exist)."""

    def delete(self, path: str) -> None:
        """Remove ``path``, or everything below it when it is a folder (nothing there is fine)."""

    def is_dir(self, path: str) -> bool:
        """True when something is stored below ``path``."""

    def last_write(self, folder: str) -> float:
        """When ``folder`` or a file directly in it last changed (epoch seconds; inf when it
        does not exist)."""

    def reachable(self) -> bool:
        """True when the root can be used (the folder is writable, the bucket answers)."""


class LocalRoot:
    """A local folder; folder listings are cached while a folder's mtime is unchanged.

    A listing is only reused when it was taken at least ``RACY_SECONDS`` after the folder's last
    change: a change within the same clock tick as the cached time would not move the mtime.
    """

    remote = False
    RACY_SECONDS: Final = 2.0

    def __init__(self, folder: Path, *, cache: bool = True) -> None:
        self.folder = Path(folder)
        self.url = str(self.folder)
        self._listings: dict[str, tuple[int, tuple[str, ...]]] | None = {} if cache else None

    def join(self, *parts: str) -> str:
        return "/".join((self.url, *parts))

    def names(self, folder: str) -> tuple[str, ...]:
        try:
            mtime = os.stat(folder).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return ()
        if self._listings is not None and (hit := self._listings.get(folder)) and hit[0] == mtime:
            return hit[1]
        try:
            names = tuple(os.listdir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return ()
        if self._listings is not None and time.time_ns() - mtime > self.RACY_SECONDS * 1e9:
            self._listings[folder] = (mtime, names)
        return names

    def read(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def open(self, path: str) -> IO[bytes]:
        handle: IO[bytes] = pa.OSFile(path)  # native reads for pyarrow; the caller closes it
        return handle

    def write(self, path: str, data: bytes) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def upload(self, local: Path, path: str) -> None:
        if Path(path) != local:
            self.write(path, local.read_bytes())

    def identity(self, path: str) -> tuple[object, ...] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def delete(self, path: str) -> None:
        target = Path(path)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def is_dir(self, path: str) -> bool:
        return Path(path).is_dir()

    def last_write(self, folder: str) -> float:
        try:
            with os.scandir(folder) as entries:
                times = [e.stat().st_mtime for e in entries]
            return max([os.stat(folder).st_mtime, *times])
        except FileNotFoundError:
            return float("inf")  # already gone

    def reachable(self) -> bool:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.folder, os.W_OK)


class S3Root:
    """``s3://bucket/prefix`` on an S3-compatible server, through fsspec's s3fs."""

    remote = True

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import s3fs

        self.url = url.rstrip("/")
        options: dict[str, Any] = {}
        if endpoint_url:
            options["endpoint_url"] = endpoint_url
        # No listings cache: other processes write the same bucket.
        self.fs = s3fs.S3FileSystem(use_listings_cache=False, client_kwargs=options)

    def join(self, *parts: str) -> str:
        return "/".join((self.url, *parts))

    def names(self, folder: str) -> tuple[str, ...]:
        try:
            entries = self.fs.ls(folder, detail=False, refresh=True)
        except FileNotFoundError:
            return ()
        base = folder.removeprefix(S3_SCHEME).rstrip("/") + "/"
        return tuple(e.removeprefix(base) for e in entries if e.startswith(base))

    def read(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def open(self, path: str) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(path, "rb")
        return handle

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)  # one PUT: atomic per object

    def upload(self, local: Path, path: str) -> None:
        self.write(path, local.read_bytes())

    def identity(self, path: str) -> tuple[object, ...] | None:
        try:
            info = self.fs.info(path, refresh=True)
        except FileNotFoundError:
            return None
        if info.get("type") != "file":
            return None
        return (info.get("ETag"), info.get("size"), str(info.get("LastModified")))

    def delete(self, path: str) -> None:
        try:
            self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache()

    def is_dir(self, path: str) -> bool:
        return bool(self.names(path))

    def last_write(self, folder: str) -> float:
        try:
            found = self.fs.ls(folder, detail=True, refresh=True)
        except FileNotFoundError:
            return float("inf")
        times = [e["LastModified"].timestamp() for e in found if "LastModified" in e]
        return max(times, default=float("inf"))

    def reachable(self) -> bool:
        bucket = self.url.removeprefix(S3_SCHEME).split("/", 1)[0]
        try:
            self.fs.ls(bucket, refresh=True)
        except OSError:
            return False
        return True


def open_root(url: str | None, folder: Path, endpoint_url: str | None = None) -> Root:
    """The root a ``FARM_*_URL`` setting names: an :class:`S3Root` for ``s3://bucket/prefix``,
    else ``folder`` (the local folder the setting names, or its default)."""
    if url is not None and url.startswith(S3_SCHEME):
        return S3Root(url, endpoint_url)
    return LocalRoot(folder)


def check_url(url: str | None) -> str | None:
    """``url`` if it is a folder path, a ``file://`` URL or ``s3://bucket[/prefix]``."""
    if url is None or "://" not in url or url.startswith("file://"):
        return url
    if url.startswith(S3_SCHEME) and url.removeprefix(S3_SCHEME).strip("/"):
        return url
    raise ValueError(f"unsupported storage URL {url!r}: use a folder path or s3://bucket/prefix")


def register(db: duckdb.DuckDBPyConnection, root: Root) -> None:
    """Let DuckDB read ``root``'s paths (S3 goes through the same s3fs client)."""
    if isinstance(root, S3Root):
        db.register_filesystem(root.fs)
