"""One memory shared by threads and asyncio tasks, as a web service or a bot uses it.

Races are forced, not hoped for: a hook inside the library runs the competing call at the
point where the two would collide, so each test fails the same way every time without
the guard it checks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from opticmem import InMemoryStore, OpticalMemory, RenderSettings
from opticmem import recall as recall_module

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
