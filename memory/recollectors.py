"""Who reads a memory's pages back when they are sealed or reach a new tier.

``OpticalMemory(recollect=...)`` picks one: ``"lazy"`` has none (pages are read when a
context's text or a recall needs them), ``"background"`` a :class:`ThreadRecollector`
(a thread of this process), ``"queue"`` a :class:`QueueRecollector` (workers elsewhere,
fed through a Redis Stream: :mod:`opticmem.recollect_queue`). Each takes pages with
``submit``, waits with ``wait`` (:meth:`OpticalMemory.flush`) and stops with ``stop``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from opticmem.artefacts import Artefacts, Job
from opticmem.codecs import CodecSlot
from opticmem.errors import ConfigurationError, StoreError, StoreUnavailableError
from opticmem.forks import renew_in_forked_child
from opticmem.lru import LRU
from opticmem.records import PageRecord
from opticmem.render import RenderSettings

if TYPE_CHECKING:
    from opticmem.recollect_queue import RedisRecollectQueue

log = logging.getLogger(__name__)

PageRef = tuple[()] | tuple[int, int, int, int, int, float, float, int, str]
"""What identifies a sealed page: its number, span, times, the hash of its transcript and
the digest of the pages before it (a session deleted or expired and begun again numbers
its new pages from 0); ``()`` when there is no page."""


def page_ref(page: PageRecord) -> PageRef:
    return (page.page_no, page.first_seq, page.first_line, page.last_seq, page.end_line,
            page.first_ts, page.last_ts, hash(page.transcript), page.prev)


JobKey = tuple[str, str, PageRef]
"""What identifies a page to read at a tier: its session, the tier's name and the page."""


class Recollector(Protocol):
    def submit(self, session: str, jobs: Sequence[Job]) -> None:
        """Have ``jobs`` of ``session`` read back (each page once per tier)."""

    def wait(self, timeout: float | None) -> bool:
        """Wait until every page submitted is dealt with (``True``) or ``timeout`` passes."""

    def stop(self, timeout: float | None = None) -> bool:
        """Submit nothing more; ``False`` if work in hand outlasted ``timeout`` seconds
        (``None``: waited for as long as it takes)."""


class FailureLog:
    """Logs a failure's traceback once, its repeats at DEBUG.

    A codec or server that fails for good (out of memory, a broken install, Redis down)
    fails every batch; a traceback per batch would bury the application's own log."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._reported: LRU[tuple[str, str], bool] = LRU(64)

    def report(self, exc: Exception, *sessions: str) -> None:
        where = (f" for session{'s' if len(sessions) > 1 else ''} "
                 + ", ".join(map(repr, sessions))) if sessions else ""
        key = (type(exc).__qualname__, str(exc))
        if self._reported.get(key):
            log.debug("%s failed again%s: %r", self.what, where, exc)
            return
        self._reported.put(key, True)
        log.error("%s failed%s (repeats of this failure are logged at DEBUG)",
                  self.what, where, exc_info=exc)


class SeenPages:
    """The pages a recollector has taken, each once per tier: by session, tier and the
    page's identity — not its number, as a session deleted or expired and begun again
    numbers its new pages from 0. Bounded; the caller holds its own lock around it."""

    def __init__(self) -> None:
        self._lru: LRU[JobKey, bool] = LRU(100_000)

    @staticmethod
    def key(session: str, job: Job) -> JobKey:
        """What identifies ``job`` of ``session``: the session, tier and page."""
        return (session, job.tier.value, page_ref(job.page))

    def fresh(self, session: str, jobs: Sequence[Job]) -> list[Job]:
        """Those of ``jobs`` not taken before, now marked taken."""
        out = []
        for j in jobs:
            key = self.key(session, j)
            if not self._lru.get(key):
                self._lru.put(key, True)
                out.append(j)
        return out

    def forget(self, session: str, jobs: Sequence[Job]) -> None:
        """Let ``jobs`` be taken again (their reading or queueing failed)."""
        self.forget_pairs([(session, j) for j in jobs])

    def forget_pairs(self, pairs: Sequence[tuple[str, Job]]) -> None:
        """:meth:`forget` for ``(session, job)`` pairs of any sessions."""
        for session, j in pairs:
            self._lru.discard(self.key(session, j))


class ThreadRecollector:
    """``recollect="background"``: one daemon thread reading queued pages in batches.

    Fork-safe: a forked child has none of its parent's threads, so in a child the worker
    drops what the parent had queued and starts its own thread on the first page queued
    there (the locks are made anew, as the parent's may have been held at the fork).
    A batch whose reading fails is read again page by page (the others of a page the
    codec cannot read are still read), and a page whose reading fails is forgotten as
    queued, so that a later context queues it again (a transient codec or store failure
    does not leave it unread for good).

    A page waits in the queue once per tier, however long the queue. The queue holds at
    most ``max_pending`` pages (default :data:`MAX_PENDING`): when pages are sealed faster
    than the codec reads them, the oldest waiting are dropped (logged once per burst, at
    INFO) — the pages most likely to have decayed to another tier or out of context since.
    Nothing is lost: recollections are a cache, and a page not read in the background is
    read when a context's text or a recall needs it (as in lazy mode); a dropped page is
    also forgotten as queued, so a later context that shows it queues it again.
    :meth:`wait` waits for the pages still queued, not for those dropped.
    """

    MAX_PENDING = 4096
    """Pages that may wait to be read before the oldest are dropped."""

    def __init__(self, artefacts: Artefacts, batch: int = 16,
                 max_pending: int | None = None) -> None:
        max_pending = self.MAX_PENDING if max_pending is None else max_pending
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(
                f"max_pending must be a whole number of pages ≥ 1, not {max_pending!r}")
        self._artefacts = artefacts
        self._batch = batch
        self.max_pending = max_pending
        self.dropped = 0
        """Pages dropped from a full queue since this recollector was made (read lazily)."""
        self._stopped = False
        self._failures = FailureLog("background recollection")
        self.after_fork_in_child()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        """A new queue, lock and no thread (at construction, and in a forked child)."""
        self._seen = SeenPages()
        self._cond = threading.Condition(threading.Lock())
        self._jobs: OrderedDict[JobKey, tuple[str, Job]] = OrderedDict()
        """The pages waiting, oldest first, by :meth:`SeenPages.key`: the marks in
        ``_seen`` are bounded, so they alone would let a page that waits behind more
        pages than they keep be queued again."""
        self._busy = 0  # jobs the thread has taken and not finished
        self._dropping = False  # pages dropped since the queue was last empty (logged)
        self._thread: threading.Thread | None = None

    def _ensure_thread(self) -> None:
        """Start the thread if this process has none yet. Called holding ``_cond``."""
        if self._thread is None and not self._stopped:
            self._thread = threading.Thread(target=self._run, name="opticmem-recollect",
                                            daemon=True)
            self._thread.start()

    def start(self) -> None:
        with self._cond:
            self._ensure_thread()

    def submit(self, session: str, jobs: Sequence[Job]) -> None:
        with self._cond:
            if self._stopped:
                return
            if not self._jobs:
                self._dropping = False  # drained since the last drop: a new burst
            fresh = self._seen.fresh(session, jobs)
            for j in fresh:
                self._jobs.setdefault(SeenPages.key(session, j), (session, j))
            if len(self._jobs) > self.max_pending:
                self._drop_oldest(len(self._jobs) - self.max_pending)
            if fresh:
                self._ensure_thread()
                self._cond.notify_all()

    def _drop_oldest(self, n: int) -> None:
        """Drop the ``n`` pages that have waited longest, forgotten as queued (a later
        context queues them again; until read, they are read when needed). Called
        holding ``_cond``."""
        dropped = [self._jobs.popitem(last=False)[1] for _ in range(n)]
        self._seen.forget_pairs(dropped)
        self.dropped += n
        if not self._dropping:
            self._dropping = True
            log.info("background recollection: more than %d pages waiting to be read; "
                     "dropping the oldest (they are read when a context or recall needs "
                     "them; further drops until the queue empties are not logged)",
                     self.max_pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                batch = [self._jobs.popitem(last=False)[1]
                         for _ in range(min(self._batch, len(self._jobs)))]
                self._busy = len(batch)
            try:
                failed = self._read(batch)
            except BaseException:
                # Not an Exception (a codec letting SystemExit or an interrupt out): the
                # thread ends. Its batch used to stay counted busy and the thread stay
                # taken, so flush() never returned and no page was read in the
                # background again. The batch is forgotten as queued and the next page
                # queued starts a new thread.
                with self._cond:
                    self._seen.forget_pairs(batch)
                    self._busy = 0
                    if self._thread is threading.current_thread():
                        self._thread = None
                    self._cond.notify_all()
                raise
            with self._cond:
                self._seen.forget_pairs(failed)
                self._busy = 0
                self._cond.notify_all()

    def _read(self, batch: Sequence[tuple[str, Job]]) -> list[tuple[str, Job]]:
        """Read ``batch`` in one call whatever sessions its pages come from — or, if that
        fails, page by page, so that one page the codec cannot read does not keep the
        others of its batch unread (they would be queued again together, and fail
        together, for as long as that page is in context). The pages that failed."""
        try:  # a background failure must not kill the worker: any Exception
            if self._artefacts.codec.get() is not None:
                self._artefacts.recollections_of(batch)
            return []
        except Exception as exc:
            if len(batch) == 1:
                self._failures.report(exc, batch[0][0])
                return list(batch)
            log.debug("a batch of %d pages failed (%r); reading them one by one",
                      len(batch), exc)
        failed = []
        for item in batch:
            if self._stopped:  # close() waits for this batch: leave the rest unread
                break
            try:
                self._artefacts.recollections_of([item])
            except Exception as exc:
                self._failures.report(exc, item[0])
                failed.append(item)
        return failed

    def wait(self, timeout: float | None) -> bool:
        """Wait until every queued page is read (``True``) or ``timeout`` seconds pass
        (one past what a lock can wait, such as ``math.inf``: no limit). Pages dropped
        from a full queue are not waited for: they are read when needed."""
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # else an OverflowError from the lock
        with self._cond:
            return self._cond.wait_for(
                lambda: self._stopped or (not self._jobs and not self._busy), timeout)

    def stop(self, timeout: float | None = None, *, wait: bool = True) -> bool:
        """Drop the pages still queued and (with ``wait``) wait up to ``timeout`` seconds
        (``None``: as long as it takes) for the batch being read now, if any, so that the
        store is not closed under it: ``False`` if that batch is still being read. Later
        submits are ignored."""
        if threading.current_thread() is self._thread:
            # The worker itself: a memory dropped unclosed in a reference cycle is freed
            # by a garbage collection that any allocation may run — here one of the
            # worker's, maybe while it holds ``_cond`` (not reentrant), so the finalizer's
            # stop waited on the worker's own lock and the thread never ended. No other
            # thread can be waiting on a memory that is gone: the flag alone ends the
            # loop, checked before the next batch is taken.
            self._stopped = True
            return True
        with self._cond:
            self._stopped = True
            self._jobs.clear()
            self._cond.notify_all()
            thread = self._thread
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True


class QueueRecollector:
    """``recollect="queue"``: pages go onto a Redis Stream that workers read
    (``opticmem worker``, :mod:`opticmem.recollect_worker`), which write the
    recollections into the shared store.

    Each page is queued once per tier by this process (as the thread does). A page that
    cannot be queued (the server is unreachable) is logged, forgotten as queued, and
    queued again by a later context. :meth:`wait` polls the queue until the entries this
    process queued are gone: read, found stale, or given up on (dead letters).

    The entries it remembers are looked up again, and those gone forgotten, whenever
    they have doubled since the last look (from :data:`PRUNE_AT`): a bot that never
    flushes keeps only about the entries still waiting, not one per page ever queued.
    """

    PRUNE_AT = 4096
    """Entries remembered before the first look at which of them are gone."""

    UNREACHABLE_S = 15.0
    """How long :meth:`wait` without a timeout polls a server it cannot reach."""

    def __init__(self, queue: RedisRecollectQueue, codec: CodecSlot,
                 settings: RenderSettings) -> None:
        self.queue = queue
        self._codec = codec
        self._settings = settings
        self._stopped = False
        self._failures = FailureLog("queueing pages for recollection")
        self.after_fork_in_child()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._seen = SeenPages()
        self._entries: dict[str, None] = {}
        """Entries this process queued and has not yet seen gone (insertion-ordered)."""
        self._submitting = 0
        """Submits now sending their pages: :meth:`wait` waits for them too."""
        self._prune_at = self.PRUNE_AT

    def submit(self, session: str, jobs: Sequence[Job]) -> None:
        with self._lock:
            if self._stopped:
                return
            fresh = self._seen.fresh(session, jobs)
            if not fresh:
                return
            self._submitting += 1
        try:
            # never loaded just for its name; "": whatever codec the workers read with
            entries = self.queue.submit(session, fresh, codec=self._codec.expected_name(),
                                        settings=self._settings)
        except StoreError as exc:
            self._failures.report(exc, session)
            with self._lock:
                self._seen.forget(session, fresh)
            return
        finally:
            with self._lock:
                self._submitting -= 1
        with self._lock:
            if self._stopped:  # stop() ran meanwhile: wait() no longer waits for any
                return
            self._entries.update(dict.fromkeys(entries))
            prune = len(self._entries) >= self._prune_at
            if prune:
                self._prune_at = len(self._entries) * 2  # one prune at a time
        if prune:
            self._prune()

    def _prune(self) -> None:
        """Forget the entries that are gone; look again when those left have doubled."""
        try:
            self._poll()
        except StoreError as exc:  # the next submit or wait looks again
            log.debug("could not look up queued pages: %s", exc)
        with self._lock:
            self._prune_at = max(self.PRUNE_AT, 2 * len(self._entries))

    def _poll(self) -> bool:
        """Forget the entries that are gone; ``True`` if none is left (nor being sent)."""
        with self._lock:
            if self._stopped:
                return True
            entries = list(self._entries)
        left = self.queue.unfinished(entries)
        with self._lock:
            for e in entries:
                if e not in left:
                    self._entries.pop(e, None)
            return not self._entries and not self._submitting

    def wait(self, timeout: float | None) -> bool:
        """Poll until every page this process queued (or is queueing) is gone from the
        queue (``True``) or ``timeout`` seconds pass (``False``). A server that cannot be
        reached is polled again until then; if it still cannot be at the end (without a
        timeout: after :data:`UNREACHABLE_S`), its
        :class:`~opticmem.errors.StoreUnavailableError` is raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.01
        failing_since: float | None = None
        while True:
            failure: StoreUnavailableError | None = None
            try:
                if self._poll():
                    return True
                failing_since = None
            except StoreUnavailableError as exc:  # a restart, a failover: poll again
                failure = exc
            now = time.monotonic()
            if failure is not None:
                failing_since = now if failing_since is None else failing_since
                limit = deadline if deadline is not None else failing_since + self.UNREACHABLE_S
                if now >= limit:
                    raise failure
            else:
                limit = deadline if deadline is not None else math.inf
                if now >= limit:
                    return False
            time.sleep(min(delay, limit - now))
            delay = min(2 * delay, 0.5)

    def stop(self, timeout: float | None = None) -> bool:
        """Queue nothing more. Entries already queued stay for the workers (they are
        durable in Redis), but :meth:`wait` no longer waits for them; nothing in hand to
        wait for (``True``)."""
        with self._lock:
            self._stopped = True
            self._entries.clear()
        return True
