"""Where artifacts, bars and FMEL records live: a local folder or an S3-compatible bucket.

A :class:`Root` is addressed by plain string paths below its ``url``: absolute local paths for
:class:`LocalRoot` (the embedded default), ``s3://bucket/prefix/...`` for :class:`S3Root`. Writes
are crash-safe on both: a temporary file renamed into place locally, one PUT per object (atomic
per object) on S3, where :meth:`S3Root.put` can also make a PUT conditional on the object's ETag
(compare-and-swap with ``If-Match`` / ``If-None-Match``). The S3 client is fsspec's s3fs;
credentials and region come from the standard AWS variables (``AWS_ACCESS_KEY_ID``...), the
endpoint from ``FARM_S3_ENDPOINT_URL`` when it is not AWS. Agent processes never see any of
this: they get their data over the sandbox protocol.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Final, Protocol

import duckdb
import pyarrow as pa

S3_SCHEME: Final = "s3://"
_CONFLICT_CODES: Final = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
_CONFLICT_STATUSES: Final = frozenset({409, 412})


class WriteConflict(Exception):
    """A conditional write lost: the object changed, appeared or vanished since it was read."""


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
        return tuple(self._listing(folder))

    def etags(self, folder: str) -> dict[str, str]:
        """The ETag of each object directly in ``folder``, by name (one LIST per 1,000)."""
        return {
            name: str(entry["ETag"])
            for name, entry in self._listing(folder).items()
            if entry.get("type") == "file"
        }

    def _listing(self, folder: str) -> dict[str, dict[str, Any]]:
        """The entries directly in ``folder`` (s3fs's details), by name."""
        try:
            entries = self.fs.ls(folder, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        base = folder.removeprefix(S3_SCHEME).rstrip("/") + "/"
        return {e["name"].removeprefix(base): e for e in entries if e["name"].startswith(base)}

    def read(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def open(self, path: str) -> IO[bytes]:
        handle: IO[bytes] = self.fs.open(path, "rb")
        return handle

    def read_version(self, path: str) -> tuple[bytes, str] | None:
        """The bytes of ``path`` and their ETag, from one GET (None when it does not exist)."""
        from fsspec.asyn import sync

        bucket, key, _ = self.fs.split_path(path)
        try:
            response = self.fs.call_s3("get_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        body = response["Body"]
        try:
            data: bytes = sync(self.fs.loop, body.read)
        finally:
            body.close()
        return data, str(response["ETag"])

    def write(self, path: str, data: bytes) -> None:
        self.fs.pipe_file(path, data)  # one PUT (multipart when large): atomic per object

    def put(
        self, path: str, data: bytes, *, if_match: str | None = None, if_absent: bool = False
    ) -> str:
        """One PUT of ``data`` at ``path`` (at most S3's 5 GB); the new ETag.

        With ``if_match`` only while the object's ETag is that one, with ``if_absent`` only while
        there is no object: else :class:`WriteConflict` (S3's 412 PreconditionFailed, its 409
        ConditionalRequestConflict when a concurrent conditional write won, or a 404 when the
        object to match is gone).
        """
        condition: dict[str, str] = {}
        if if_match is not None:
            condition["IfMatch"] = if_match
        if if_absent:
            condition["IfNoneMatch"] = "*"
        if condition:
            _require_conditional_writes()
        bucket, key, _ = self.fs.split_path(path)
        try:
            out = self.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
        except OSError as error:
            if condition and _is_conflict(error, matching=if_match is not None):
                raise WriteConflict(f"{path} changed since it was read") from error
            raise
        return str(out["ETag"])

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


def _is_conflict(error: OSError, *, matching: bool) -> bool:
    """True when s3fs's ``error`` says a conditional PUT lost: 412, 409, or (``matching``: an
    ``If-Match`` PUT) a 404 for an object deleted meanwhile."""
    response = getattr(error.__cause__, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if matching and code == "NoSuchKey":
        return True
    return code in _CONFLICT_CODES or status in _CONFLICT_STATUSES


@functools.cache
def _require_conditional_writes() -> None:
    """Refuse to go on when botocore cannot send ``If-Match``: s3fs would drop the argument
    silently and turn a compare-and-swap into a plain overwrite."""
    from botocore import __version__
    from botocore.session import get_session

    model = get_session().get_service_model("s3").operation_model("PutObject")
    if not {"IfMatch", "IfNoneMatch"} <= set(model.input_shape.members):
        raise RuntimeError(
            f"botocore {__version__} cannot make conditional S3 writes (If-Match): upgrade "
            "botocore and aiobotocore"
        )


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
