"""The store interface every backend fills: in-process, SQLite file, Redis.

A store keeps four things per session:

* the **turn log** — append-only, each turn numbered by an atomic per-session sequence,
  durable before ``append_turn`` returns (the archive; never changed, only forgotten on
  explicit request);
* the **page log** — append-only sealed pages; writing page ``n`` succeeds only when the
  log holds exactly ``n`` pages, and a second writer sealing the same page gets ``False``
  (page packing is deterministic, so its page is identical). A page sealed from turns
  the writer read is added with :meth:`Store.add_sealed_page`, which refuses it once its
  turns are gone or, given the session's epoch (:meth:`Store.session_epoch`, a token of
  the session's life), once the session was deleted and begun again;
* the **blob cache** — derived artefacts (PNG per tier, vision tokens, recollected
  text) under short string keys; recomputable, so a store may evict them;
* **session state** — a few small values the memory must not lose (the decay mark and
  age clock that keep budget-pressure and age decay monotone). By default kept as blobs
  under ``state/``; a backend that evicts blobs overrides :meth:`Store.put_state` /
  :meth:`Store.get_state`. :meth:`Store.swap_state` writes a value only if it is still
  the one the caller read (a compare-and-set), so processes raising one value never
  undo each other's writes; a backend shared by processes makes it one atomic step.

Every method has an ``a``-prefixed async twin. This base class runs the sync method in a
worker thread (a write's twin, cancelled once its thread has begun, returns only when the
thread is done: :func:`write_in_thread`); backends with a native async client (Redis)
override the twins.
Methods validate nothing about session ids: :mod:`opticmem.sessions` does that before a
store is called, and backends must keep any string id from reaching another session's data.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

from opticmem.errors import PageConflictError
from opticmem.forks import ProcessLock
from opticmem.records import PageRecord, Turn


def same_page(a: PageRecord, b: PageRecord) -> bool:
    """True if ``a`` and ``b`` show the same thing at the same place: their artefacts (drawn
    from the transcript with the render settings) are interchangeable."""
    return (a.session == b.session and a.page_no == b.page_no and a.first_seq == b.first_seq
            and a.first_line == b.first_line and a.render_key == b.render_key
            and a.transcript == b.transcript)


def sealed_over_missing_turns(page: PageRecord, held: int) -> str:
    """The message of :meth:`Store.add_sealed_page`'s refusal: the session's turn log holds
    ``held`` turns, not the page's."""
    return (f"session {page.session[:200]!r}: page {page.page_no} holds turns up to seq "
            f"{page.last_seq} but the turn log holds {held} turns (the session was deleted, "
            "maybe begun again, since the page was made); not stored")


def sealed_in_another_life(page: PageRecord) -> str:
    """The message of :meth:`Store.add_sealed_page`'s refusal of a page sealed from another
    life of its session than the one the store holds now (another epoch)."""
    return (f"session {page.session[:200]!r}: page {page.page_no} was sealed from the turns "
            "of an earlier life of the session (deleted and begun again since the page was "
            "made); not stored")


def new_epoch() -> str:
    """A fresh session epoch: 128 random bits in hex, so that no two lives of a session
    (in any process, on any machine) get the same one."""
    return secrets.token_hex(16)


P = ParamSpec("P")
T = TypeVar("T")


async def write_in_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``func(*args, **kwargs)`` in the event loop's default executor, as
    :func:`asyncio.to_thread` runs it, for a call that writes: a cancelled caller waits
    for a thread that has begun (as anyio's threads do), so that the write is over when
    ``CancelledError`` reaches it.

    A thread cannot be stopped. With :func:`asyncio.to_thread`, a write whose caller timed
    out (``asyncio.wait_for(memory.aadd(...), 1)``) went on in the background, and the
    caller's next call ran beside it: the next turn could be stored before the cancelled
    one, and a ``delete_session`` could run before the cancelled turn was stored, which then
    began the deleted session again. Cancelled before its thread has begun, the write
    never runs.
    """
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return  # cancelled while it waited for a thread
        try:
            result = context.run(func, *args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task
            done.set_exception(exc)
        else:
            done.set_result(result)

    loop.run_in_executor(None, run)
    try:
        return await asyncio.wrap_future(done)
    except asyncio.CancelledError as cancelled:
        if not done.cancel():  # begun: wait for its end, however often cancelled again
            while not done.done():
                try:
                    await asyncio.wrap_future(done)
                except asyncio.CancelledError:
                    continue
                except BaseException:  # its error: the cancelled caller wants no result
                    break
        raise cancelled


_SWAP_LOCK = ProcessLock(threading.RLock)
"""Serialises the default :meth:`Store.swap_state` within this process."""


def swap_state_locked(
    store: Store, session: str, key: str, expected: bytes | None, data: bytes,
    page: PageRecord | None,
) -> bool:
    """:meth:`Store.swap_state` through the store's :meth:`~Store.get_pages`,
    :meth:`~Store.get_state` and :meth:`~Store.put_state`, for a caller that holds a lock
    making the three one step (against other swaps, at least)."""
    if page is not None:
        now = store.get_pages(session, page.page_no, page.page_no + 1)
        if not now or not same_page(now[0], page):
            return False
    if store.get_state(session, key) != expected:
        return False
    store.put_state(session, key, data)
    return True


class Store(ABC):
    """Abstract base of opticmem stores. See the module docstring for the contract."""

    # ------------------------------------------------------------------ turn log
    @abstractmethod
    def append_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        """Append one turn; its ``seq`` is the session's next number. Durable on return."""

    def append_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        """Append several ``(role, text, ts, meta)`` turns in order (bulk ingest).

        Backends may override this to batch round trips; seqs need not be contiguous if
        other writers append concurrently, but their order is kept.
        """
        return [self.append_turn(session, r, t, ts, m) for r, t, ts, m in items]

    @abstractmethod
    def turn_count(self, session: str) -> int:
        """Number of turns ever appended (the next ``seq``); 0 for an unknown session."""

    @abstractmethod
    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        """Turns with ``start <= seq < stop`` in order; forgotten turns are left out."""

    # ------------------------------------------------------------------ page log
    @abstractmethod
    def add_page(self, page: PageRecord) -> bool:
        """Store ``page`` if ``page.page_no == page_count``; ``False`` if that page exists.

        Raises :class:`~opticmem.errors.PageConflictError` if ``page_no`` would leave a gap.
        """

    def add_sealed_page(self, page: PageRecord, *, epoch: str | None = None) -> bool:
        """:meth:`add_page`, but only while the session's turn log still holds the page's
        turns (more than ``page.last_seq``) and, given ``epoch``, only while the session
        is still in the life :meth:`session_epoch` named by it;
        :class:`~opticmem.errors.PageConflictError` (nothing stored) if not.

        What the memory seals with: the session may be deleted (a reset from another
        process) after the page was made from its turns. Stored then, the page would stand
        over an empty or shorter turn log, and every later context of the session fail
        with :class:`~opticmem.errors.CorruptRecordError` (a lost turn log) until it is
        deleted again. Begun again meanwhile and grown past the page's turns, the session
        would show the old life's text as its own: only the epoch tells the two lives
        apart. ``""`` matches no life. The built-in stores check and store in one step;
        this default checks first, so a delete may still slip in between.
        """
        held = self.turn_count(page.session)
        if held <= page.last_seq:
            raise PageConflictError(sealed_over_missing_turns(page, held))
        if epoch is not None and (not epoch or self.session_epoch(page.session) != epoch):
            raise PageConflictError(sealed_in_another_life(page))
        return self.add_page(page)

    def session_epoch(self, session: str) -> str | None:
        """A token naming the session's current life, for :meth:`add_sealed_page`: the
        same until :meth:`delete_session` (or an expiry) ends the life, never the same for
        two lives; ``""`` while the store holds no turn log of the session (never begun,
        or deleted); ``None`` from a store that keeps no epochs (this default).

        Read before the turns and the page a writer seals from, and checked again where
        the sealed page is added, it proves that no delete came in between: a page sealed
        from a deleted life is refused even when the new life has grown as many turns.
        The built-in stores give a life its epoch when it is first asked for (so sessions
        stored before epochs existed get one too) and drop it with the session.
        """
        return None

    @abstractmethod
    def page_count(self, session: str) -> int:
        """Number of sealed pages in the session."""

    @abstractmethod
    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        """Pages with ``start <= page_no < stop`` in order."""

    def get_pages_of(self, refs: Sequence[tuple[str, int]]) -> list[PageRecord | None]:
        """Page ``n`` of each ``(session, n)`` of any sessions; ``None`` where that session
        holds no such page (backends batch this into one round trip: a worker looks up
        the pages of many sessions at once)."""
        out: list[PageRecord | None] = []
        for session, n in refs:
            got = self.get_pages(session, n, n + 1) if n >= 0 else []
            out.append(got[0] if got else None)
        return out

    # ------------------------------------------------------------------ blob cache
    @abstractmethod
    def put_blob(self, session: str, key: str, data: bytes) -> None:
        """Cache a derived artefact of the session under ``key``."""

    @abstractmethod
    def get_blob(self, session: str, key: str) -> bytes | None:
        """The cached artefact, or ``None`` if absent (never cached, or evicted)."""

    def get_blobs(self, session: str, keys: Sequence[str]) -> list[bytes | None]:
        """Several artefacts at once (backends batch this into one round trip)."""
        return [self.get_blob(session, k) for k in keys]

    def get_blobs_of(self, refs: Sequence[tuple[str, str]]) -> list[bytes | None]:
        """The artefact under ``key`` of each ``(session, key)`` of any sessions (one
        :meth:`get_blobs` per session here; one round trip on Redis)."""
        found: list[bytes | None] = [None] * len(refs)
        by_session: dict[str, list[int]] = {}
        for i, (session, _) in enumerate(refs):
            by_session.setdefault(session, []).append(i)
        for session, idx in by_session.items():
            for i, data in zip(idx, self.get_blobs(session, [refs[i][1] for i in idx]),
                               strict=True):
                found[i] = data
        return found

    def put_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        """Cache an artefact drawn or read from ``page`` — only if ``page.session`` still
        holds that page (:func:`same_page`); ``False`` (nothing written) if not.

        A page is drawn and read for seconds (a worker's queue, minutes): its session
        may be deleted, expire, or be deleted and begun again meanwhile, and its new page
        of the same number has the same cache key. A plain :meth:`put_blob` would then
        bring a deleted session's keys back, or give the new page the old one's
        reading. The default looks the page up and then writes, which leaves a window
        between the two; a backend must close it (the bundled ones do: one lock hold in
        memory, one write transaction in SQLite, one script on Redis).
        """
        now = self.get_pages(page.session, page.page_no, page.page_no + 1)
        if not now or not same_page(now[0], page):
            return False
        self.put_blob(page.session, key, data)
        return True

    def put_page_blobs(self, blobs: Sequence[tuple[PageRecord, str, bytes]]) -> list[bool]:
        """:meth:`put_page_blob` for each ``(page, key, data)``, of any sessions; whether
        each was written (one round trip on Redis)."""
        return [self.put_page_blob(page, key, data) for page, key, data in blobs]

    # ------------------------------------------------------------------ session state
    def put_state(self, session: str, key: str, data: bytes) -> None:
        """Keep a small value of session state (under 1 KiB) that must never be evicted.

        Deleted with the session. The default stores it as the blob ``state/{key}``,
        which is right for backends that never evict blobs.
        """
        self.put_blob(session, f"state/{key}", data)

    def get_state(self, session: str, key: str) -> bytes | None:
        """The value :meth:`put_state` kept, or ``None``."""
        return self.get_blob(session, f"state/{key}")

    def swap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        """Keep ``data`` as the state ``key`` only if the stored value is still ``expected``
        (``None``: no value stored) and, given ``page``, only while ``session`` still holds
        that page (:func:`same_page`); whether it wrote.

        A compare-and-set. Contexts of one session assembled at once, in threads or in
        processes sharing the store, each read the decay mark, raise it and write it
        back: with :meth:`put_state` the one that read first could write last and lower
        it. With a swap, the loser reads again and raises what is now there. ``page``
        keeps a value out of a session deleted (maybe begun again) since it was read: its
        state went with it, so an ``expected`` of ``None`` alone would match again.

        The default compares and writes through :meth:`get_pages`, :meth:`get_state` and
        :meth:`put_state` under a lock of this process: atomic against the swaps of this
        process only. A backend that several processes share must make it one step (the
        bundled ones do: one lock hold in memory, one write transaction in SQLite, one
        script on Redis).
        """
        with _SWAP_LOCK:
            return swap_state_locked(self, session, key, expected, data, page)

    # ------------------------------------------------------------------ sessions
    @abstractmethod
    def sessions(self) -> Iterator[str]:
        """Ids of the sessions that hold at least one turn (order unspecified)."""

    @abstractmethod
    def delete_session(self, session: str) -> None:
        """Forget a session completely: turns, pages and blobs."""

    @abstractmethod
    def forget_turns(self, session: str, before_seq: int) -> int:
        """True forgetting: drop the archived text of turns with ``seq < before_seq``.

        Pages (and their transcripts) stay. Returns the number of turns dropped.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or file handles. The store is unusable afterwards."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ async twins
    async def aappend_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        return await write_in_thread(self.append_turn, session, role, text, ts, meta)

    async def aappend_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        return await write_in_thread(self.append_turns, session, items)

    async def aturn_count(self, session: str) -> int:
        return await asyncio.to_thread(self.turn_count, session)

    async def aget_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        return await asyncio.to_thread(self.get_turns, session, start, stop)

    async def aadd_page(self, page: PageRecord) -> bool:
        return await write_in_thread(self.add_page, page)

    async def apage_count(self, session: str) -> int:
        return await asyncio.to_thread(self.page_count, session)

    async def aget_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        return await asyncio.to_thread(self.get_pages, session, start, stop)

    async def aput_blob(self, session: str, key: str, data: bytes) -> None:
        await write_in_thread(self.put_blob, session, key, data)

    async def aput_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        return await write_in_thread(self.put_page_blob, page, key, data)

    async def aget_blob(self, session: str, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get_blob, session, key)

    async def aget_blobs(self, session: str, keys: Sequence[str]) -> list[bytes | None]:
        return await asyncio.to_thread(self.get_blobs, session, keys)

    async def aput_state(self, session: str, key: str, data: bytes) -> None:
        await write_in_thread(self.put_state, session, key, data)

    async def aget_state(self, session: str, key: str) -> bytes | None:
        return await asyncio.to_thread(self.get_state, session, key)

    async def aswap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        return await write_in_thread(self.swap_state, session, key, expected, data,
                                     page=page)

    async def asessions(self) -> list[str]:
        return await asyncio.to_thread(lambda: list(self.sessions()))

    async def adelete_session(self, session: str) -> None:
        await write_in_thread(self.delete_session, session)

    async def aforget_turns(self, session: str, before_seq: int) -> int:
        return await write_in_thread(self.forget_turns, session, before_seq)

    async def aclose(self) -> None:
        await write_in_thread(self.close)
