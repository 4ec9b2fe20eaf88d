"""One memory shared by threads and asyncio tasks, as a web service or a bot uses it.

Races are forced, not hoped for: a hook inside the library runs the competing call at the
point where the two would collide, so each test fails the same way every time without
the guard it checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import logging
import math
import multiprocessing as mp
import os
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opticmem import (
    ConfigurationError,
    InMemoryStore,
    OpticalMemory,
    RenderSettings,
    StoreError,
    Tier,
)
from opticmem import recall as recall_module
from opticmem import store as store_module
from opticmem import stores as stores_module
from opticmem.artefacts import Job, rec_key, recollection_to_bytes
from opticmem.encoder.codec import Recollection, VisionTokens
from opticmem.lru import LRU
from opticmem.recollectors import ThreadRecollector
from opticmem.records import PageRecord
from opticmem.store import Store
from opticmem.stores import open_store
from tests.memory.forking import fork_and_wait

SMALL = RenderSettings(max_rows=6)


def facts_memory(store: InMemoryStore) -> OpticalMemory:
    return OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SMALL)


def fill(mem: OpticalMemory, session: str, n: int) -> None:
    mem.add_many(session, [("user", f"ticket ORI-{1000 + i} ships on 2026-03-{1 + i % 28:02d} "
                            + "and more words " * 4) for i in range(n)])


def hits(mem: OpticalMemory, query: str) -> list[tuple[int, str, str]]:
    return [(p.page_no, p.source, p.text) for p in mem.recall("s", query, k=20, decode=False)]


@pytest.fixture
def recall_inside_an_index_update(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[OpticalMemory, list[object], list[threading.Thread]]]:
    """A fresh memory over a filled store, whose *first* index update runs a whole second
    recall of the same session, from another thread, while it is half-way through
    indexing a page (inside ``RecallIndex.set_page``). Yields the memory and what that
    second recall returned (or raised), and its thread."""
    store = InMemoryStore()
    fill(facts_memory(store), "s", 120)
    mem = facts_memory(store)
    real_terms = recall_module.terms
    first = threading.Event()
    other: list[object] = []
    started: list[threading.Thread] = []

    def second_recall() -> None:
        try:
            other.append(hits(mem, "ORI-1003"))
        except Exception as exc:  # reported by the test, not lost in the thread
            other.append(exc)

    def terms(text: str, *, drop_stopwords: bool = False) -> list[str]:
        if not drop_stopwords and not first.is_set():
            first.set()
            t = threading.Thread(target=second_recall)
            started.append(t)
            t.start()
            # Unguarded, the second recall runs to its end right now. Guarded, it waits
            # for this update to finish, so the join times out: the outcome is the same
            # whatever the wait, only the test's duration depends on it.
            t.join(timeout=1.0)
        return real_terms(text, drop_stopwords=drop_stopwords)

    monkeypatch.setattr(recall_module, "terms", terms)
    yield mem, other, started


def test_two_recalls_of_one_session_at_once_share_one_consistent_index(
    recall_inside_an_index_update: tuple[OpticalMemory, list[object], list[threading.Thread]],
) -> None:
    mem, other, started = recall_inside_an_index_update
    mine = hits(mem, "ORI-1003")
    [second] = started
    second.join()
    fresh = facts_memory(mem.store)  # type: ignore[arg-type]
    want = hits(fresh, "ORI-1003")
    assert want and len(set(want)) == len(want)
    assert other == [want]  # the second recall neither failed nor saw a half-built index
    assert mine == want
    assert hits(mem, "ORI-1003") == want  # and no page is indexed twice afterwards


# ---------------------------------------------------------------- decay marks


class PausingStore(InMemoryStore):
    """Pauses the thread named ``B`` right after its ``pause_at``-th ``get_state``. After
    the first, its context has read the session's history and the consumer's decay mark,
    and not yet planned; after the second, it has planned and read the stored mark again
    to raise it, and not yet written it."""

    def __init__(self, pause_at: int = 1) -> None:
        super().__init__()
        self.reached, self.go = threading.Event(), threading.Event()
        self.calls, self.pause_at = 0, pause_at

    def get_state(self, session: str, key: str) -> bytes | None:
        got = super().get_state(session, key)
        if threading.current_thread().name == "B" and not self.reached.is_set():
            self.calls += 1
            if self.calls == self.pause_at:
                self.reached.set()
                self.go.wait(timeout=30)
        return got


def add_notes(memory: OpticalMemory, numbers: range) -> None:
    """Adds one long user note per number to session ``s``, numbered in its text."""
    for i in numbers:
        memory.add("s", "user", f"note {i}: the plan for march " * 40)


def test_a_context_that_read_older_history_does_not_undo_a_newer_decay_mark() -> None:
    """Two contexts of one session at once: the one that read fewer turns finished last
    and wrote its smaller decay mark over the other's, and a page the newer context had
    put out of context came back in the next one (decay ran backwards)."""
    store = PausingStore()
    mem = OpticalMemory(store, codec=None, verbatim_turns=1, budget_tokens=2500)

    add_notes(mem, range(42))
    mem.context("s")
    add_notes(mem, range(42, 43))  # enough for this context to raise the mark
    older = threading.Thread(target=lambda: mem.context("s"), name="B")
    older.start()
    assert store.reached.wait(timeout=30)
    add_notes(mem, range(43, 48))  # enough for a newer context to raise it further
    newer = mem.context("s")
    store.go.set()
    older.join()
    first_shown = newer.pages[0].page_no
    for hi in range(49, 52):
        add_notes(mem, range(hi - 1, hi))
        assert min(p.page_no for p in mem.context("s").pages) >= first_shown


def delete_while_a_context_pauses(store: PausingStore) -> OpticalMemory:
    """48 notes over ``store``, then session ``s`` deleted while a context of it is paused."""
    mem = OpticalMemory(store, codec=None, verbatim_turns=1, budget_tokens=2500)
    add_notes(mem, range(48))
    older = threading.Thread(target=lambda: mem.context("s"), name="B")
    older.start()
    assert store.reached.wait(timeout=30)
    mem.delete_session("s")
    store.go.set()
    older.join()
    return mem


def assert_begins_again_as_a_fresh_session(mem: OpticalMemory) -> None:
    """30 notes added again show the pages and tiers a fresh memory shows for the same."""
    add_notes(mem, range(30))
    fresh = OpticalMemory(codec=None, verbatim_turns=1, budget_tokens=2500)
    add_notes(fresh, range(30))
    want = [(p.page_no, p.tier) for p in fresh.context("s").pages]
    assert want and [(p.page_no, p.tier) for p in mem.context("s").pages] == want


def test_a_context_running_while_its_session_is_deleted_leaves_no_mark_behind() -> None:
    """A context assembled just before its session was deleted wrote its decay mark into
    the emptied session, and the conversation begun there again never showed its first
    pages: they were all "out" under the old conversation's mark."""
    mem = delete_while_a_context_pauses(PausingStore())
    assert_begins_again_as_a_fresh_session(mem)


def test_a_session_deleted_just_before_its_mark_is_written_gets_no_mark() -> None:
    """The session was found to hold the context's newest page, then deleted before the
    mark was written: the write landed in the emptied session all the same (its state
    gone, "no mark stored" matched again), and the conversation begun there again never
    showed its first pages. The page is checked in the same step as the write now."""
    store = PausingStore(pause_at=2)  # pauses with its mark raised, about to be written
    mem = delete_while_a_context_pauses(store)
    assert store.get_state("s", mem._mark_key(2500)) is None
    assert_begins_again_as_a_fresh_session(mem)


class OvertakenStore(InMemoryStore):
    """Just before the first swap of session state, another writer's swap wins: it
    stores ``other`` (what a context in another process would)."""

    def __init__(self, other: bytes) -> None:
        super().__init__()
        self.other, self.swaps = other, 0

    def swap_state(self, session: str, key: str, expected: bytes | None, data: bytes, *,
                   page: Any = None) -> bool:
        self.swaps += 1
        if self.swaps == 1:
            self.put_state(session, key, self.other)
        return super().swap_state(session, key, expected, data, page=page)


@pytest.mark.parametrize("lead", [-1, 1], ids=["lower", "higher"])
def test_a_context_whose_swap_is_overtaken_raises_what_the_other_wrote(lead: int) -> None:
    """The loser of a swap reads the mark again: one lower than its own is raised to it
    (a second swap), one higher is kept as it is; never the lower of the two."""
    def context_mark(store: InMemoryStore) -> Any:
        mem = OpticalMemory(store, codec=None, verbatim_turns=1, budget_tokens=2500)
        for i in range(48):
            mem.add("s", "user", f"note {i}: the plan for march " * 40)
        mem.context("s")
        return mem._read_mark("s", 2500)[0]

    ours = context_mark(InMemoryStore())
    assert ours.page_no >= 2
    theirs = dataclasses.replace(ours, page_no=ours.page_no + lead)
    store = OvertakenStore(json.dumps(dataclasses.asdict(theirs)).encode())
    assert context_mark(store) == max(ours, theirs)
    assert store.swaps == (2 if lead < 0 else 1)


def _context_paused_before_its_mark_is_written(url: str, reached: Any, go: Any) -> None:
    """In a child process: a context that waits for ``go`` once it has read the stored
    decay mark again to raise it (its second ``get_state``), before writing it."""
    mem = OpticalMemory(url, codec=None, verbatim_turns=1, budget_tokens=2500)
    read = mem.store.get_state
    calls = 0

    def get_state(session: str, key: str) -> bytes | None:
        nonlocal calls
        got = read(session, key)
        calls += 1
        if calls == 2:
            reached.set()
            go.wait(timeout=120)
        return got

    mem.store.get_state = get_state  # type: ignore[method-assign]
    try:
        mem.context("s")
    finally:
        mem.close()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_a_context_in_another_process_does_not_undo_a_newer_decay_mark(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Bots in several processes on one store: a context in one process read the stored
    decay mark to raise it, a newer context in another raised it further, and the first
    then wrote its smaller mark over it — a lock of one process cannot stop that — so a
    page the newer context had put out of context came back (decay ran backwards)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/m.db"
    else:
        url = request.getfixturevalue("redis_url") + "?tenant=marks"
    mem = OpticalMemory(url, codec=None, verbatim_turns=1, budget_tokens=2500)

    add_notes(mem, range(42))
    mem.context("s")
    add_notes(mem, range(42, 43))  # enough for the other process's context to raise the mark
    ctx = mp.get_context("spawn")
    reached, go = ctx.Event(), ctx.Event()
    older = ctx.Process(target=_context_paused_before_its_mark_is_written,
                        args=(url, reached, go))
    older.start()
    try:
        assert reached.wait(timeout=120)
        add_notes(mem, range(43, 48))  # enough for a newer context to raise it further
        newer = mem.context("s")
        raised = mem._read_mark("s", 2500)
    finally:
        go.set()
        older.join(timeout=120)
    assert older.exitcode == 0
    assert mem._read_mark("s", 2500)[0] >= raised[0]
    first_shown = newer.pages[0].page_no
    for hi in range(49, 52):
        add_notes(mem, range(hi - 1, hi))
        assert min(p.page_no for p in mem.context("s").pages) >= first_shown
    mem.close()


# ---------------------------------------------------------------- background recollection


class Labelling:
    """A codec that reads each page back as a label naming its tier, batch by batch.

    ``gate`` (when given) holds every decode until it is set; ``fail_first`` makes the
    first decode raise, as a codec running out of memory would.
    """

    name = "labelling"
    render_settings = None

    def __init__(self, gate: threading.Event | None = None, fail_first: bool = False) -> None:
        self.gate = gate
        self.fail_first = fail_first
        self.started = threading.Event()
        self.batches: list[int] = []

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        grid = np.zeros((tier.grid, tier.grid, 1), np.float32)
        return [VisionTokens(tier, grid, codec=self.name) for _ in images]

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait()
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("out of memory")
        self.batches.append(len(tokens))
        return [Recollection(f"a page read at {t.tier.value}", t.tier, 0.5, 5, codec=self.name)
                for t in tokens]


def talk(n: int) -> list[tuple[str, str]]:
    return [("user", f"turn {i}: the quarterly plan, line by line, with its owners " * 6)
            for i in range(n)]


def unread_image_pages(mem: OpticalMemory, session: str) -> int:
    ctx = mem.context(session)
    jobs = [Job(p.record, p.tier) for p in ctx.pages if p.shown == "image"]
    assert jobs  # the test needs pages shown as images
    return mem._artefacts.cached_recollections(session, jobs).count(None)


@pytest.mark.timeout(120)
def test_close_drops_queued_pages_and_waits_for_the_batch_being_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """close() used to queue its stop behind every page waiting to be read, wait up to 30 s
    for them, then close the store under a worker that went on reading (and logging a
    failure per batch). Now it drops the queue and waits only for the batch in hand."""
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(f"sqlite:///{tmp_path}/m.db", codec=codec, render_settings=SMALL,
                        verbatim_turns=2, recollect="background")
    for s in range(4):  # a batch per session: more queued than one batch
        mem.add_many(f"s{s}", talk(40))
    assert codec.started.wait(60)  # the worker is inside the first decode
    closer = threading.Thread(target=mem.close, daemon=True)
    closer.start()
    assert mem.flush(60)  # returns once close() has dropped the queue
    gate.set()
    closer.join(60)
    assert not closer.is_alive()
    assert codec.batches and len(codec.batches) == 1  # nothing read after close()
    assert not any(t.name == "opticmem-recollect" for t in threading.enumerate())
    assert "background recollection failed" not in caplog.text  # store closed after it


@pytest.mark.timeout(60)
def test_flush_takes_a_timeout_in_seconds_or_says_what_is_wrong() -> None:
    """flush(nan) waited for a deadline it could never reach, spinning a core for ever;
    flush(math.inf) raised OverflowError from the lock; flush("5") a bare TypeError."""
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(40))
    assert codec.started.wait(30)  # the worker is reading: flush has to wait
    for bad in (float("nan"), "5"):
        with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
            mem.flush(bad)  # type: ignore[arg-type]
    assert mem.flush(0.05) is False
    threading.Timer(0.2, gate.set).start()
    assert mem.flush(math.inf) is True
    mem.close()


def test_a_background_memory_dropped_unclosed_is_freed_and_its_thread_ends() -> None:
    """The background thread held the memory (through the artefacts' and codec slot's
    callbacks): a memory made per request and never closed kept its thread, caches and
    store for the life of the process."""
    mem = OpticalMemory(codec=Labelling(), verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(40))
    assert mem.flush(60)
    thread = mem._worker._thread  # type: ignore[union-attr]
    assert thread is not None and thread.is_alive()
    ref = weakref.ref(mem)
    del mem
    gc.collect()
    assert ref() is None
    thread.join(30)
    assert not thread.is_alive()


def test_a_page_whose_background_reading_failed_is_queued_again() -> None:
    codec = Labelling(fail_first=True)
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(120))
    mem.context("s")
    assert mem.flush(60) and not codec.fail_first  # the first batch failed
    mem.context("s")  # the codec works again: the pages are queued again
    assert mem.flush(60)
    assert unread_image_pages(mem, "s") == 0
    mem.close()


def test_background_reading_keeps_no_record_for_sessions_never_recalled() -> None:
    """Every page read in the background was remembered for the session's recall index,
    whether the session had one or not: a bot that never recalls kept the number of every
    page ever read, of every session, for the life of the process."""
    mem = OpticalMemory(codec=Labelling(), verbatim_turns=2, recollect="background")
    for s in range(4):
        mem.add_many(f"s{s}", talk(60))
        mem.context(f"s{s}")
    assert mem.flush(60)
    assert mem._dirty == {}
    assert {p.source for p in mem.recall("s0", "page read", k=50, decode=False)} == {
        "recollection"}  # a first recall still finds what was read before it
    mem.close()


def test_pages_read_after_a_recall_are_not_kept_once_its_index_is_dropped() -> None:
    """A session recalled once, whose later pages were read back, kept their numbers for
    its recall index long after the index was pushed out of the cache: one set per session
    ever recalled, for the life of the process."""
    mem = OpticalMemory(codec=Labelling(), render_settings=SMALL, verbatim_turns=2)
    mem._indexes = LRU(2)  # as the 64 indexes kept, sooner
    sessions = [f"s{i}" for i in range(4)]
    for s in sessions:
        mem.add_many(s, talk(20))
        mem.recall(s, "quarterly plan", k=1)  # the session's index, made
        mem.add_many(s, talk(20))
        mem.context(s).text()  # its new pages, read back
    assert mem._dirty and all(s in mem._indexes for s in mem._dirty)
    assert sessions[0] not in mem._dirty
    mem.close()


class Failing(Labelling):
    """A codec that fails every batch, as one out of memory for good would."""

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        raise RuntimeError("out of memory")


def test_a_codec_failing_every_batch_logs_its_traceback_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every failed batch used to log a full traceback at ERROR: a codec that fails for
    good filled the application's log with the same traceback, batch after batch."""
    mem = OpticalMemory(codec=Failing(), verbatim_turns=2, recollect="background")
    with caplog.at_level(logging.DEBUG, logger="opticmem.recollectors"):
        for s in range(3):  # a batch per session at least
            mem.add_many(f"s{s}", talk(60))
            mem.context(f"s{s}")
            assert mem.flush(60)
    mem.close()
    failed = [r for r in caplog.records if "recollection failed" in r.getMessage()]
    assert len(failed) >= 3  # every failed batch is still on record
    errors = [r for r in failed if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert all(r.levelno == logging.DEBUG and r.exc_info is None for r in failed[1:])


class Refusing(Labelling):
    """A codec that fails every batch holding one page it cannot read (by its image)."""

    def __init__(self) -> None:
        super().__init__()
        self.poison: bytes | None = None

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        return [VisionTokens(tier, np.full((tier.grid, tier.grid, 1),
                                           float(im.tobytes() == self.poison), np.float32),
                             codec=self.name) for im in images]

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        if any(t.grid[0, 0, 0] == 1.0 for t in tokens):
            raise RuntimeError("cannot read this page")
        return super().decode(tokens, max_new_tokens=max_new_tokens)


def test_one_page_the_codec_cannot_read_leaves_the_rest_of_its_batch_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A background batch that failed for one page left every page of it unread: queued
    again by the next context, with that page, they failed together again, for as long
    as it stayed in context. The batch is now read again page by page."""
    codec = Refusing()
    probe = OpticalMemory(codec=None, verbatim_turns=2)  # the same pages, to find one
    probe.add_many("s", talk(120))
    jobs = [Job(p.record, p.tier) for p in probe.context("s").pages if p.shown == "image"]
    assert jobs[0].tier is not Tier.LARGE and len(jobs) > 2
    [poison] = probe._artefacts.images("s", jobs[:1])
    codec.poison = poison.tobytes()
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(120))
    assert mem.flush(60)  # the pages are read at Large as they seal
    mem.context("s")  # queues the pages at their tiers: one batch, with that page
    assert mem.flush(60)
    assert unread_image_pages(mem, "s") == 1  # the page the codec cannot read, alone
    assert "cannot read this page" in caplog.text
    mem.close()


class GatedArtefacts:
    """Artefacts for a :class:`ThreadRecollector` alone: its thread blocks on ``gate``
    before its first batch (pages then wait in its queue), and reads nothing."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.taken = threading.Event()
        self.read: list[int] = []
        self.codec = self

    def get(self) -> object:
        self.taken.set()
        self.gate.wait()
        return self

    def recollections_of(self, items: Sequence[tuple[str, Job]]) -> list[Recollection]:
        self.read.extend(j.page.page_no for _, j in items)
        return []


def numbered_pages(lo: int, hi: int) -> list[Job]:
    return [Job(PageRecord("s", n, n, 0, n, 1, f"page {n}", 1, 0.0, 0.0, "k"), Tier.LARGE)
            for n in range(lo, hi)]


def queued(worker: ThreadRecollector) -> list[int]:
    return [j.page.page_no for _, j in worker._jobs.values()]


def test_a_page_waiting_to_be_read_is_not_queued_again_however_long_the_queue() -> None:
    """The pages taken were marked in an LRU of 100,000: behind that many newer pages a
    waiting page lost its mark, and the next context showing it queued it a second time
    (read twice, and the queue grew by it again). The marks are shrunk here to show it."""
    arts = GatedArtefacts()
    worker = ThreadRecollector(arts, batch=1)  # type: ignore[arg-type]
    worker._seen._lru = LRU(8)
    pages = numbered_pages(0, 40)
    worker.submit("s", pages[:1])
    assert arts.taken.wait(10)  # the thread holds page 0: the rest wait
    worker.submit("s", pages[1:])
    worker.submit("s", pages[1:3])  # their marks are gone; they are still queued
    arts.gate.set()
    assert worker.wait(10)
    assert sorted(arts.read) == list(range(40))  # each page read once
    worker.stop()


def test_a_full_background_queue_drops_its_oldest_pages_and_logs_it_once_per_burst(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The queue of pages waiting to be read had no bound: pages sealed faster than the
    codec reads them grew it for ever. It keeps the newest ``max_pending``; those dropped
    can be queued again by a later context."""
    caplog.set_level(logging.INFO, logger="opticmem.recollectors")
    arts = GatedArtefacts()
    worker = ThreadRecollector(arts, batch=1, max_pending=5)  # type: ignore[arg-type]
    pages = numbered_pages(0, 30)
    worker.submit("s", pages[:1])
    assert arts.taken.wait(10)
    worker.submit("s", pages[1:20])
    worker.submit("s", pages[20:25])
    assert queued(worker) == [20, 21, 22, 23, 24] and worker.dropped == 19
    worker.submit("s", pages[3:4])  # dropped, so forgotten: a context queues it again
    assert queued(worker) == [21, 22, 23, 24, 3]
    assert caplog.text.count("dropping the oldest") == 1  # one burst, one line
    arts.gate.set()
    assert worker.wait(10)  # waits for the pages queued, not for those dropped
    assert arts.read == [0, 21, 22, 23, 24, 3]
    arts.gate.clear()
    arts.taken.clear()
    worker.submit("s", pages[25:26])
    assert arts.taken.wait(10)
    worker.submit("s", pages[4:15])  # the queue emptied in between: a new burst
    assert caplog.text.count("dropping the oldest") == 2
    arts.gate.set()
    assert worker.wait(10)
    worker.stop()
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigurationError, match="max_pending"):
            ThreadRecollector(arts, max_pending=bad)  # type: ignore[arg-type]


def test_pages_dropped_from_a_full_background_queue_are_read_when_needed() -> None:
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    worker = mem._worker
    assert isinstance(worker, ThreadRecollector)
    worker.max_pending = 2
    mem.add_many("s", talk(120))
    assert codec.started.wait(30)
    mem.context("s")
    assert worker.dropped > 0
    gate.set()
    assert mem.flush(60)
    assert unread_image_pages(mem, "s") > 0  # dropped: not read in the background
    text = mem.context("s").text()
    assert "no codec" not in text and unread_image_pages(mem, "s") == 0  # read lazily
    mem.close()


def _child_flushes(mem: OpticalMemory, out: Any) -> None:
    mem.add_many("child", talk(120))
    mem.context("child")
    out.put((mem.flush(20), unread_image_pages(mem, "child")))


@pytest.mark.timeout(120)
def test_background_mode_works_in_a_forked_child() -> None:
    """A forked child (a pre-fork web server's worker) has none of its parent's threads:
    its pages used to queue for a worker thread that did not exist, and flush() never
    returned True."""
    mem = OpticalMemory(codec=Labelling(), verbatim_turns=2, recollect="background")
    mem.add_many("parent", talk(120))
    mem.context("parent")
    assert mem.flush(60)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_flushes, args=(mem, out))
    child.start()
    flushed, unread = out.get(timeout=90)
    child.join(30)
    assert child.exitcode == 0
    assert flushed and unread == 0
    mem.close()


def _child_reads_a_page(mem: OpticalMemory, codec: Labelling, out: Any) -> None:
    codec.gate = None  # the parent's decode stays held; the child's own must not wait
    mem.add_many("child", talk(120))
    out.put(mem.context("child").text().count("a page read at"))


@pytest.mark.timeout(120)
def test_a_child_forked_while_the_codec_reads_can_read_pages() -> None:
    """The codec lock, held by the parent's worker in the middle of a reading at the
    fork, used to stay held in the child for good: its first reading never returned."""
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    mem.add_many("parent", talk(120))
    assert codec.started.wait(60)  # the worker holds the codec lock now
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_reads_a_page, args=(mem, codec, out))
    child.start()
    try:
        read = out.get(timeout=60)
    finally:
        gate.set()
        child.join(30)
        if child.is_alive():
            child.kill()
        mem.close()
    assert read > 0 and child.exitcode == 0


HELD_AT_FORK: dict[str, Callable[[OpticalMemory], Any]] = {
    "memory": lambda mem: mem._lock,  # the background thread takes it as a page is read
    "store": lambda mem: mem.store._data.lock,  # type: ignore[attr-defined]
    "page cache": lambda mem: mem._pages._lock,
    "recall index": lambda mem: mem._indexes.get("s").lock,  # type: ignore[union-attr]
    "default swap_state": lambda mem: store_module._SWAP_LOCK,
    "named stores": lambda mem: stores_module._lock,
}


def _use_in_child(mem: OpticalMemory) -> int:
    """What a forked child does with the memory; its exit status (0: all went well)."""
    try:
        fill(mem, "s", 10)
        mem.context("s")
        found = hits(mem, "ORI-1005")
        Store.swap_state(mem.store, "s", "k", None, b"x", page=None)
        open_store("memory://forked-child")
        return 0 if found else 2
    except BaseException:
        traceback.print_exc()
        return 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.timeout(120)
@pytest.mark.parametrize("which", sorted(HELD_AT_FORK))
def test_a_child_forked_while_a_thread_holds_a_lock_can_use_the_memory(which: str) -> None:
    """The memory's own locks, its caches', its recall indexes', the in-process store's and
    the module locks were inherited held by a forked child when a thread of the parent
    (the background reader, a request) held one at the fork: the child's first use of it
    waited for good. They are now fresh in the child."""
    mem = facts_memory(InMemoryStore())
    fill(mem, "s", 60)
    assert hits(mem, "ORI-1005")  # the session has a recall index
    lock = HELD_AT_FORK[which](mem)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        code = fork_and_wait(lambda: _use_in_child(mem))
        if code is None:
            pytest.fail(f"a child forked while a thread held the {which} lock hung")
        assert code == 0
    finally:
        release.set()
        holder.join(30)
    mem.close()


def test_a_page_read_while_a_caller_waited_for_the_codec_is_not_read_again() -> None:
    """A caller that found a page unread, then waited for the codec while another thread
    (the background worker) read that page, used to read it again: seconds of CPU for
    nothing. It now looks in the cache again once it holds the codec."""
    codec = Labelling()
    mem = OpticalMemory(codec=codec, verbatim_turns=2, render_settings=SMALL)
    mem.add_many("s", talk(30))
    ctx = mem.context("s")
    jobs = [Job(p.record, p.tier) for p in ctx.pages if p.shown == "image"][:1]
    assert jobs
    art = mem._artefacts
    looked = threading.Event()
    real_cached = art.cached_recollections_of

    def cached(items: Sequence[tuple[str, Job]]) -> list[Recollection | None]:
        found = real_cached(items)
        looked.set()  # the caller has looked, and found nothing
        return found

    art.cached_recollections_of = cached  # type: ignore[method-assign]
    got: list[list[Recollection]] = []
    with art.codec.lock:  # another thread is reading: the caller will have to wait
        caller = threading.Thread(target=lambda: got.append(art.recollections("s", jobs)))
        caller.start()
        assert looked.wait(30)
        # ...and that other thread's reading of the page lands before it lets the codec go.
        art.cached_recollections_of = real_cached  # type: ignore[method-assign]
        [theirs] = codec.decode(art.vision_tokens("s", jobs))
        key = rec_key(codec.name, jobs[0].page, jobs[0].tier)
        mem.store.put_blob("s", key, recollection_to_bytes(theirs))
    caller.join(30)
    assert not caller.is_alive()
    assert codec.batches == [1]  # only the other thread's reading: none by the caller
    assert [r.text for r in got[0]] == [theirs.text]
    mem.close()


class _GatedStore(InMemoryStore):
    """Appends of the text ``"slow"`` wait until ``gate`` is set (a slow store write)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def append_turn(self, session: str, role: str, text: str, ts: float,
                    meta: Any = None) -> Any:
        if text == "slow":
            assert self.gate.wait(30)
        return super().append_turn(session, role, text, ts, meta)


def test_a_timed_out_async_write_is_over_before_the_task_goes_on() -> None:
    """``aadd`` ran in ``asyncio.to_thread``: when ``wait_for`` gave up on it, its thread
    went on, and the task's next call ran beside it. The next turn was stored before the
    timed-out one, and a ``delete_session`` after a timed-out ``aadd`` was undone by it (the
    session came back with that turn). A write cancelled once its thread has begun now
    waits for it; one cancelled while it waited for a thread never runs."""
    store = _GatedStore()
    mem = OpticalMemory(store, codec=None)

    async def go() -> None:
        timer = threading.Timer(0.2, store.gate.set)
        timer.start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mem.aadd("s", "user", "slow"), 0.01)
        await mem.aadd("s", "assistant", "after")
        assert [t.text for t in await mem.aturns("s")] == ["slow", "after"]

        store.gate.clear()
        timer = threading.Timer(0.2, store.gate.set)
        timer.start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mem.aadd_many("t", [("user", "slow")]), 0.01)
        await mem.adelete_session("t")
        await asyncio.sleep(0.3)
        assert await mem.aturns("t") == [] and await mem.asessions() == ["s"]

        # With one thread, busy with a slow write, a write that times out while it waits
        # for the thread is dropped, never stored later.
        store.gate.clear()
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(1))
        busy = asyncio.ensure_future(mem.aadd("u", "user", "slow"))
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(mem.aadd("u", "user", "queued"), 0.01)
        store.gate.set()
        await busy
        await mem.aadd("u", "user", "last")
        assert [t.text for t in await mem.aturns("u")] == ["slow", "last"]

    asyncio.run(go())
    mem.close()


class _TurnReadHook(InMemoryStore):
    """Runs ``before_read`` (once) when turns are next read: another writer's calls landing
    between a context's page count and its read of the turns after the newest page."""

    def __init__(self) -> None:
        super().__init__()
        self.before_read: Callable[[], None] | None = None

    def get_turns(self, session: str, start: int, stop: int) -> Any:
        hook, self.before_read = self.before_read, None
        if hook is not None:
            hook()
        return super().get_turns(session, start, stop)


def test_a_page_sealed_and_forgotten_while_a_context_reads_leaves_no_turn_out() -> None:
    """With ``keep_archive=False``, another add sealing a page between a context's page
    count and its read of the turns after the newest page forgot those turns: the context
    showed neither the page nor the turns — not even the newest, which the page took."""
    store = _TurnReadHook()
    mem = OpticalMemory(store, codec=None, verbatim_turns=2, keep_archive=False)
    said = iter(range(10_000))

    def seal_a_page() -> None:
        pages = store.page_count("s")
        while store.page_count("s") == pages:
            mem.add("s", "user", f"note {next(said)}: the quarterly plan, line by line " * 6)

    seal_a_page()
    store.before_read = seal_a_page  # lands inside the next context
    ctx = mem.context("s")
    assert store.before_read is None  # it ran
    newest = store.turn_count("s") - 1
    shown = [seq for p in ctx.pages for seq in p.seqs] + [t.turn.seq for t in ctx.turns]
    assert ctx.turns and ctx.turns[-1].turn.seq == newest
    assert set(shown) == set(range(newest + 1))  # every turn: on a page or verbatim
    mem.close()


@pytest.mark.timeout(60)
def test_a_memory_freed_by_a_collection_in_its_own_worker_ends_the_worker() -> None:
    """A memory dropped unclosed in a reference cycle is freed by whichever thread's
    allocation runs the garbage collector. When that was the background worker, holding
    its queue's lock, the finalizer's stop waited on that same lock: the worker hung for
    good (a thread and a codec kept per memory so dropped)."""
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(40))
    assert codec.started.wait(30)  # the worker is reading its first batch
    worker = mem._worker
    assert isinstance(worker, ThreadRecollector) and worker._thread is not None
    thread = worker._thread
    real_forget = worker._seen.forget_pairs

    def forget_pairs(pairs: Sequence[tuple[str, Job]]) -> None:
        gc.collect()  # a collection the worker's allocations run, inside its lock
        real_forget(pairs)

    worker._seen.forget_pairs = forget_pairs  # type: ignore[method-assign]
    mem.cycle = mem  # type: ignore[attr-defined]  # freed only by the collector
    gc.disable()
    try:
        ref = weakref.ref(mem)
        del mem
        gate.set()  # the batch ends; the worker collects inside its lock
        thread.join(30)
    finally:
        gc.enable()
    assert ref() is None
    assert not thread.is_alive()


class _Stop(BaseException):
    """Not an ``Exception``: what a codec lets out when it is told to stop (SystemExit)."""


@pytest.mark.timeout(60)
def test_a_codec_raising_a_base_exception_does_not_leave_flush_waiting_for_good() -> None:
    """The background thread caught only ``Exception``: a codec letting a ``SystemExit``
    (or any other ``BaseException``) out ended it with its batch still counted as being
    read, so ``flush()`` never returned and no page was read in the background again."""
    codec = Labelling()
    real_decode = codec.decode
    calls = iter(range(1_000))

    def decode(tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        if next(calls) == 0:
            raise _Stop
        return real_decode(tokens, max_new_tokens=max_new_tokens)

    codec.decode = decode  # type: ignore[method-assign]
    mem = OpticalMemory(codec=codec, verbatim_turns=2, recollect="background")
    worker = mem._worker
    assert isinstance(worker, ThreadRecollector)
    first = threading.Event()
    real_hook = threading.excepthook

    def hook(args: Any) -> None:
        if args.exc_type is _Stop:
            first.set()  # the first thread ended with it (and said so)
        else:
            real_hook(args)

    threading.excepthook = hook
    try:
        mem.add_many("s", talk(40))
        assert first.wait(30)
    finally:
        threading.excepthook = real_hook
    assert mem.flush(30) is True
    mem.context("s")  # queues the pages again: a new thread reads them
    assert mem.flush(30) is True
    assert unread_image_pages(mem, "s") == 0
    mem.close()
    assert not any(t.name == "opticmem-recollect" for t in threading.enumerate())


@pytest.mark.timeout(120)
def test_close_with_a_timeout_leaves_the_store_open_when_a_codec_hangs(tmp_path: Path) -> None:
    """close() waited for the batch being read for as long as it took: a codec that hung
    hung close() and aclose() (asyncio.wait_for could not end a cancelled close either)."""
    gate = threading.Event()
    codec = Labelling(gate)
    mem = OpticalMemory(f"sqlite:///{tmp_path}/m.db", codec=codec, render_settings=SMALL,
                        verbatim_turns=2, recollect="background")
    mem.add_many("s", talk(40))
    assert codec.started.wait(60)  # the worker is inside a decode that does not return
    with pytest.raises(ConfigurationError, match="timeout must be a number of seconds"):
        mem.close(float("nan"))
    with pytest.raises(TimeoutError, match="store was left open"):
        mem.close(0.05)
    with pytest.raises(TimeoutError):
        asyncio.run(mem.aclose(0.05))
    assert mem.store.turn_count("s") == 40  # still open, nothing lost
    gate.set()
    mem.close(math.inf)  # the batch ends: now it closes
    with pytest.raises(StoreError):
        mem.store.turn_count("s")
    assert not any(t.name == "opticmem-recollect" for t in threading.enumerate())


@pytest.mark.parametrize("lands", ["before_epoch", "before_add"])
def test_a_session_deleted_and_begun_again_while_a_page_seals_never_shows_the_old_text(
    store: Store, lands: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another writer deletes the session (a reset) after this memory read its turns and
    sealed a page from them, and begins it again with as many turns and more before the
    page is added. The turn check alone let the stale page in: the new life's context
    showed text never said in it. Landing before the memory reads the session's epoch,
    the reset is caught by the memory reading the sealed turns again; landing after that,
    right before the page is added, by the store's epoch check (one atomic step)."""
    mem = OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SMALL)
    hooked = getattr(store, "session_epoch" if lands == "before_epoch" else "add_sealed_page")
    said: list[str] = []

    def reset_then(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.undo()  # once
        held = store.turn_count("s")
        store.delete_session("s")
        said.extend(f"NEW turn {i}: another conversation altogether " * 3
                    for i in range(held + 4))
        store.append_turns("s", [("user", text, 1e9 + i, None) for i, text in enumerate(said)])
        return hooked(*args, **kwargs)

    monkeypatch.setattr(store, hooked.__name__, reset_then)
    for i in range(500):
        mem.add("s", "user", f"OLD turn {i}: the first conversation " * 3)
        if said:
            break
    assert said, "no page sealed"
    assert store.page_count("s") == 0  # the stale page was refused
    assert [t.text for t in store.get_turns("s", 0, 10_000)] == said
    # the new life seals its own pages as usual, and nothing of the old one shows
    ctx = mem.context("s")
    assert store.page_count("s") > 0
    pages = store.get_pages("s", 0, store.page_count("s"))
    assert all("OLD" not in p.transcript for p in pages)
    assert all("OLD" not in t.text for t in ctx.turns)
    assert pages[0].first_seq == 0 and pages[-1].last_seq < len(said)
    mem.close()
