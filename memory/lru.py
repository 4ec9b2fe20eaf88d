"""A small thread-safe LRU cache bounded by entry count and by a size measure.

The memory keeps several in-process caches (turn layouts, token counts, sealed page
records, Large masters). Each is bounded so that a long-running process holds a fixed
amount of memory however long its conversations grow.

>>> c = LRU(max_entries=2)
>>> c.put("a", 1); c.put("b", 2); c.put("c", 3)
>>> c.get("a") is None, c.get("c")
(True, 3)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from opticmem.forks import renew_in_forked_child

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """Least-recently-used cache; ``size(key, value)`` (default 1) counts against ``max_size``.

    With ``group`` (a function of the key), the cache also keeps which keys each group
    holds, so that :meth:`discard_group` drops a group's entries without looking at the
    others': the memory drops a session's cached pages by it, and a scan of every entry
    (thousands) on each session first seen made an ``add`` across many sessions ~20 times
    slower.
    """

    def __init__(
        self,
        max_entries: int = 4096,
        *,
        max_size: int | None = None,
        size: Callable[[K, V], int] | None = None,
        group: Callable[[K], Hashable] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._max_entries = max_entries
        self._max_size = max_size
        self._size_of = size
        self._group_of = group
        self._groups: dict[Hashable, set[K]] = {}
        self._total = 0
        self._lock = threading.Lock()
        renew_in_forked_child(self)

    def _forget(self, key: K) -> None:
        """Remove ``key`` (just popped from ``_data``) from its group. Lock held."""
        if self._group_of is not None:
            g = self._group_of(key)
            keys = self._groups.get(g)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._groups[g]

    def after_fork_in_child(self) -> None:
        """A fresh lock in a forked child: a thread of the parent that held this one at the
        fork does not live on there to release it. The entries it was changing may be
        half changed, so a cache whose lock was held is emptied (it is only a cache)."""
        if self._lock.locked():
            self._data = OrderedDict()
            self._groups = {}
            self._total = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key: K, value: V) -> None:
        n = self._size_of(key, value) if self._size_of else 1
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._total -= old[1]
            if self._max_size is not None and n > self._max_size:
                if old is not None:
                    self._forget(key)
                return  # larger than the whole cache: never kept
            self._data[key] = (value, n)
            if self._group_of is not None and old is None:
                self._groups.setdefault(self._group_of(key), set()).add(key)
            self._total += n
            while len(self._data) > self._max_entries or (
                self._max_size is not None and self._total > self._max_size
            ):
                gone, (_, m) = self._data.popitem(last=False)
                self._total -= m
                self._forget(gone)

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()`` stored and returned (computed outside the lock)."""
        hit = self.get(key)
        if hit is not None:
            return hit
        value = compute()
        self.put(key, value)
        return value

    def discard(self, key: K) -> None:
        """Drop ``key`` if cached."""
        with self._lock:
            hit = self._data.pop(key, None)
            if hit is not None:
                self._total -= hit[1]
                self._forget(key)

    def discard_group(self, group: Hashable, predicate: Callable[[K], bool] | None = None) -> None:
        """Drop the entries of ``group`` (those ``predicate`` matches, if given), looking at
        no other entry. Needs a cache made with ``group``."""
        if self._group_of is None:
            raise TypeError("discard_group needs an LRU made with group=")
        with self._lock:
            keys = self._groups.get(group)
            if not keys:
                return
            gone = [k for k in keys if predicate is None or predicate(k)]
            for k in gone:
                self._total -= self._data.pop(k)[1]
            keys.difference_update(gone)  # what _forget(k) does, the group known
            if not keys:
                del self._groups[group]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._groups.clear()
            self._total = 0

    def __contains__(self, key: object) -> bool:
        """Whether ``key`` is cached (without making it the most recently used)."""
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)
