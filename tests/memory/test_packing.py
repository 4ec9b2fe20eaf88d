"""Packing: pages tile the archive, only complete pages seal, sealing is deterministic."""

from __future__ import annotations

import multiprocessing as mp
import threading
from pathlib import Path

import pytest

from opticmem import InMemoryStore, OpticalMemory, PageRecord, RenderSettings, SQLiteStore
from opticmem.packing import Frontier, Packer
from opticmem.records import Turn
from opticmem.render import TurnText as RT
from opticmem.render import layout_turn
from opticmem.tokens import ApproxCounter
from tests.memory.sample import turns as sample_turns

SMALL = RenderSettings(max_rows=6)


def feed(mem: OpticalMemory, n: int = 80, session: str = "team") -> list[Turn]:
    return [mem.add(session, str(t["role"]), str(t["text"]), ts=float(t["ts"]))  # type: ignore[arg-type]
            for t in sample_turns(n)]


def lines_of(turn: Turn, settings: RenderSettings) -> list[str]:
    return [ln.text for ln in layout_turn(RT(turn.role, turn.text), settings).lines]


def assert_tiles(pages: list[PageRecord], turns: list[Turn], settings: RenderSettings) -> None:
    """Pages hold every line of the archive once, in order, with no gaps."""
    by_seq = {t.seq: lines_of(t, settings) for t in turns}
    expect = Frontier()
    for p in pages:
        if expect.line >= len(by_seq[expect.seq]):  # previous page ended at a turn's end
            expect = Frontier(expect.seq + 1, 0)
        assert (p.first_seq, p.first_line) == (expect.seq, expect.line), p.page_no
        drawn: list[str] = []
        seq, line = p.first_seq, p.first_line
        while (seq, line) != (p.last_seq, p.end_line):
            if line >= len(by_seq[seq]):
                seq, line = seq + 1, 0
                continue
            drawn.append(by_seq[seq][line])
            line += 1
        assert p.transcript == "\n".join(drawn)
        assert len(drawn) <= settings.rows
        expect = Frontier.after(p)


def test_pages_tile_the_archive_and_window_stays_verbatim() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=5)
    turns = feed(mem, 80)
    pages = mem.pages("team")
    assert len(pages) > 10
    assert [p.page_no for p in pages] == list(range(len(pages)))
    assert_tiles(pages, turns, SMALL)
    assert pages[-1].last_seq < 80 - 5  # the verbatim window is never packed
    # what is left after the last page cannot fill a page yet
    packer = Packer(SMALL, ApproxCounter())
    staging = [t for t in turns if pages[-1].last_seq <= t.seq < 75]
    assert not packer.may_seal(Frontier.after(pages[-1]), staging)


def test_pages_record_times_facts_and_render_key() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=2)
    turns = feed(mem, 30)
    for p in mem.pages("team"):
        assert p.first_ts == turns[p.first_seq].ts and p.last_ts == turns[p.last_seq].ts
        assert p.render_key == SMALL.key()
        assert p.text_tokens == ApproxCounter().count(p.transcript)
        for f in p.facts:
            assert any(f in t.text for t in turns[p.first_seq : p.last_seq + 1])
    assert any("TITAN-100" in p.facts for p in mem.pages("team"))


def test_sealing_is_deterministic_across_memories_and_stores(tmp_path: Path) -> None:
    a = OpticalMemory(InMemoryStore(), codec=None, render_settings=SMALL)
    b = OpticalMemory(SQLiteStore(tmp_path / "b.db"), codec=None, render_settings=SMALL)
    feed(a, 60)
    feed(b, 60)
    assert a.pages("team") == b.pages("team")


def test_two_writers_on_one_store_write_one_page_log() -> None:
    store = InMemoryStore()
    a = OpticalMemory(store, codec=None, render_settings=SMALL, verbatim_turns=3)
    b = OpticalMemory(store, codec=None, render_settings=SMALL, verbatim_turns=3)
    for i, t in enumerate(sample_turns(60)):
        (a if i % 3 else b).add("team", str(t["role"]), str(t["text"]), ts=float(t["ts"]))  # type: ignore[arg-type]
    solo = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=3)
    feed(solo, 60)
    assert store.get_pages("team", 0, 100) == solo.pages("team")


def test_threads_adding_to_one_session_keep_pages_consistent() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=2)

    def writer(w: int) -> None:
        for i in range(30):
            mem.add("team", "user", f"writer {w} line {i} " + "filler words " * (i % 7))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    turns = mem.turns("team")
    assert len(turns) == 120
    assert_tiles(mem.pages("team"), turns, SMALL)


def _proc_writer(path: str, w: int) -> None:
    mem = OpticalMemory(SQLiteStore(path), codec=None, render_settings=SMALL, verbatim_turns=2)
    for i in range(25):
        mem.add("team", "assistant", f"process {w} says {i}: " + "words " * (5 + i % 9))
    mem.close()


def test_processes_sealing_one_session_agree(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    SQLiteStore(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_proc_writer, args=(db, w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    with SQLiteStore(db) as store:
        turns = store.get_turns("team", 0, 1000)
        pages = store.get_pages("team", 0, 1000)
    assert len(turns) == 75 and pages
    assert_tiles(pages, turns, SMALL)
    # and they are exactly the pages a single writer makes of the final archive
    solo = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=2)
    solo.add_many("team", [(t.role, t.text, t.ts) for t in turns])
    assert solo.pages("team")[: len(pages)] == pages


def test_page_token_cap() -> None:
    mem = OpticalMemory(codec=None, verbatim_turns=2, page_max_tokens=120)
    feed(mem, 40)
    pages = mem.pages("team")
    assert len(pages) > 5
    counter = ApproxCounter()
    for p in pages:
        lines = p.transcript.split("\n")
        assert sum(counter.count(ln) for ln in lines) <= 120 or len(lines) == 1


def test_keep_archive_false_forgets_sealed_turns_only() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=3, keep_archive=False)
    feed(mem, 50)
    pages = mem.pages("team")
    kept = mem.turns("team")
    # everything wholly on sealed pages is gone: the turns before the last page's end, and
    # that turn too when the page holds its last line
    last = pages[-1]
    fed = sample_turns(50)[last.last_seq]
    tail = Turn("team", last.last_seq, str(fed["role"]), str(fed["text"]), 0.0)
    ends_turn = last.end_line >= len(lines_of(tail, SMALL))
    first_kept = last.last_seq + 1 if ends_turn else last.last_seq
    assert [t.seq for t in kept] == list(range(first_kept, 50))
    ctx = mem.context("team")
    assert ctx.turns[-1].seq == 49 and ctx.pages
    feed(mem, 10, session="other")  # packing goes on normally afterwards
    assert mem.pages("other")


def test_add_many_packs_like_add() -> None:
    one = OpticalMemory(codec=None, render_settings=SMALL)
    feed(one, 50)
    bulk = OpticalMemory(codec=None, render_settings=SMALL)
    bulk.add_many("team", [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                           for t in sample_turns(50)])
    assert bulk.pages("team") == one.pages("team")


def test_layouts_are_cached() -> None:
    packer = Packer(SMALL, ApproxCounter())
    t = Turn("s", 0, "user", "hello there " * 20, 0.0)
    assert packer.layout(t) is packer.layout(Turn("s", 5, "user", t.text, 0.0))


@pytest.mark.parametrize("rows", [1, 3])
def test_tiny_pages(rows: int) -> None:
    settings = RenderSettings(max_rows=rows)
    mem = OpticalMemory(codec=None, render_settings=settings, verbatim_turns=1)
    turns = feed(mem, 20)
    assert_tiles(mem.pages("team"), turns, settings)


def test_a_turn_continued_from_a_blank_line_is_not_shown_again_from_its_start() -> None:
    """A blank line's span pointed at the turn's start (0), so a turn whose sealed pages
    end just before one was shown whole again as its unsealed rest ("continued from
    page N"): every word already on the pages, twice in the context and its cost."""
    mem = OpticalMemory(codec=None, render_settings=RenderSettings(max_rows=2),
                        verbatim_turns=1)
    mem.add("s", "user", "alpha\nbeta\ngamma\ndelta\n\nepsilon")
    mem.add("s", "assistant", "ok")
    text = mem.context("s").text()
    assert text.count("alpha") == 1 and text.count("delta") == 1
    assert [line.start for line in layout_turn(RT("user", "a\n\nb")).lines] == [0, 2, 3]


def test_a_turn_continued_from_a_line_of_its_label_is_shown_whole() -> None:
    """A page that ended inside a wrapped "[date] Label:" prefix left the turn's rest
    starting at offset -1: the context showed only its last character ("d")."""
    settings = RenderSettings(page_pixels=160, margin=16, timestamps=True, max_rows=4)
    mem = OpticalMemory(codec=None, render_settings=settings, verbatim_turns=1)
    mem.add("s", "user", "hi", ts=0.0)
    mem.add("s", "user", "hello world", ts=0.0)
    mem.add("s", "user", "next", ts=0.0)
    assert "[…continued from page 0] hello world" in mem.context("s").text()


def test_a_page_spans_the_timestamps_of_all_its_turns() -> None:
    """Timestamps need not grow with seq (an import merged from two sources). A page took
    its span from its first and last turns only, so its caption could print a span that
    runs backwards, and the age policy aged it by whichever turn happened to be last."""
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=1, policy="age")
    day, base = 86_400.0, 1_772_352_000.0
    for i in range(30):
        mem.add("s", "user", f"note {i}", ts=base + 3 * day if i == 1 else base + i)
    first = mem.pages("s")[0]
    assert first.first_seq <= 1 <= first.last_seq
    assert (first.first_ts, first.last_ts) == (base, base + 3 * day)
    for p in mem.pages("s"):
        stamps = [t.ts for t in mem.turns("s", p.first_seq, p.last_seq + 1)]
        assert (p.first_ts, p.last_ts) == (min(stamps), max(stamps))
    ctx = mem.context("s", now=base + 3 * day + 60)
    assert "2026-03-01 08:00 – 2026-03-04 08:00 UTC" in ctx.pages[0].caption
