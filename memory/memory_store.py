"""The in-process store (the default): plain Python lists and dicts behind one lock.

Nothing survives the process; use :class:`~opticmem.sqlite_store.SQLiteStore` for a file.
Safe to share between threads. :meth:`InMemoryStore.handle` gives another handle on one
store's data (what ``memory://NAME`` hands each opener): each handle closes on its own,
and a closed one raises :class:`~opticmem.errors.StoreError`, as a closed SQLite or Redis
store does, while the others go on. Reads cost no parsing: pages come back as the stored
(immutable) records themselves, turns as shallow copies whose ``meta`` (a mutable JSON
value) is a copy of its own, as it would be through a file or Redis.

>>> s = InMemoryStore()
>>> s.append_turn("alice", "user", "hi", 0.0).seq, s.turn_count("alice")
(0, 1)
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opticmem.errors import PageConflictError, StoreError
from opticmem.forks import renew_in_forked_child
from opticmem.records import PageRecord, Turn
from opticmem.store import Store, new_epoch, swap_state_locked


@dataclass
class _Session:
    turns: list[Turn | None] = field(default_factory=list)
    pages: list[PageRecord] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)
    forgotten: int = 0
    """Turns below this seq have been forgotten (forgetting always drops a prefix)."""
    epoch: str = field(default_factory=new_epoch)
    """This life's :meth:`~opticmem.store.Store.session_epoch`: made with the record, gone
    with it when the session is deleted, so a session begun again gets another."""


def _own_meta(turn: Turn) -> Turn:
    """``turn`` with a ``meta`` of its own (an empty one too), so that whoever edits one
    cannot change another."""
    meta = copy.deepcopy(turn.meta) if turn.meta else {}
    # the constructor, not dataclasses.replace: a context reads every unsealed turn, and
    # replace's field lookups cost twice as much per turn
    return Turn(turn.session, turn.seq, turn.role, turn.text, turn.ts, meta)


class _Data:
    """The sessions and the lock that every handle on one in-process store shares."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.lock = threading.RLock()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        """A fresh lock in a forked child (whose sessions are a copy of the parent's): one
        a thread of the parent held at the fork would stay held for good."""
        self.lock = threading.RLock()


class InMemoryStore(Store):
    """A :class:`~opticmem.store.Store` in this process's memory.

    After :meth:`close` every call raises :class:`~opticmem.errors.StoreError`; the data
    stays for the store's other handles (:meth:`handle`).
    """

    def __init__(self) -> None:
        self._data = _Data()
        self._closed = False

    def handle(self) -> InMemoryStore:
        """Another handle on this store's data, open until its own :meth:`close`: closing
        either leaves the other working (``memory://NAME`` gives each opener one, so that
        one memory closing its store does not break the others sharing the name)."""
        with self._open_lock():
            other = InMemoryStore.__new__(InMemoryStore)
            other._data = self._data
            other._closed = False
            return other

    def _open_lock(self) -> threading.RLock:
        """The data's lock, for one call; raises :class:`StoreError` once closed (the data
        may live on in other handles, but this one must not write to it any more)."""
        if self._closed:
            raise StoreError("in-process store is closed")
        return self._data.lock

    def close(self) -> None:
        """Close this handle: later calls on it raise :class:`StoreError`. Other handles on
        the same data (:meth:`handle`) stay open; a call in progress finishes first."""
        with self._data.lock:
            self._closed = True

    def _get(self, session: str) -> _Session | None:
        return self._data.sessions.get(session)

    def _ensure(self, session: str) -> _Session:
        s = self._data.sessions.get(session)
        if s is None:
            s = self._data.sessions[session] = _Session()
        return s

    # ------------------------------------------------------------------ turn log
    def append_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        with self._open_lock():
            s = self._ensure(session)
            stored = copy.deepcopy(dict(meta)) if meta else {}  # not the caller's objects
            turn = Turn(session, len(s.turns), role, text, float(ts), stored)
            s.turns.append(turn)
            return _own_meta(turn)

    def append_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        with self._open_lock():  # one lock hold: the batch gets contiguous seqs
            return [self.append_turn(session, r, t, ts, m) for r, t, ts, m in items]

    def turn_count(self, session: str) -> int:
        with self._open_lock():
            s = self._get(session)
            return len(s.turns) if s else 0

    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        with self._open_lock():
            s = self._get(session)
            if s is None:
                return []
            return [_own_meta(t) for t in s.turns[max(start, 0) : max(stop, 0)] if t is not None]

    # ------------------------------------------------------------------ page log
    def add_page(self, page: PageRecord) -> bool:
        with self._open_lock():
            s = self._ensure(page.session)
            n = len(s.pages)
            if page.page_no < n:
                return False
            if page.page_no > n:
                raise PageConflictError(
                    f"session {page.session!r}: page {page.page_no} written but the log "
                    f"holds {n} pages (pages must be added in order)"
                )
            s.pages.append(page)
            return True

    def add_sealed_page(self, page: PageRecord, *, epoch: str | None = None) -> bool:
        """See :meth:`Store.add_sealed_page`: checked and stored under one lock hold."""
        with self._open_lock():
            return super().add_sealed_page(page, epoch=epoch)

    def session_epoch(self, session: str) -> str | None:
        """See :meth:`Store.session_epoch`: the session record's own, made with it."""
        with self._open_lock():
            s = self._get(session)
            return s.epoch if s is not None and s.turns else ""

    def page_count(self, session: str) -> int:
        with self._open_lock():
            s = self._get(session)
            return len(s.pages) if s else 0

    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        with self._open_lock():
            s = self._get(session)
            return list(s.pages[max(start, 0) : max(stop, 0)]) if s else []

    # ------------------------------------------------------------------ blob cache
    def put_blob(self, session: str, key: str, data: bytes) -> None:
        with self._open_lock():
            self._ensure(session).blobs[key] = bytes(data)

    def put_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        """See :meth:`Store.put_page_blob`: looked up and written under one lock hold."""
        with self._open_lock():
            return super().put_page_blob(page, key, data)

    def get_blob(self, session: str, key: str) -> bytes | None:
        with self._open_lock():
            s = self._get(session)
            return s.blobs.get(key) if s else None

    def get_blobs(self, session: str, keys: Sequence[str]) -> list[bytes | None]:
        with self._open_lock():
            s = self._get(session)
            return [s.blobs.get(k) for k in keys] if s else [None] * len(keys)

    # ------------------------------------------------------------------ session state
    def swap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        """See :meth:`Store.swap_state`: compared and written under one hold of the lock
        every other call takes, so no write or delete slips in between."""
        with self._open_lock():
            return swap_state_locked(self, session, key, expected, data, page)

    # ------------------------------------------------------------------ sessions
    def sessions(self) -> Iterator[str]:
        with self._open_lock():
            ids = [k for k, s in self._data.sessions.items() if s.turns]
        return iter(ids)

    def delete_session(self, session: str) -> None:
        with self._open_lock():
            self._data.sessions.pop(session, None)

    def forget_turns(self, session: str, before_seq: int) -> int:
        with self._open_lock():
            s = self._get(session)
            if s is None:
                return 0
            dropped = 0
            stop = min(max(before_seq, 0), len(s.turns))
            for i in range(s.forgotten, stop):
                if s.turns[i] is not None:
                    s.turns[i] = None
                    dropped += 1
            s.forgotten = max(s.forgotten, stop)
            return dropped
