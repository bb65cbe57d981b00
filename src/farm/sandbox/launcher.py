"""Start agent code in a sandboxed child process (DESIGN §4).

STUB: only ``unsafe-local`` works; the bubblewrap implementation replaces the body of
``launch`` behind this same interface.

The child talks to the host over two pipes: it reads host messages on fd 3 and writes its own
messages on fd 4. Its stdout and stderr are merged into one capped log.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from farm.config import SandboxMode, Settings

AGENT_READ_FD = 3
AGENT_WRITE_FD = 4

TerminationReason = Literal["exited", "timeout", "memory", "cpu", "killed", "output"]


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot be set up on this host; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Hard limits for one agent process."""

    memory_mb: int = 2048
    cpu_s: int = 3600
    wall_s: int = 1800
    pids: int = 64
    file_mb: int = 64
    output_kb: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> SandboxLimits:
        return cls(
            memory_mb=settings.sandbox_memory_mb,
            cpu_s=settings.sandbox_cpu_s,
            wall_s=settings.sandbox_wall_s,
            pids=settings.sandbox_pids,
            file_mb=settings.sandbox_file_mb,
            output_kb=settings.sandbox_output_kb,
        )


@dataclass(frozen=True, slots=True)
class Termination:
    """How a sandboxed process ended."""

    reason: TerminationReason
    returncode: int | None
    detail: str


class AgentProcess:
    """A running sandboxed child with its two protocol pipes."""

    def __init__(self, popen: subprocess.Popen[bytes], to_agent: BinaryIO, from_agent: BinaryIO):
        self._popen = popen
        self.to_agent = to_agent
        self.from_agent = from_agent

    def output_tail(self) -> str:
        """The last part of what the child printed (stdout and stderr)."""
        return ""

    def wait(self, timeout: float | None = None) -> Termination:
        """Wait for the child to exit and say why it ended."""
        code = self._popen.wait(timeout)
        return Termination("exited", code, "")

    def kill(self) -> Termination:
        """Kill the child and everything it started."""
        self._popen.kill()
        return self.wait()


def launch(
    argv: Sequence[str],
    *,
    readonly_binds: Mapping[Path, str],
    limits: SandboxLimits,
    mode: SandboxMode,
    uid: int = 65534,
) -> AgentProcess:
    """Start ``argv`` sandboxed; ``readonly_binds`` maps host paths to paths inside the sandbox."""
    host_read, agent_write = os.pipe()
    agent_read, host_write = os.pipe()
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PYTHONHASHSEED": "0"}
    argv = [_rebind(a, readonly_binds) for a in argv]
    popen = subprocess.Popen(  # noqa: S603
        argv,
        stdin=subprocess.DEVNULL,
        pass_fds=(agent_read, agent_write),
        env=env,
        start_new_session=True,
        preexec_fn=lambda: (os.dup2(agent_read, AGENT_READ_FD), os.dup2(agent_write, AGENT_WRITE_FD)),  # noqa: PLW1509
    )
    os.close(agent_read)
    os.close(agent_write)
    return AgentProcess(popen, os.fdopen(host_write, "wb"), os.fdopen(host_read, "rb"))


def _rebind(arg: str, binds: Mapping[Path, str]) -> str:
    inverse = {inside: str(host) for host, inside in binds.items()}
    return inverse.get(arg, arg)
