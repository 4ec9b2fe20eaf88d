"""A worker that reads queued pages back for every bot of a tenant: ``opticmem worker``.

Run one per GPU (or several on one machine: each is a consumer of the same group, and
Redis gives every entry to one of them). A worker takes up to ``batch_size`` entries at
a time from the tenant's queue (:mod:`opticmem.recollect_queue`), reads the pages from
the store, encodes and decodes them in one batch per tier whatever session they come
from, writes the recollections into the store under the codec's name, and
acknowledges the entries (deleting them: the stream holds only the backlog).

What can go wrong, and what the worker does:

* **A page is gone** (the session was deleted, expired, or begun again with a different
  page under that number): nothing to read; the entry is acknowledged (``stale``).
* **An entry that cannot be read** (not written by opticmem), **names another codec**
  (the memory would never find this worker's readings), **a page packed with other
  render settings** than its entry says, or **a page record the store cannot read**
  (damaged): moved to the dead-letter stream at once, the rest of the batch read.
* **Reading fails** (a store error, or whatever the model raises): the batch is retried
  page by page, and the pages that fail are left pending. After ``claim_idle`` seconds
  any worker of the group (this one included) claims them again (``XAUTOCLAIM``), as it
  claims the entries of a worker that died mid-batch. An entry delivered more than
  ``max_deliveries`` times is moved to the dead-letter stream instead of being tried
  again — so a page that kills its worker (out of memory) cannot kill every worker in
  turn.
* **A worker restarts under the name it had** (``--consumer``, e.g. a pod's name): the
  entries that name still held are taken back at its first batches, not after
  ``claim_idle``.
* **Redis is unreachable**: the store's retries apply to page reads and writes; a step
  that still fails is logged and the loop backs off (up to 30 s) and goes on — except in
  a run with ``once`` (a job), which gives up after ``once_patience`` seconds.

Writing a recollection twice (two workers, or a retry after a lost acknowledgement) is
harmless: the codec is deterministic and the blob is overwritten with the same bytes.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opticmem.artefacts import Artefacts, Item, Job
from opticmem.codecs import CodecSlot
from opticmem.encoder.codec import Codec
from opticmem.errors import ConfigurationError, CorruptRecordError, OpticMemError, StoreError
from opticmem.recollect_limits import MAX_BATCH_SIZE as MAX_BATCH_SIZE
from opticmem.recollect_limits import MAX_CLAIM_IDLE as MAX_CLAIM_IDLE
from opticmem.recollect_queue import GROUP, QueuedPage, RedisRecollectQueue, group_is_gone
from opticmem.recollectors import FailureLog
from opticmem.records import PageRecord
from opticmem.redis_store import REDIS_ERRORS, RedisStore
from opticmem.render import RenderSettings

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]
T = TypeVar("T")

_STEP_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, OpticMemError)
"""What a step may fail with that the loop rides out: Redis away, a store or codec error."""


@dataclass(frozen=True, slots=True)
class BatchReport:
    """What one step of the worker did."""

    taken: int
    """Entries taken off the queue (new ones and reclaimed ones)."""
    read: int
    """Pages decoded by this worker."""
    cached: int
    """Pages some worker (or the memory itself) had read already, and entries of a page
    that another entry of the batch had this worker read."""
    stale: int
    """Pages no longer in their session."""
    dead: int
    """Entries moved to the dead-letter stream."""
    failed: int
    """Pages whose reading failed, left for a retry."""
    seconds: float
    tiers: dict[str, int] = field(default_factory=dict)
    """Pages read or found read, by tier."""


@dataclass(slots=True)
class WorkerTotals:
    """What :meth:`RecollectWorker.run` did in all."""

    batches: int = 0
    read: int = 0
    cached: int = 0
    stale: int = 0
    dead: int = 0
    failed: int = 0
    seconds: float = 0.0

    def add(self, r: BatchReport) -> None:
        self.batches += 1
        self.read += r.read
        self.cached += r.cached
        self.stale += r.stale
        self.dead += r.dead
        self.failed += r.failed
        self.seconds += r.seconds


def default_consumer() -> str:
    """``host-pid``: unique among live workers, readable in ``XINFO CONSUMERS``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class RecollectWorker:
    """Reads the pages queued for ``store``'s tenant with ``codec`` (see the module
    docstring). ``claim_idle`` is how long (seconds) an entry may sit taken by a worker
    before another may claim it: longer than a batch takes. ``draw_workers`` processes
    draw the pages' images in parallel (0: drawn in this process): a GPU reads pages
    faster than one CPU core draws them (``benchmarks/results/queue_speed.md``).
    ``forget_idle``: workers of the group that hold no entries and were not heard from
    for this long (killed ones) are taken out of it, checked every ten minutes.
    Close the worker (or use it as a context manager) to stop them. ``queue`` (default:
    the store's tenant's) must serve the store's tenant (else
    :class:`~opticmem.errors.ConfigurationError`)."""

    def __init__(
        self,
        store: RedisStore,
        codec: Codec,
        *,
        consumer: str | None = None,
        batch_size: int = 32,
        max_deliveries: int = 5,
        claim_idle: float = 300.0,
        decode_max_tokens: int | None = None,
        draw_workers: int = 0,
        forget_idle: float = 3600.0,
        queue: RedisRecollectQueue | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("max_deliveries", max_deliveries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a whole number ≥ 1, got {value!r}")
        if batch_size > MAX_BATCH_SIZE:
            raise ConfigurationError(
                f"batch_size must be at most {MAX_BATCH_SIZE:,}, got {batch_size!r}")
        if isinstance(draw_workers, bool) or not isinstance(draw_workers, int) or draw_workers < 0:
            raise ConfigurationError(
                f"draw_workers must be a whole number ≥ 0, got {draw_workers!r}")
        for name, seconds in (("claim_idle", claim_idle), ("forget_idle", forget_idle)):
            if not 0 < seconds <= MAX_CLAIM_IDLE:  # NaN too
                raise ConfigurationError(
                    f"{name} must be positive seconds, at most {MAX_CLAIM_IDLE:g}, got "
                    f"{seconds!r}")
        if queue is not None and queue.tenant != store.tenant:
            # Its entries name sessions of the queue's tenant: looked up in this store's,
            # every one would be acknowledged as gone (or, where the ids and pages
            # match, read into the wrong tenant), so that tenant's pages go unread.
            raise ConfigurationError(
                f"the recollection queue serves tenant {queue.tenant!r} but the store holds "
                f"tenant {store.tenant!r}: open the store with ?tenant={queue.tenant} (or "
                "leave queue out: the store's tenant's queue is used)")
        self.store = store
        self.codec = codec
        self.queue = queue or RedisRecollectQueue.for_store(store)
        self.consumer = consumer or default_consumer()
        self.batch_size = batch_size
        self.max_deliveries = max_deliveries
        self.claim_idle = claim_idle
        self.forget_idle = forget_idle
        """Workers silent this long and holding nothing are taken out of the group."""
        self._pruned_at = -float("inf")
        self._pool = DrawPool(draw_workers) if draw_workers else None
        self._closed = False
        self._artefacts = Artefacts(store, codec.render_settings or RenderSettings(),
                                    CodecSlot(codec), decode_max_tokens=decode_max_tokens,
                                    draw_pool=self._pool, on_recollected=self._decoded_one)
        self._decoded = 0
        """Pages this worker's codec has read (the artefacts report each one)."""
        self._failures = FailureLog("reading queued pages")
        self._group_ready = False
        self.once_patience = 60.0
        """With ``run(once=True)``: seconds of failing steps before the run gives up."""
        self._claim_from = "0-0"
        """Where the next ``XAUTOCLAIM`` starts in the group's pending entries."""
        self._inherited: list[str] | None = None
        """The entries this consumer name held when the worker first took any (``None``:
        not looked up yet), taken back a batch at a time: a worker restarted under the
        name it died with (a pod's name) reads them at once, not after ``claim_idle``."""

    def _decoded_one(self, session: str, page_no: int) -> None:
        self._decoded += 1

    def close(self) -> None:
        """Stop the drawing processes, and :meth:`run` after the batch in hand (which is
        then drawn in this process), and leave the consumer group if this worker holds
        no entries; the store is the caller's to close. Safe to call from another
        thread while the worker runs."""
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._group_ready:
            try:
                self.queue.leave(self.consumer)
            except StoreError as exc:  # it stays listed in the group; nothing is lost
                log.debug("worker %s could not leave the group: %s", self.consumer, exc)

    def __enter__(self) -> RecollectWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ taking entries
    def _take(self, block: float) -> tuple[list[Entry], dict[str, int]]:
        """Entries to work on, and how often each was delivered: reclaimed ones first
        (idle for ``claim_idle`` in some worker's hands), then new ones.

        If the consumer group is gone (a Redis without persistence restarted, or the
        stream was deleted; bots then queue onto a new stream with no group), it is made
        again and the entries taken from it: a worker that only retried would fail with
        ``NOGROUP`` for ever while the backlog grew."""
        try:
            return self._take_once(block)
        except StoreError as exc:
            if not group_is_gone(exc):
                raise
            log.warning("the recollection queue's consumer group is gone (the stream was "
                        "deleted, or Redis restarted without persistence); making it again")
            self._group_ready = False
            self._claim_from = "0-0"
            self._inherited = []  # the old group's entries are gone with it
            return self._take_once(block)

    def _take_once(self, block: float) -> tuple[list[Entry], dict[str, int]]:
        q = self.queue
        client: Any = q.client
        if not self._group_ready:
            q.ensure_group()
            self._group_ready = True
        if time.monotonic() - self._pruned_at >= min(600.0, self.forget_idle):
            self._pruned_at = time.monotonic()
            for name in q.prune(self.forget_idle, keep=self.consumer):
                log.info("took silent worker %s (holding nothing) out of the group", name)
        idle_ms = max(1, round(self.claim_idle * 1000))
        with q.failing_as("taking entries"):
            # One call looks at up to 10 × count pending entries: go on from where the
            # last one stopped, or idle entries behind many busy ones are never reached.
            claimed = client.xautoclaim(q.key, GROUP, self.consumer, idle_ms,
                                        start_id=self._claim_from, count=self.batch_size)
            self._claim_from = _id(claimed[0])  # "0-0": the whole list was looked at
            entries: list[Entry] = [(_id(e), f) for e, f in claimed[1] if f is not None]
            entries += self._take_inherited(client, {e for e, _ in entries})
            deliveries: dict[str, int] = {}
            if entries:
                pipe = client.pipeline(transaction=False)
                for e, _ in entries:
                    pipe.xpending_range(q.key, GROUP, e, e, 1)
                for (e, _), info in zip(entries, pipe.execute(), strict=True):
                    deliveries[e] = int(info[0]["times_delivered"]) if info else 1
            room = self.batch_size - len(entries)
            if room > 0:
                more = self._claim_from != "0-0"  # pending entries left to look at
                # no longer than the client's socket_timeout allows: an idle queue must
                # give an empty reply, not a timeout error that backs the worker off
                wait = (None if entries or more or block <= 0
                        else max(1, round(q.longest_block(block) * 1000)))
                got = client.xreadgroup(GROUP, self.consumer, {q.key: ">"}, count=room,
                                        block=wait)
                for _, stream_entries in got or []:
                    for e, f in stream_entries:
                        entries.append((_id(e), f))
                        deliveries[_id(e)] = 1
        return entries, deliveries

    def _take_inherited(self, client: Any, taken: set[str]) -> list[Entry]:
        """Entries this consumer name held before the worker started, up to the batch's
        room (beside the ``taken`` ones), claimed again (``XCLAIM``, counted as a
        delivery); ones the stream no longer has are dropped from the group by Redis."""
        q = self.queue
        if self._inherited is None:
            rows = client.xpending_range(q.key, GROUP, "-", "+", 10_000,
                                         consumername=self.consumer)
            self._inherited = [_id(r["message_id"]) for r in rows]
            if self._inherited:
                log.info("worker %s takes back %d entries it held before it restarted",
                         self.consumer, len(self._inherited))
        room = self.batch_size - len(taken)
        ids = [e for e in self._inherited[:max(0, room)] if e not in taken]
        del self._inherited[:max(0, room)]
        if not ids:
            return []
        got = client.xclaim(q.key, GROUP, self.consumer, 0, ids)
        return [(_id(e), f) for e, f in got if f]

    # ------------------------------------------------------------------ one step
    def step(self, block: float = 0.0) -> BatchReport | None:
        """Take one batch and deal with it; ``None`` if the queue had nothing for this
        worker (after waiting up to ``block`` seconds for new entries, or half the Redis
        client's ``socket_timeout`` if that is shorter)."""
        t0 = time.perf_counter()
        entries, deliveries = self._take(block)
        if not entries:
            return None
        done: list[str] = []
        dead = stale = 0
        todo: list[tuple[Entry, QueuedPage]] = []
        for entry, fields in entries:
            n = deliveries.get(entry, 1)
            if n > self.max_deliveries:
                self.queue.bury(entry, fields, f"delivered {n} times without being read "
                                "(each try failed, or killed its worker)", n)
                dead += 1
                continue
            try:
                todo.append(((entry, fields), QueuedPage.from_fields(fields, entry)))
            except CorruptRecordError as exc:
                self.queue.bury(entry, fields, str(exc), n)
                dead += 1
        items: list[Item] = []
        # Per item, the entries it serves: bot processes that show the same page each
        # queue it, and it is read once.
        item_entries: list[list[str]] = []
        same: dict[tuple[str, str, str, str], int] = {}
        pages = self._pages([q for _, q in todo])
        for ((entry, fields), q), page in zip(todo, pages, strict=True):
            if isinstance(page, CorruptRecordError):
                self.queue.bury(entry, fields, str(page), deliveries.get(entry, 1))
                dead += 1
                continue
            why = self._refusal(q, page)
            if why is not None:
                self.queue.bury(entry, fields, why, deliveries.get(entry, 1))
                dead += 1
            elif page is None or not q.matches(page):
                log.debug("queued page %s of session %r is gone; skipped", q.page_id, q.session)
                stale += 1
                done.append(entry)
            else:
                key = (q.session, q.tier.value, q.page_id, q.digest)
                if key in same:
                    item_entries[same[key]].append(entry)
                    continue
                self._artefacts.know_settings(q.settings)
                same[key] = len(items)
                items.append((q.session, Job(page, q.tier)))
                item_entries.append([entry])
        read, cached, failed, ok = self._read(items)
        for served, good in zip(item_entries, ok, strict=True):
            if good:
                done += served
                cached += len(served) - 1  # the same page queued again: read just now
        self.queue.done(done)
        tiers = Counter(job.tier.value for (_, job), good in zip(items, ok, strict=True) if good)
        report = BatchReport(taken=len(entries), read=read, cached=cached, stale=stale,
                             dead=dead, failed=failed, seconds=time.perf_counter() - t0,
                             tiers=dict(tiers))
        log.info("read %d pages (%d already read, %d stale, %d dead, %d failed) in %.2fs",
                 read, cached, stale, dead, failed, report.seconds)
        return report

    def _refusal(self, q: QueuedPage, page: PageRecord | None) -> str | None:
        """Why this worker must not read ``q`` at all (dead letter), or ``None``."""
        if q.codec and q.codec != self.codec.name:
            return (f"queued for codec {q.codec!r}; this worker reads with "
                    f"{self.codec.name!r}, whose readings that memory would never look up")
        if page is not None and q.matches(page) and q.settings.key() != page.render_key:
            return (f"the entry's render settings ({q.settings.key()}) are not those the "
                    f"page was packed with ({page.render_key})")
        return None

    def _pages(
        self, queued: Sequence[QueuedPage]
    ) -> list[PageRecord | CorruptRecordError | None]:
        """The page record of each entry as the store holds it now (``None``: gone), or
        the error for a record the store cannot read. One damaged record fails the batch's
        lookup; the pages are then looked up one by one, so that only its own entries go
        to the dead letters, not every entry that happened to share its batch."""
        refs = [(q.session, q.page_no) for q in queued]
        try:
            return list(self.store.get_pages_of(refs))
        except CorruptRecordError:
            pass
        out: list[PageRecord | CorruptRecordError | None] = []
        for ref in refs:
            try:
                out += self.store.get_pages_of([ref])
            except CorruptRecordError as exc:
                out.append(exc)
        return out

    def _read(self, items: Sequence[Item]) -> tuple[int, int, int, list[bool]]:
        """Read ``items`` in one batch, or one by one if the batch fails: pages decoded,
        pages found read, pages failed, and which succeeded."""
        if not items:
            return 0, 0, 0, []
        before = self._decoded
        # Any Exception: a model may raise anything on an odd page (IndexError, an
        # AssertionError inside torch), and a worker that died on it would be restarted
        # only to take the page again. It is left pending, and buried after
        # max_deliveries like a page that kills its worker.
        try:
            self._artefacts.recollections_of(items)
            ok = [True] * len(items)
        except Exception as exc:
            if len(items) == 1:
                self._failures.report(exc, items[0][0])
                ok = [False]
            else:
                log.warning("a batch of %d pages failed (%s); reading them one by one",
                            len(items), exc)
                ok = [self._read_one(item) for item in items]
        read, failed = self._decoded - before, ok.count(False)
        return read, len(items) - read - failed, failed, ok

    def _read_one(self, item: Item) -> bool:
        try:
            self._artefacts.recollections_of([item])
            return True
        except Exception as exc:
            self._failures.report(exc, item[0])
            return False

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *,
        stop: threading.Event | None = None,
        once: bool = False,
        block: float = 2.0,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> WorkerTotals:
        """Work until ``stop`` is set — or, with ``once``, until the queue has nothing for
        this worker (the backlog drained; entries another worker holds are left to it).
        ``on_batch`` is called after every batch.

        A step that fails (Redis away) is tried again with a growing delay; with
        ``once``, failures that go on for :attr:`once_patience` seconds end the run with
        the last one (a job must end), without it the worker waits for Redis for ever."""
        stop = stop or threading.Event()
        totals = WorkerTotals()
        failures = 0
        failing_since = 0.0
        while not stop.is_set() and not self._closed:
            try:
                report = self.step(block=0.0 if once else block)
                failures = 0
            except _STEP_ERRORS as exc:
                now = time.monotonic()
                failing_since = now if failures == 0 else failing_since
                if once and now - failing_since >= self.once_patience:
                    raise
                failures += 1
                delay = min(30.0, 0.5 * 2 ** min(failures, 6))
                self._failures.report(exc)
                log.warning("worker step failed (%s); again in %.1fs", exc, delay)
                if stop.wait(delay):
                    break
                continue
            if report is None:
                if once and self._claim_from == "0-0":  # all pending entries looked at
                    break
                continue
            totals.add(report)
            if on_batch is not None:
                on_batch(report)
        return totals


class DrawPool(Executor):
    """Processes that draw page images (:attr:`Artefacts.draw_pool`), started anew when
    one of them dies.

    A process of a :class:`~concurrent.futures.ProcessPoolExecutor` that dies (the OOM
    killer, a crash in a native library) breaks the pool for good: every later batch
    would fail over to drawing in the worker itself. Here the batch that found it broken
    fails (and :class:`~opticmem.artefacts.Artefacts` draws it in-process), and the next
    one gets a new pool. Processes are spawned, not forked: the worker may hold a CUDA
    context, which a fork breaks. They ignore SIGINT: Ctrl-C is the worker's to handle.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._lock = threading.Lock()
        self._closed = False
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                   initializer=_ignore_interrupts)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:
            pool = self._pool
        return pool.submit(fn, *args, **kwargs)

    def map(self, fn: Callable[..., T], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[T]:
        """As :meth:`Executor.map`, but every result is in by the time it returns (so a
        broken pool is found here, and replaced)."""
        with self._lock:
            pool = self._pool
        try:
            return iter(list(pool.map(fn, *iterables, timeout=timeout, chunksize=chunksize)))
        except BrokenExecutor:
            with self._lock:
                if self._pool is pool and not self._closed:
                    log.warning("a drawing process died; starting a new pool of %d",
                                self.workers)
                    self._pool = self._new()
                    pool.shutdown(wait=False, cancel_futures=True)
            raise

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            pool = self._pool
        pool.shutdown(wait=wait, cancel_futures=cancel_futures)


def _ignore_interrupts() -> None:
    """In a drawing process: ignore SIGINT. Ctrl-C in a terminal reaches the whole
    process group; the worker stops its drawing processes itself, after the batch."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _id(entry: bytes | str) -> str:
    return entry.decode() if isinstance(entry, bytes) else entry
