"""The per-message paths do bounded work: proved by counting operations, never by timing."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Any

from opticmem import InMemoryStore, OpticalMemory
from opticmem.lru import LRU


class _CountingDict(OrderedDict[Any, Any]):
    """An ``OrderedDict`` that counts the times it is iterated (a scan of every entry)."""

    scans = 0

    def __iter__(self) -> Any:
        type(self).scans += 1
        return super().__iter__()


def test_discard_group_looks_at_its_group_only() -> None:
    seen: list[tuple[str, int]] = []
    lru: LRU[tuple[str, int], int] = LRU(100, group=lambda k: k[0])
    for s in ("a", "b", "c"):
        for n in range(10):
            lru.put((s, n), n)

    def late(k: tuple[str, int]) -> bool:
        seen.append(k)
        return k[1] >= 5

    lru.discard_group("b", late)
    assert sorted(seen) == [("b", n) for n in range(10)]
    assert ("b", 4) in lru and ("b", 5) not in lru and len(lru) == 25
    lru.discard_group("a")
    assert not any(("a", n) in lru for n in range(10)) and len(lru) == 15
    lru.discard_group("nobody")
    # evicted entries leave their group too: a group's set never outgrows the cache
    for n in range(200):
        lru.put(("z", n), n)
    assert set(lru._groups) == {"z"} and len(lru._groups["z"]) == 100
    lru.clear()
    assert lru._groups == {}


def test_a_session_first_seen_does_not_scan_the_other_sessions_cached_pages() -> None:
    """Each session a memory first sees (or whose entry its session LRU let go, past
    16,384 sessions) has its cached pages dropped; that scanned every cached page and
    price of every session, and a bot serving many sessions paid it on each message."""
    mem = OpticalMemory(InMemoryStore(), codec=None, verbatim_turns=2)
    text = "the plan for march, line by line, milestones and budget " * 12
    for s in range(40):
        mem.add_many(f"s{s}", [("user", text)] * 30)
    mem.context("s0")
    assert len(mem._pages) > 100 and len(mem._prices) > 0
    mem._pages._data = _CountingDict(mem._pages._data)
    mem._prices._data = _CountingDict(mem._prices._data)
    _CountingDict.scans = 0
    mem._refs = LRU(16_384)  # as if every session's entry had been let go
    for s in range(40):
        mem.add(f"s{s}", "user", "one more")
    assert _CountingDict.scans == 0
    # ...and what is dropped is still the session's own entries, all of them
    mem._drop_cached("s3")
    assert not any(k[0] == "s3" for k in list(OrderedDict.keys(mem._pages._data)))
    assert not any(k[1].session == "s3" for k in list(OrderedDict.keys(mem._prices._data)))
    assert any(k[0] == "s4" for k in list(OrderedDict.keys(mem._pages._data)))


def _lines_run(fn: Any, *args: Any) -> int:
    """Python lines executed inside ``fn`` (the code object of ``fn`` only) for one call."""
    import sys

    count = 0
    code = fn.__code__

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if frame.f_code is not code:
            return None
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn(*args)
    finally:
        sys.settrace(None)
    return count


def test_the_surrogate_check_does_no_python_work_per_character() -> None:
    """Every add validates its text (and session id) for lone surrogates; a Python loop
    over the characters made that a quarter of an add's time."""
    from opticmem import sessions

    long = "plain text, nothing wrong " * 4000
    assert _lines_run(sessions._first_surrogate, long) < 10
    for text in ("", "abc", "\ud800", "ab\udfffc\ud800", "é😀\ud83d", long + "\udc00"):
        expect = next((i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF), None)
        assert sessions._first_surrogate(text) == expect


def test_an_add_that_seals_nothing_hashes_no_page(monkeypatch: Any) -> None:
    """A new page records its predecessor's digest (a SHA-256 of the whole record): it
    was computed on every add past the verbatim window, sealing or not."""
    from opticmem.records import PageRecord

    mem = OpticalMemory(InMemoryStore(), codec=None, verbatim_turns=2)
    text = "the plan for march, line by line, milestones and budget " * 12
    mem.add_many("s", [("user", text)] * 40)
    assert mem.store.page_count("s") >= 2
    digest = PageRecord.digest
    made = []

    def counted(self: PageRecord) -> str:
        made.append(self.page_no)
        return digest.fget(self)  # type: ignore[attr-defined, no-any-return]

    monkeypatch.setattr(PageRecord, "digest", property(counted))
    sealed_before = mem.store.page_count("s")
    adds = 0
    while mem.store.page_count("s") == sealed_before:
        assert made == []  # nothing sealed yet, nothing hashed
        mem.add("s", "user", "a short reply")
        adds += 1
    assert adds > 3 and made  # the add that sealed hashed the page before it
    pages = mem.pages("s")
    assert all(b.prev == digest.fget(a) for a, b in itertools.pairwise(pages))  # type: ignore[attr-defined]
