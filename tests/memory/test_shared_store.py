"""Several memories on one store — what several bot processes on one Redis (or one SQLite
file) are — when a session is deleted or expires and then begins again under the same id.

Every backend runs these (``store`` is parametrised over them; Redis is a real server).
"""

from __future__ import annotations

from typing import Any

import pytest

from opticmem import OpticalMemory, RenderSettings
from opticmem.records import Turn
from opticmem.store import Store

SMALL = RenderSettings(max_rows=6)


def memory(store: Store) -> OpticalMemory:
    return OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SMALL)


def old_life(mem: OpticalMemory, session: str, n: int = 40, words: int = 0) -> None:
    for i in range(n):
        mem.add(session, "user", f"OLD line {i}: card 4111-1111-1111-{1000 + i} "
                + "x " * (words or i % 7))


def new_life(mem: OpticalMemory, session: str, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        mem.add(session, "user", f"new {i}: " + "talk " * 12)


def clean_transcripts(store_mem: OpticalMemory, session: str) -> list[str]:
    """The pages a memory that never saw the old life packs from the same turns."""
    fresh = OpticalMemory(None, codec=None, verbatim_turns=2, render_settings=SMALL)
    fresh.add_many("x", [(t.role, t.text, t.ts) for t in store_mem.turns(session)])
    return [p.transcript for p in fresh.pages("x")]


def test_a_session_deleted_elsewhere_is_not_served_from_cache(store: Store) -> None:
    writer, reader = memory(store), memory(store)
    old_life(writer, "carol")
    assert reader.context("carol").pages and reader.recall("carol", "card 4111", decode=False)

    writer.delete_session("carol")  # another worker erases it (or its TTL runs out)
    new_life(writer, "carol", 0, 40)

    ctx = reader.context("carol")
    assert ctx.pages
    assert not any("OLD" in p.record.transcript for p in ctx.pages)
    assert [p.record for p in ctx.pages] == writer.pages("carol")[-len(ctx.pages):]
    assert not any("4111" in p.text for p in reader.recall("carol", "card 4111", decode=False))


def test_a_session_imported_again_with_a_turn_redacted_in_place_is_not_served_from_cache(
    store: Store,
) -> None:
    # Found hunting the invariants: the card number redacted to as many characters leaves
    # every page after the first one identical, the newest one included, and the reader,
    # which compared only its newest cached page with the store, went on showing page 0
    # of the deleted import, card number and all.
    writer, reader = memory(store), memory(store)

    def conversation(card: str) -> list[tuple[str, str, float]]:
        return [("user", f"my card is {card}", 1_772_352_000.0)] + [
            ("assistant" if i % 2 else "user", f"turn {i}: " + "talk " * 12,
             1_772_352_000.0 + i) for i in range(1, 30)]

    writer.add_many("erin", conversation("4111-1111-1111-1111"))
    assert "4111" in reader.context("erin").pages[0].record.transcript

    writer.delete_session("erin")
    writer.add_many("erin", conversation("XXXX-XXXX-XXXX-XXXX"))

    ctx = reader.context("erin")
    assert ctx.pages[0].page_no == 0
    assert not any("4111" in p.record.transcript for p in ctx.pages)
    assert [p.record for p in ctx.pages] == writer.pages("erin")[-len(ctx.pages):]


def test_pages_sealed_after_a_restart_elsewhere_tile_the_new_turns(store: Store) -> None:
    writer, other = memory(store), memory(store)
    old_life(writer, "dave", 30, words=120)  # pages that end at other turns than the new
    other.delete_session("dave")
    new_life(other, "dave", 0, 20)  # the other worker seals the new life's first pages
    new_life(writer, "dave", 20, 60)  # then this one, whose cache knew the old life, goes on

    pages = writer.pages("dave")
    assert len(pages) >= 3
    assert [p.transcript for p in pages] == clean_transcripts(writer, "dave")[: len(pages)]


def test_a_page_image_after_delete_is_drawn_from_the_new_page(store: Store) -> None:
    mem = memory(store)
    old_life(mem, "bob", 20)
    before = mem.page_png("bob", 0)
    mem.delete_session("bob")
    new_life(mem, "bob", 0, 20)
    after = mem.page_png("bob", 0)
    assert after != before
    fresh = OpticalMemory(None, codec=None, verbatim_turns=2, render_settings=SMALL)
    fresh.add_many("bob", [(t.role, t.text, t.ts) for t in mem.turns("bob")])
    assert after == fresh.page_png("bob", 0)  # drawn by a memory that never saw the old life


def test_an_add_whose_session_is_restarted_before_it_packs_seals_no_new_turn(
    store: Store, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An add packs after its append with the turn count that append implied. When another
    # worker deleted the session and began it again in between, that stale count (the old
    # life's) sealed the new life's newest turns onto pages: out of the verbatim window,
    # and with keep_archive=False their text forgotten.
    mem, other = (OpticalMemory(store, codec=None, verbatim_turns=4, render_settings=SMALL,
                                keep_archive=False) for _ in range(2))
    old_life(mem, "erin", 30, words=40)
    append = store.append_turn

    def append_then_restart(*args: Any, **kw: Any) -> Turn:
        turn = append(*args, **kw)
        monkeypatch.undo()  # the other worker appends as usual
        other.delete_session("erin")
        for i in range(3):  # fewer turns than the verbatim window, a page each
            other.add("erin", "user", f"new {i}: " + "talk " * 150)
        return turn

    monkeypatch.setattr(store, "append_turn", append_then_restart)
    mem.add("erin", "user", "the add that races " + "x " * 40)

    assert store.page_count("erin") == 0
    assert [t.seq for t in mem.context("erin").turns] == [0, 1, 2]
    assert all(t.text.startswith("new ") for t in mem.turns("erin"))


def test_a_wider_window_is_told_once_when_a_narrower_one_sealed_its_turns(
    store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    """Two memories on one session with different verbatim_turns: the narrower one's pages
    take turns the wider one promises verbatim, and nothing said so."""
    settings = RenderSettings(max_rows=2)
    wide = OpticalMemory(store, codec=None, verbatim_turns=6, render_settings=settings)
    narrow = OpticalMemory(store, codec=None, verbatim_turns=1, render_settings=settings)
    for i in range(8):
        wide.add("w", "user", f"turn {i}")
    with caplog.at_level("WARNING", logger="opticmem"):
        wide.context("w")
        assert not caplog.records  # its own pages leave its window alone
        narrow.context("w")
        assert not caplog.records  # nor does the narrower one warn about its own
        assert [t.seq for t in wide.context("w").turns] == [6, 7]
        wide.add("w", "user", "turn 8")
        wide.context("w")
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1 and "narrower verbatim_turns" in told[0] and "6 verbatim" in told[0]
