"""Child Python processes driven over two pipes (the backtest workers, the paper runtime)."""

from __future__ import annotations

import os
import subprocess
import sys
from multiprocessing.connection import Connection


def launch_module(module: str) -> tuple[subprocess.Popen[bytes], Connection, Connection]:
    """Start ``python -m MODULE CONTROL_FD REPLY_FD`` with this interpreter.

    Returns the process, a write-only connection to its control pipe and a read-only one from
    its reply pipe; the child's ends of the pipes are closed in this process.
    """
    control_read, control_write = os.pipe()
    reply_read, reply_write = os.pipe()
    try:
        process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed module
            [sys.executable, "-m", module, str(control_read), str(reply_write)],
            pass_fds=(control_read, reply_write),
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(control_read)
        os.close(reply_write)
    return (
        process,
        Connection(control_write, readable=False),
        Connection(reply_read, writable=False),
    )
