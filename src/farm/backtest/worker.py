"""Backtest worker processes: the host loop of a backtest never runs in the API process.

The scheduler's threads stay in the API process and only claim sessions; each hands its claimed
session to a long-lived worker process (started once, reused for every job, replaced if it dies)
that runs the job there: the runner, the host ledger, frame decoding, the FMEL recorder and the
metrics. The job's events (``backtest.completed``) come back with the worker's answer and are
published on the API process's bus, where their subscribers (the leaderboard's cache) live.

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
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from farm.backtest.scheduler import Job
from farm.config import Settings
from farm.events import Event, EventBus, Handler
from farm.processes import launch_module

log = logging.getLogger("farm.backtest.worker")

WAIT_SECONDS = 0.1
WORKER_NICENESS = 5
STOP = "stop"

JobFactory = Callable[[Settings, EventBus], Job]
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

    def __init__(self, factory: JobFactory, settings: Settings, bus: EventBus) -> None:
        self._factory = factory
        self._settings = settings
        self._bus = bus
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []

    def start(self, count: int) -> None:
        """Launch ``count`` workers now (they load the platform while nothing waits)."""
        for _ in range(count):
            self._idle.put(self._launch())

    def __call__(self, session_id: str, stopping: threading.Event) -> None:
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            worker = self._launch()
        try:
            events = worker.run(session_id, stopping)
        except WorkerDied:
            self._retire(worker)
            raise
        if stopping.is_set():
            self._retire(worker)  # its job saw the stop; the process is shutting down anyway
        else:
            self._idle.put(worker)
        for topic, event in events:
            self._bus.publish(topic, event)

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

    def run(self, session_id: str, stopping: threading.Event) -> list[tuple[str, Event]]:
        """Run one session in the worker; returns the events its job published (a job that
        crashed raises :class:`JobCrashed`)."""
        try:
            self._control.send(session_id)
            stop_sent = False
            while not self._replies.poll(WAIT_SECONDS):
                if stopping.is_set() and not stop_sent:
                    self._control.send(STOP)
                    stop_sent = True
            events: list[tuple[str, Event]]
            events, crash = self._replies.recv()
        except (EOFError, OSError) as exc:
            code = self._process.wait()
            raise WorkerDied(f"the backtest worker process died (exit code {code})") from exc
        if crash is not None:
            raise JobCrashed(crash)
        return events

    def close(self, grace: float = 5.0) -> None:
        """Close the control pipe (the worker exits), then wait, killing it after ``grace``."""
        self._control.close()
        try:
            self._process.wait(grace)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._replies.close()


class _Outbox:
    """The worker's event bus: it keeps what the job publishes, for the API process."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def publish(self, topic: str, event: Event) -> None:
        self.events.append((topic, dict(event)))

    def subscribe(self, topic: str, handler: Handler) -> None:
        raise NotImplementedError("a worker's job publishes events; it does not consume them")


def serve(control: Connection, replies: Connection) -> None:
    """The worker's loop: build the job, then run every session the API process sends.

    A reader thread takes the control messages: sessions to run, ``stop``, and the end of the
    pipe, at which the process exits at once (the API process is gone or closing).
    """
    factory: JobFactory
    factory, settings = control.recv()
    outbox = _Outbox()
    job = factory(settings, outbox)
    sessions: queue.SimpleQueue[str] = queue.SimpleQueue()
    stopping = threading.Event()

    def read() -> None:
        try:
            while True:
                message: Any = control.recv()
                if message == STOP:
                    stopping.set()
                else:
                    sessions.put(message)
        except (EOFError, OSError):
            os._exit(0)

    threading.Thread(target=read, name="worker-control", daemon=True).start()
    while True:
        session_id = sessions.get()
        crash = None
        try:
            job(session_id, stopping)
        except Exception as exc:
            log.exception("backtest job %s crashed in the worker", session_id)
            crash = str(exc)
        events, outbox.events = outbox.events, []
        replies.send((events, crash))


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
