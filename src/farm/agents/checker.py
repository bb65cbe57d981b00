"""Run the agent-file check in a fresh child process: off the event loop, capped in time and memory.

``ast.parse`` holds the GIL, so a thread would still stall every request; a child process does
not. Each check gets its own ``python -I -S`` process importing only ``farm.agents.validation``
(about 20 ms to start), so no state or memory carries over from one upload to the next.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import anyio

import farm
from farm.agents.validation import CheckedAgent
from farm.errors import InvalidInput
from farm.sandbox.packages import importable_modules

log = logging.getLogger("farm.agents")

_SOURCE_ROOT = str(Path(farm.__file__).resolve().parent.parent)
_CHILD = (
    f"import sys; sys.path.insert(0, {_SOURCE_ROOT!r}); "
    "from farm.agents.validation import main; main()"
)


class AgentChecker:
    """Checks agent files in child processes, at most ``concurrency`` at a time."""

    def __init__(self, *, timeout_s: float, memory_mb: int, concurrency: int) -> None:
        self._timeout_s = timeout_s
        self._memory_bytes = memory_mb * 1024 * 1024
        self._slots = anyio.Semaphore(concurrency)

    async def check(self, data: bytes) -> CheckedAgent:
        """What the file declares (:class:`CheckedAgent`); ``InvalidInput`` saying what to fix,
        including imports the sandbox cannot satisfy and a check that needs more than the time
        or memory it is given."""
        cpu_s = math.ceil(self._timeout_s) + 1  # a backstop: the wall-time cap comes first
        command = [sys.executable, "-I", "-S", "-c", _CHILD, str(self._memory_bytes), str(cpu_s)]
        async with self._slots:
            with anyio.move_on_after(self._timeout_s) as deadline:
                # On the deadline, run_process is cancelled and kills the child.
                done = await anyio.run_process(command, input=data, check=False)
        if deadline.cancelled_caught:
            raise InvalidInput(
                f"the agent file is too complex to validate in {self._timeout_s:g} s; simplify it"
            )
        checked = _reply(done)
        available = await anyio.to_thread.run_sync(importable_modules)  # computed once
        missing = sorted(set(checked.imports) - available)
        if missing:
            raise InvalidInput(
                f"the agent imports {', '.join(missing)}, which the sandbox runtime does not "
                "have; GET /api/runtime lists the packages available (see docs/agents.md)",
                modules=missing,
            )
        return checked


def _reply(done: subprocess.CompletedProcess[bytes]) -> CheckedAgent:
    try:
        reply = json.loads(done.stdout) if done.returncode == 0 else None
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        log.warning(
            "agent check child ended with %s: %s", done.returncode, done.stderr[-500:].decode()
        )
        raise InvalidInput(
            "the agent file is too complex to validate within the memory and time allowed; "
            "simplify it"
        )
    if "strategyClass" in reply:
        params = reply["params"]
        return CheckedAgent(
            str(reply["strategyClass"]),
            [str(m) for m in reply["imports"]],
            None if params is None else {str(k): v for k, v in params.items()},
        )
    message = str(reply.pop("message"))
    raise InvalidInput(message, **reply)
