"""Forking in tests: a child that runs a function and never returns into pytest."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable


def fork_and_wait(child: Callable[[], int], seconds: float = 30) -> int | None:
    """Fork; the child runs ``child`` and exits with its status. The child's exit code, or
    ``None`` (it was killed) if it had not ended within ``seconds``."""
    pid = os.fork()
    if pid == 0:  # the child: never back into pytest
        os._exit(child())
    deadline = time.monotonic() + seconds
    done, status = os.waitpid(pid, os.WNOHANG)
    while done == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
        done, status = os.waitpid(pid, os.WNOHANG)
    if done == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return None
    return os.waitstatus_to_exitcode(status)
