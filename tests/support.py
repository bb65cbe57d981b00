"""Helpers every test folder (and the benchmarks) may import: backend URLs, the skip-or-fail
rule, a fresh PostgreSQL schema, free ports, a real server in a thread and a keep-alive
connection to it."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from starlette.types import ASGIApp

from farm.context import Context
from farm.users.service import create_user

POSTGRES_URL = os.environ.get("FARM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _own_database(url: str) -> str:
    """Under pytest-xdist each worker gets a Redis database of its own (tests flush theirs):
    worker ``gwN`` takes the configured database minus N (plus N when that would be negative)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    offset = int(worker[2:])
    db = base - offset if base >= offset else base + offset
    return urlunsplit(parts._replace(path=f"/{db}"))


def cents(value: float) -> float:
    """A ledger value as the API reports it: kept to the micro, then rounded half-even to the
    cent (``round`` would round a value of exactly half a cent up)."""
    micros = Decimal(value).quantize(Decimal("0.000001"), ROUND_HALF_EVEN)
    return float(micros.quantize(Decimal("0.01"), ROUND_HALF_EVEN))


REDIS_URL = _own_database(os.environ.get("FARM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))


def require_backend(name: str, problem: str | None) -> None:
    """Skip a test whose backend is unreachable, except under CI=true where that is a failure."""
    if problem is None:
        return
    message = f"{name} is not available ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(f"{message}; these tests run when it is (they are required under CI=true)")


def redis_problem(url: str = REDIS_URL) -> str | None:
    """Why Redis at ``url`` does not answer, or None."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return str(exc)
    return None


def require_redis(url: str = REDIS_URL) -> str:
    """``url``, once Redis there answers (else skip, or fail under CI=true)."""
    require_backend(f"Redis at {url}", redis_problem(url))
    return url


@contextmanager
def flushed_redis(url: str = REDIS_URL) -> Iterator[str]:
    """``url`` once Redis there answers, its database flushed before and after."""
    import redis

    with redis.Redis.from_url(require_redis(url)) as client:
        client.flushdb()
        yield url
        client.flushdb()


@contextmanager
def fresh_schema(url: str, prefix: str) -> Iterator[str]:
    """A new schema in the PostgreSQL at ``url``, dropped afterwards; yields its URL."""
    import psycopg

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def user_token(context: Context, name: str) -> str:
    """Creates a user named ``name``; its API token."""
    with context.db.transaction() as session:
        _, token = create_user(session, name)
    return token


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, what: str = "it") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """``app`` served by a real uvicorn server (keep-alive, its own event loop) in a thread;
    yields the base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class KeepAlive:
    """One HTTP/1.1 connection; ``get``/``post`` fail if the server closed it in between."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)
        self.headers = headers
        self.local: tuple[str, int] | None = None

    def request(self, method: str, path: str, body: bytes | None = None, **headers: str) -> Any:
        """Send on the same socket as the previous request; the status and the JSON body."""
        self.connection.request(method, path, body=body, headers={**self.headers, **headers})
        local = self.connection.sock.getsockname()
        assert self.local in (None, local), "the server closed the keep-alive connection"
        self.local = local
        response = self.connection.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *_: object) -> None:
        self.connection.close()


def route_cli(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the CLI's API client talk to ``client`` (a TestClient) instead of a socket."""
    from farm import cli_support
    from farm.client import FarmClient

    class Routed(FarmClient):
        def __init__(self, url: str, token: str | None, **options: Any) -> None:
            super().__init__(url, token, **options)
            self._http.close()
            self._http = client
            client.headers["Authorization"] = f"Bearer {token}"

        def __exit__(self, *_: object) -> None:
            pass

    monkeypatch.setattr(cli_support, "FarmClient", Routed)


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every process under ``pid``: its parent's pid and its command line."""
    table: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # it ended meanwhile
        table[int(stat.parent.name)] = (parent, command)
    below = {pid}
    while grown := {p for p, (parent, _) in table.items() if parent in below} - below:
        below |= grown
    return {p: table[p] for p in below - {pid}}


def outermost(pid: int, marker: str) -> dict[int, int]:
    """The processes under ``pid`` whose command line holds ``marker`` and whose parent's does
    not, each with its parent's pid. A child forked but not yet exec'd shows its parent's
    command line, so only the outermost one is the process itself."""
    under = descendants(pid)
    return {
        p: parent
        for p, (parent, command) in under.items()
        if marker in command and marker not in under.get(parent, (0, ""))[1]
    }


def sandboxed_descendants(pid: int) -> dict[int, int]:
    """The outermost sandboxed agent processes under ``pid``, each with its parent's pid."""
    return outermost(pid, "farm.sandbox.runtime")


def paper_runtimes(pid: int) -> list[int]:
    """The paper runtime processes under ``pid`` (a worker or `farm up`)."""
    return list(outermost(pid, "farm.papertrading.runtime"))


def command_of(pid: int) -> str:
    """A process's command line ('' once it has ended)."""
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextmanager
def moto_s3(folder: Path) -> Iterator[str]:
    """moto's standalone S3 server on a free loopback port (a subprocess); yields its URL.

    It handles one request at a time, so conditional PUTs are atomic as on S3 (atomic_moto.py).
    Skips (fails under CI=true) when ``moto[server]`` is not installed.
    """
    import importlib.util
    import re
    import sys

    missing = importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None
    require_backend("moto's S3 server", "moto[server] is not installed" if missing else None)
    log = folder / "moto.log"
    server = Path(__file__).with_name("atomic_moto.py")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(server), "-H", "127.0.0.1", "-p", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(rb"Running on (http://127\.0\.0\.1:\d+)", log.read_bytes())):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto's S3 server did not start"
            time.sleep(0.05)
        yield found.group(1).decode()
    finally:
        process.kill()
        process.wait(timeout=10)


@dataclass
class RedisCluster:
    """A private three-master Redis Cluster on free loopback ports (client and bus ports)."""

    folder: Path
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, timeout: float = 20.0) -> None:
        for index in range(3):
            port, bus = free_port(), free_port()
            node = self.folder / f"node{index}"
            node.mkdir(parents=True)
            self.ports.append(port)
            self.processes.append(
                subprocess.Popen(
                    [
                        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                        *("--cluster-enabled", "yes", "--cluster-port", str(bus)),
                        *("--cluster-config-file", str(node / "nodes.conf")),
                        *("--dir", str(node), "--save", "", "--appendonly", "no"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while redis_problem(f"redis://127.0.0.1:{port}/0") is not None:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server (cluster node) did not start on port {port}")
                time.sleep(0.02)
        created = subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{port}" for port in self.ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        assert created.returncode == 0, created.stdout.decode() + created.stderr.decode()
        while not self._ok():
            if time.monotonic() > deadline:
                pytest.fail("the Redis Cluster did not reach cluster_state:ok")
            time.sleep(0.05)

    def _ok(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port, socket_connect_timeout=2) as client:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
        return True

    def stop(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait(timeout=10)
        self.processes.clear()


@contextmanager
def redis_cluster(folder: Path) -> Iterator[RedisCluster]:
    """A private Redis Cluster of three masters in ``folder``, stopped on exit; skips (fails
    under CI=true) without ``redis-server`` and ``redis-cli``."""
    require_backend("redis-server", None if shutil.which("redis-server") else "not installed")
    require_backend("redis-cli", None if shutil.which("redis-cli") else "not installed")
    started = RedisCluster(folder)
    try:
        started.start()
        yield started
    finally:
        started.stop()
