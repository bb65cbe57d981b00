"""Backtest worker processes: the host loop of a backtest never runs in the API process.

The scheduler's threads stay in the API process and only claim sessions; each hands its claimed
session to a long-lived worker process (started once, reused for every job, replaced if it dies)
that runs the job there: the runner, the host ledger, frame decoding, the FMEL recorder and the
metrics. The job's events (``backtest.completed``) are written to the outbox in the transaction
that completes the session; when the worker answers, ``after_job`` (the relay) publishes them.

A graceful stop is forwarded to the worker, whose job puts the session back in the queue. If the
API process dies, each worker sees its control pipe close and exits at once (its agent dies
with it), so the next start recovers the session as after any crash.

Run as ``python -m farm.backtest.worker CONTROL_FD REPLY_FD``; the first message on the control
pipe is ``(factory, settings)``, from which the worker builds its job once.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from farm.backtest.scheduler import Job
from farm.config import Settings
from farm.leases import Lease
from farm.processes import launch_module

log = logging.getLogger("farm.backtest.worker")

WAIT_SECONDS = 0.1
WORKER_NICENESS = 5
STOP = "stop"

READY = "ready"

JobFactory = Callable[[Settings], Job]
"""Builds a worker's job from settings; must be a module-level function (it is pickled)."""


class WorkerDied(RuntimeError):
    """A worker process ended while it ran a session."""


class JobCrashed(RuntimeError):
    """The job raised in the worker (it was logged there); the worker lives on."""


class WorkerPool:
    """A scheduler :data:`Job` that runs every session in a warm worker process.

    It keeps one idle worker per scheduler thread; :meth:`start` launches them ahead of the
    first claim so no backtest waits for an interpreter to start.
    """

    def __init__(
        self,
        factory: JobFactory,
        settings: Settings,
        after_job: Callable[[], None],
        heartbeat: Callable[[Lease], object],
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._after_job = after_job
        self._heartbeat = heartbeat
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []

    def start(self, count: int) -> None:
        """Launch ``count`` workers now (they load the platform while nothing waits)."""
        for _ in range(count):
            self._idle.put(self._launch())

    def __call__(self, lease: Lease, stopping: threading.Event) -> None:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = self._launch()
        try:
            worker.run(lease, stopping, self._heartbeat, self._settings.backtest_lease_s / 3)
        except WorkerDied:
            self._retire(worker)
            raise
        finally:
            self._after_job()
        if stopping.is_set():
            self._retire(worker)  # its job saw the stop; the process is shutting down anyway
        else:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker (idle ones exit at once; a busy one is killed after a grace)."""
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close()

    def _launch(self) -> _Worker:
        worker = _Worker(self._factory, self._settings)
        with self._lock:
            self._workers.append(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.close()


class _Worker:
    """One worker process and the two pipes that drive it."""

    def __init__(self, factory: JobFactory, settings: Settings) -> None:
        self._process, self._control, self._replies = launch_module("farm.backtest.worker")
        self._control.send((factory, settings))
        self._ready = False

    def run(
        self,
        lease: Lease,
        stopping: threading.Event,
        heartbeat: Callable[[Lease], object],
        every: float,
    ) -> None:
        """Run one session in the worker (a job that crashed raises :class:`JobCrashed`).

        Until the worker has loaded the platform (a cold start can outlast a lease on a busy
        machine), ``heartbeat`` renews the lease from here every ``every`` seconds; from then
        on the job's own watcher does."""
        try:
            beat = time.monotonic() + every
            while not self._ready:
                if self._replies.poll(WAIT_SECONDS):
                    self._ready = self._replies.recv() == READY
                elif time.monotonic() >= beat:
                    heartbeat(lease)
                    beat = time.monotonic() + every
            self._control.send(lease)
            stop_sent = False
            while not self._replies.poll(WAIT_SECONDS):
                if stopping.is_set() and not stop_sent:
                    self._control.send(STOP)
                    stop_sent = True
            crash: str | None = self._replies.recv()
        except (EOFError, OSError) as exc:
            code = self._process.wait()
            raise WorkerDied(f"the backtest worker process died (exit code {code})") from exc
        if crash is not None:
            raise JobCrashed(crash)

    def close(self, grace: float = 5.0) -> None:
        """Close the control pipe (the worker exits), then wait, killing it after ``grace``."""
        self._control.close()
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._replies.close()


def serve(control: Connection, replies: Connection) -> None:
    """The worker's loop: build the job, then run every session the API process sends.

    A reader thread takes the control messages: sessions to run, ``stop``, and the end of the
    pipe, at which the process exits at once (the API process is gone or closing).
    """
    factory: JobFactory
    factory, settings = control.recv()
    job = factory(settings)
    replies.send(READY)
    leases: queue.SimpleQueue[Lease] = queue.SimpleQueue()
    stopping = threading.Event()

    def read() -> None:
        try:
            while True:
                message: Any = control.recv()
                if message == STOP:
                    stopping.set()
                else:
                    leases.put(message)
        except (EOFError, OSError):
            os._exit(0)

    threading.Thread(target=read, name="worker-control", daemon=True).start()
    while True:
        lease = leases.get()
        crash = None
        try:
            job(lease, stopping)
        except Exception as exc:
            log.exception("backtest job %s crashed in the worker", lease.session_id)
            crash = str(exc)
        replies.send(crash)


def main(argv: list[str]) -> None:
    """Entry point of a worker process (see the module docstring)."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [worker %(process)d]: %(message)s",
    )
    control_fd, reply_fd = (int(a) for a in argv)
    os.dup2(2, 1)  # stray prints go to the log, never anywhere else
    os.nice(WORKER_NICENESS)  # the API process (and its readers) go first when CPUs are busy
    serve(Connection(control_fd, writable=False), Connection(reply_fd, readable=False))


if __name__ == "__main__":
    main(sys.argv[1:])
