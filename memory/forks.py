"""Objects that must renew their locks and threads in a forked child.

A forked child runs one thread: the parent's other threads are gone, and a lock one of
them held at the fork stays held for good. Objects that own locks or worker threads
register here and have their ``after_fork_in_child`` called in every forked child.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class RenewedInChild(Protocol):
    def after_fork_in_child(self) -> None:
        """Replace locks, queues and threads inherited from the parent."""


_LIVE: weakref.WeakSet[RenewedInChild] = weakref.WeakSet()


def renew_in_forked_child(obj: RenewedInChild) -> None:
    """Call ``obj.after_fork_in_child()`` in every process forked while ``obj`` lives."""
    _LIVE.add(obj)


def _after_fork() -> None:
    for obj in list(_LIVE):
        obj.after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork)


class ProcessLock:
    """A module-level lock that is fresh in every forked child: one a thread of the parent
    held at the fork would stay held there for good. Used as ``with lock:``."""

    def __init__(self, factory: Callable[[], threading.Lock | threading.RLock]) -> None:
        self._factory = factory
        self._lock = factory()
        renew_in_forked_child(self)  # module-level: lives, and stays registered, for good

    def after_fork_in_child(self) -> None:
        self._lock = self._factory()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.__exit__(kind, exc, tb)
