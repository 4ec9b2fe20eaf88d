"""OpticalMemory end to end: quick start, async twins, persistence, bounded reads, recall."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from opticmem import (
    ConfigurationError,
    InMemoryStore,
    OpticalMemory,
    PageRecord,
    RenderSettings,
    SQLiteStore,
    StoreError,
    StoreURLError,
    TileCost,
    Turn,
    cost_model,
    open_store,
    register_store,
)
from opticmem.context import Context
from opticmem.costs import PRESETS
from opticmem.encoder.codec import CodecError, Recollection, VisionTokens
from opticmem.facts import CUE_WINDOW_CHARS, facts_line
from opticmem.recall import terms
from opticmem.store import Store
from opticmem.stores import store_schemes
from tests.memory.conftest import Clock
from tests.memory.sample import questions
from tests.memory.sample import turns as sample_turns

SMALL = RenderSettings(max_rows=6)


def bulk(mem: OpticalMemory, n: int, session: str = "team") -> None:
    mem.add_many(session, [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                           for t in sample_turns(n)])


def test_quick_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        mem = OpticalMemory(budget_tokens=8192)  # bundled codec: absent here, so no model
        mem.add("alice", "user", "Let's plan Project Titan for March.")
        mem.add("alice", "assistant", "Sure — milestones first?")
        ctx = mem.context("alice")
        assert ctx.cost <= 8192 and ctx.pages == ()
        assert ctx.text() == ("User: Let's plan Project Titan for March.\n\n"
                              "Assistant: Sure — milestones first?")
        assert ctx.messages() == [
            {"role": "user", "content": "Let's plan Project Titan for March."},
            {"role": "assistant", "content": "Sure — milestones first?"}]
        assert mem.recall("alice", "what did we decide about Titan?") == []
    # the bundled codec is only looked for when something needs it — recall did
    assert mem.codec_status.startswith(("bundled", "unavailable"))


def test_bundled_codec_is_loaded_lazily_and_degrades_clearly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mem = OpticalMemory(render_settings=SMALL, verbatim_turns=2)
    bulk(mem, 30)
    mem.context("team")
    assert mem.codec_status == "bundled (not loaded yet)"  # context() needs no model
    with caplog.at_level(logging.WARNING, logger="opticmem.codecs"):
        text = mem.context("team").text()
    if mem.codec is None:  # no bundled weights in this checkout
        assert mem.codec_status.startswith("unavailable:")
        assert "no codec" in caplog.text or "without a codec" in caplog.text
        assert "[page image; no codec to read it back]" in text


def test_async_twins() -> None:
    async def go() -> None:
        mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=2)
        t = await mem.aadd("s", "user", "hello TITAN-9 on 2026-03-04")
        assert t.seq == 0
        await mem.aadd_many("s", [("assistant", f"reply {i} " * 20) for i in range(12)])
        ctx = await mem.acontext("s")
        assert ctx.pages and await ctx.atext()
        assert (await ctx.amessages())[0]["role"] == "user"
        # pngs() reads and writes the store's image blobs like messages(): a twin too
        pngs = await ctx.apngs()
        assert pngs == ctx.pngs() and list(pngs) == [p.page_no for p in ctx.pages
                                                    if p.shown == "image"]
        hits = await mem.arecall("s", "TITAN-9", include_original=True)
        assert hits[0].original[0].text.startswith("hello")
        assert (await mem.aoriginal(hits[0]))[0].seq == 0
        assert len(await mem.aturns("s")) == 13
        assert await mem.apages("s") == mem.pages("s")
        assert (await mem.apage_png("s", 0, "tiny")).startswith(b"\x89PNG")
        assert await mem.asessions() == ["s"]
        assert await mem.aforget("s", 1) == 1
        assert await mem.aflush(1.0)
        await mem.adelete_session("s")
        assert await mem.asessions() == []
        await mem.aclose()

    asyncio.run(go())


def test_async_with_closes_the_store_it_opened(tmp_path: Path) -> None:
    """``async with`` mirrors ``with``: leaving it closes the memory through ``aclose``, and
    with it the store it opened (an ``async with`` used to raise a TypeError)."""
    async def go() -> OpticalMemory:
        async with OpticalMemory(f"sqlite:///{tmp_path / 'm.db'}", codec=None) as mem:
            await mem.aadd("s", "user", "hello")
            assert [t.text for t in await mem.aturns("s")] == ["hello"]
        return mem

    mem = asyncio.run(go())
    with pytest.raises(StoreError):  # the store is closed
        mem.turns("s")


@pytest.mark.parametrize("cls", [OpticalMemory, Context], ids=lambda c: c.__name__)
def test_async_twins_take_what_their_sync_methods_take(cls: type) -> None:
    """``arecollect`` lacked ``recollect``'s batch_size and progress and refused them with
    a TypeError: an async caller could not do what a sync one could. Every public method
    of the memory (all of them touch the store) has a twin."""
    public = {n: f for n, f in inspect.getmembers(cls, inspect.isfunction) if n[0] != "_"}
    twins = {n: f for n, f in public.items() if inspect.iscoroutinefunction(f)}
    assert twins, "no async twins found"
    for name, twin in twins.items():
        sync = public[name[1:]]
        assert list(inspect.signature(twin).parameters.values()) == list(
            inspect.signature(sync).parameters.values()), name
    if cls is OpticalMemory:  # after_fork_in_child: opticmem.forks' hook, not an API call
        assert [n for n in public if n not in twins and f"a{n}" not in twins
                and n != "after_fork_in_child"] == []


def test_sqlite_memory_reopens_to_the_same_context(tmp_path: Path, clock: Clock) -> None:
    url = f"sqlite:///{tmp_path}/m.db"
    with OpticalMemory(url, codec=None, budget_tokens=3000, clock=clock) as mem:
        bulk(mem, 300)
        first = mem.context("team")
        first_messages = first.messages()
    with OpticalMemory(url, codec=None, budget_tokens=3000, clock=clock) as again:
        second = again.context("team")
        assert second.as_dict() == first.as_dict()
        assert second.messages() == first_messages


class SpyStore(InMemoryStore):
    """Records how many turns and pages each call reads."""

    def __init__(self) -> None:
        super().__init__()
        self.turns_read = 0
        self.pages_read = 0

    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        out = super().get_turns(session, start, stop)
        self.turns_read += len(out)
        return out

    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        out = super().get_pages(session, start, stop)
        self.pages_read += len(out)
        return out


def test_context_reads_do_not_grow_with_history() -> None:
    reads = {}
    for n in (300, 3000):
        store = SpyStore()
        mem = OpticalMemory(store, codec=None)
        bulk(mem, n)
        fresh = OpticalMemory(store, codec=None)  # cold caches, like a new process
        store.turns_read = store.pages_read = 0
        fresh.context("team")
        reads[n] = (store.turns_read, store.pages_read)
    assert reads[3000][1] <= 17  # the newest policy window of pages (+ none more)
    assert reads[3000][0] <= 60  # staging + verbatim turns only
    assert reads[3000][0] <= 2 * max(reads[300][0], 20)


def test_recall_facts_with_provenance_and_way_back(clock: Clock) -> None:
    mem = OpticalMemory(codec=None, clock=clock)
    bulk(mem, 200)
    for q in questions():
        hits = mem.recall("team", str(q["question"]), k=3, include_original=True)
        assert hits, q
        best = hits[0]
        assert best.source == "facts" and best.confidence == 1.0 and best.tier is None
        assert any(a in best.text for a in q["answer_contains"])  # type: ignore[attr-defined]
        assert q["turn_seq"] in best.seqs
        assert [t.seq for t in best.original] == list(best.seqs)
        assert any(a in t.text for t in best.original for a in q["answer_contains"])  # type: ignore[attr-defined]
        assert mem.original(best) == list(best.original)
        assert best.first_ts <= best.last_ts
    assert mem.recall("team", "   ") == [] and mem.recall("team", "x", k=0) == []
    assert mem.recall("nobody", "TITAN") == []


def test_recall_way_back_after_true_forgetting() -> None:
    mem = OpticalMemory(codec=None, keep_archive=False)
    bulk(mem, 200)
    [hit] = mem.recall("team", "TITAN-100", k=1, include_original=True)
    assert hit.page_no == 0 and hit.original == ()  # the raw text is gone, as asked


def test_forget_keeps_the_pages_recall_finds_and_delete_session_erases_them() -> None:
    """What the README says of forgetting: ``forget`` drops the archived turns only (the
    README called it "true forgetting", while recall still found the forgotten turns'
    exact facts on their page); ``delete_session`` leaves nothing to recall."""
    mem = OpticalMemory(codec=None)
    bulk(mem, 200)
    assert mem.forget("team", 200) == 200 and mem.turns("team") == []
    [hit] = mem.recall("team", "TITAN-100", k=1, include_original=True)
    assert hit.page_no == 0 and "TITAN-100" in hit.text and hit.original == ()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "**True forgetting**" not in readme and "delete_session(session)` erases" in readme
    mem.delete_session("team")
    assert mem.recall("team", "TITAN-100") == [] and mem.pages("team") == []


def test_recall_finds_a_latin_word_or_id_glued_to_korean_or_cjk_text() -> None:
    """Korean glues particles onto Latin words and ids (``Titan은``, ``ZX-88123을``) and
    Chinese or Japanese put no space around them (``2026年``): the whole run was one term
    with character bigrams, so "Titan" or "ZX-88123" never found the page."""
    mem = OpticalMemory(codec=None, verbatim_turns=2)
    mem.add("s", "user", "Titan은 2026-03-04에 출시합니다. 계약 ZX-88123을 확인했습니다.")
    for i in range(60):
        mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
    for query in ("When does Titan launch?", "ZX-88123", "contract ZX-88123"):
        [hit] = mem.recall("s", query, k=1)
        assert hit.page_no == 0 and "2026-03-04" in hit.text, query
    assert {"titan", "api", "2026", "zx-88123"} <= set(
        terms("Titan은 API를 2026年 ZX-88123을"))


@pytest.mark.parametrize(("said", "query"), [
    ("ผมสั่งข้าวผัดให้โต๊ะ 12 ที่ร้านใกล้บ้าน", "ข้าวผัด"),  # Thai: "fried rice"
    ("ຂ້ອຍຈະໄປຫຼວງພະບາງວັນທີ 2026-03-04 ກັບໝູ່", "ຫຼວງພະບາງ"),  # Lao: "Luang Prabang"
    ("ខ្ញុំកុម្ម៉ង់បាយឆាសម្រាប់តុ 12 ផង", "បាយឆា"),  # Khmer: "fried rice"
    ("ကျွန်တော်ရန်ကုန်ကို 2026-03-04 မှာသွားမယ်", "ရန်ကုန်"),  # Myanmar: "Yangon"
])
def test_recall_finds_a_word_inside_thai_lao_khmer_or_myanmar_text(said: str, query: str) -> None:
    """Thai, Lao, Khmer and Myanmar put no spaces between words, as Chinese does not: a
    run of them was one term, so a search for a word in it (here found by the words
    around the page's fact) never found the page. CJK runs are indexed by character
    bigrams too; these scripts were not."""
    mem = OpticalMemory(codec=None, verbatim_turns=2)
    mem.add("s", "user", said)
    for i in range(60):
        mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
    assert query in said and query not in terms(said)
    hits = mem.recall("s", query, k=1)
    assert [(h.page_no, h.source) for h in hits] == [(0, "facts")]
    assert query in mem.pages("s")[0].cues[0]


def test_recall_finds_a_word_of_a_long_thai_sentence_by_its_fact() -> None:
    """A run of unsegmented text longer than the cue's window (80 characters, a Thai
    sentence often is) was cut by the window's edge and left out of the fact's cue
    whole, where a CJK run keeps its characters nearest the fact: nothing around the
    fact led a question to it."""
    said = ("วันนี้ผมไปประชุมกับทีมงานเรื่องงบประมาณโครงการใหม่และสั่งข้าวผัดให้ทุกคน"
            "ที่โต๊ะหมายเลข 12 ครับ")
    mem = OpticalMemory(codec=None, verbatim_turns=2)
    mem.add("s", "user", said)
    for i in range(60):
        mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
    assert len(said.split()[0]) > CUE_WINDOW_CHARS
    hits = mem.recall("s", "โต๊ะหมายเลข", k=1)
    assert [(h.page_no, h.source) for h in hits] == [(0, "facts")]
    assert "โต๊ะหมายเลข" in mem.pages("s")[0].cues[0]


def test_recall_matches_full_width_letters_and_digits_with_ascii() -> None:
    """Japanese and Chinese input methods type full-width letters and digits
    (``ＯＲＤ－４４７１``, ``３月``): indexed as typed, "ORD-4471" never found them."""
    mem = OpticalMemory(codec=None, verbatim_turns=2)
    mem.add("s", "user", "案件ＯＲＤ－４４７１の予算は３月に承認されました。")
    for i in range(60):
        mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
    [hit] = mem.recall("s", "ORD-4471", k=1)
    assert hit.page_no == 0 and "４４７１" in hit.text  # shown as it was said
    assert terms("ＯＲＤ－４４７１ Ｔｉｔａｎ ３月") == terms("ORD-4471 Titan 3月")


GLITCH = "Noted: KX-9041 tracks the duplicate refund glitch in the settlement export."
GLITCH_QUESTION = "Which ticket tracks the refund glitch?"


def glitch_turns(n: int, said: str = GLITCH, at: int = 3) -> list[dict[str, Any]]:
    """The sample turns, turn ``at`` also saying ``said`` (by default which ticket tracks
    the refund glitch: the question's words, "refund" and "glitch", are said nowhere else)."""
    out = [{"role": t["role"], "text": t["text"], "ts": t["ts"]} for t in sample_turns(n)]
    out[at]["text"] = f"{out[at]['text']} {said}"
    return out


class Garbling:
    """A codec that reads every page back as noise, as a Tiny page can be."""

    name = "garbling"
    render_settings = None

    def encode(self, images: Sequence[Any], tier: Any) -> list[VisionTokens]:
        grid = np.zeros((tier.grid, tier.grid, 1), np.float32)
        return [VisionTokens(tier, grid, codec=self.name) for _ in images]

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        return [Recollection("Usr: qx zv 8l ~~ wq tc", t.tier, 0.1, 6, codec=self.name)
                for t in tokens]


class Miscounting(Garbling):
    """A codec that gives one vision-token record or reading too few for a batch."""

    def __init__(self, call: str) -> None:
        self.call = call

    def encode(self, images: Sequence[Any], tier: Any) -> list[VisionTokens]:
        made = super().encode(images, tier)
        return made[1:] if self.call == "encode" else made

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        made = super().decode(tokens, max_new_tokens=max_new_tokens)
        return made[1:] if self.call == "decode" else made


@pytest.mark.parametrize("call", ["encode", "decode"])
def test_a_codec_returning_too_few_results_raises_codec_error(call: str) -> None:
    """A codec whose batch came back one short used to fail inside the memory with a bare
    ``ValueError: zip() argument 2 is shorter than argument 1``, naming neither it nor
    the call."""
    mem = OpticalMemory(codec=Miscounting(call), render_settings=SMALL, verbatim_turns=2)
    mem.add_many("s", glitch_turns(60))
    ctx = mem.context("s")
    assert sum(p.shown == "image" for p in ctx.pages) > 1
    with pytest.raises(CodecError, match=rf"'garbling': {call}\(\) was given") as err:
        ctx.text()
    asked, got = map(int, re.findall(r"given (\d+) pages and returned (\d+) items",
                                     str(err.value))[0])
    assert got == asked - 1


@pytest.mark.parametrize(("n", "read_back"), [(30, 1), (120, 0)], ids=["tiny", "out"])
def test_recall_finds_a_fact_by_the_words_around_it(clock: Clock, n: int, read_back: int) -> None:
    """The page holding the answer is read back as noise (at Tiny) or not at all (out of
    the context): only the words around the fact can lead the question to it."""
    mem = OpticalMemory(codec=Garbling(), render_settings=SMALL, verbatim_turns=2, clock=clock)
    mem.add_many("team", glitch_turns(n))
    best = mem.recall("team", GLITCH_QUESTION, k=3)[0]
    assert best.source == "facts" and 3 in best.seqs and "KX-9041" in best.text
    page = mem.pages("team")[best.page_no]
    assert best.text == facts_line(page.facts)  # shown: the facts alone, not their cues
    assert page.cues[page.facts.index("KX-9041")] == "Noted tracks duplicate refund glitch"
    readings = [h for h in mem.recall("team", "qx zv", k=500) if h.page_no == best.page_no]
    assert [h.text for h in readings] == ["Usr: qx zv 8l ~~ wq tc"] * read_back


def test_recall_finds_a_fact_by_its_kind(clock: Clock) -> None:
    """Nothing around the address says "e-mail", and the page reads back as noise: the
    kind of fact it is leads the question to it."""
    turns = glitch_turns(120, "Noted: write to dana.okafor@arclight.io before Friday.", at=5)
    mem = OpticalMemory(codec=Garbling(), render_settings=SMALL, verbatim_turns=2, clock=clock)
    mem.add_many("team", turns)
    best = mem.recall("team", "Which e-mail address were we given?", k=3)[0]
    assert best.source == "facts" and 5 in best.seqs and "dana.okafor@arclight.io" in best.text
    assert "e-mail" not in mem.pages("team")[best.page_no].cues


def test_page_records_from_before_cues_still_load_and_recall() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL, verbatim_turns=2)
    mem.add_many("team", glitch_turns(120))
    pages = mem.pages("team")
    assert all(len(p.cues) == len(p.facts) for p in pages)
    old = InMemoryStore()  # the same conversation as sealed by a version without cues
    old.append_turns("team", [(t.role, t.text, t.ts, dict(t.meta)) for t in mem.turns("team")])
    for p in pages:
        record = json.loads(p.to_json())
        del record["cues"]
        back = PageRecord.from_json("team", json.dumps(record))
        assert back == dataclasses.replace(p, cues=()) and back.cues == ()
        old.add_page(back)
    assert PageRecord.from_json("team", pages[0].to_json()) == pages[0]
    was = OpticalMemory(old, codec=None, render_settings=SMALL, verbatim_turns=2)
    [hit] = was.recall("team", "KX-9041", k=1)  # facts are found by their value, as before
    assert hit.source == "facts" and 3 in hit.seqs
    cue_only = "What tracks the refund glitch?"  # no kind of fact ("ticket") asked for
    assert all(3 not in h.seqs for h in was.recall("team", cue_only, k=3))
    assert 3 in mem.recall("team", cue_only, k=1)[0].seqs  # … and now by their words


def test_forget_and_delete() -> None:
    mem = OpticalMemory(codec=None, render_settings=SMALL)
    bulk(mem, 40)
    pages = mem.pages("team")
    assert mem.forget("team", 10) == 10
    assert mem.turns("team")[0].seq == 10 and mem.pages("team") == pages
    mem.recall("team", "TITAN")
    mem.delete_session("team")
    assert mem.sessions() == [] and mem.pages("team") == [] and mem.turns("team") == []
    bulk(mem, 40)  # a new session under the same id starts clean
    assert mem.pages("team") == pages


def test_memory_options_are_checked() -> None:
    with pytest.raises(ValueError, match="verbatim_turns"):
        OpticalMemory(codec=None, verbatim_turns=0)
    with pytest.raises(ValueError, match="recollect"):
        OpticalMemory(codec=None, recollect="eager")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not 'gpu'"):
        OpticalMemory(codec="gpu")  # type: ignore[arg-type]
    with pytest.raises(StoreURLError, match="unknown store scheme"):
        OpticalMemory("postgres://x")
    # a path (or anything else that is not a store) used to be taken as the store, and
    # the first add failed with "'PosixPath' object has no attribute 'append_turn'"
    with pytest.raises(StoreURLError, match=r"PosixPath .*sqlite:///path\.db"):
        OpticalMemory(Path("chat.db"), codec=None)  # type: ignore[arg-type]


def test_recollect_batch_size_is_checked() -> None:
    """``batch_size=0`` ended in range()'s "arg 3 must not be zero" ValueError, and 2.5 in
    a bare TypeError, from deep inside the batching loop."""
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hello")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigurationError, match="batch_size"):
            mem.recollect("s", batch_size=bad)  # type: ignore[arg-type]
    assert mem.recollect("s", batch_size=np.int64(4)) == 0  # type: ignore[arg-type]
    # the async twin takes the same options (it took only all_pages)
    with pytest.raises(ConfigurationError, match="batch_size"):
        asyncio.run(mem.arecollect("s", batch_size=0))
    assert asyncio.run(mem.arecollect("s", batch_size=4, progress=lambda d, t: None)) == 0


def test_a_closed_in_process_store_refuses_work() -> None:
    """The in-process store went on working after close() (the memory's included), where
    a closed SQLite or Redis store raises StoreError: code that used a closed memory by
    mistake worked in tests and failed only in production."""
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hi")
    mem.close()
    for use in (lambda: mem.add("s", "user", "again"), lambda: mem.context("s"),
                lambda: mem.store.turn_count("s"), lambda: list(mem.store.sessions()),
                lambda: asyncio.run(mem.store.aget_turns("s", 0, 1))):
        with pytest.raises(StoreError, match="closed"):
            use()
    mem.close()  # closing again is harmless, as with the other stores


def test_closing_one_memory_on_a_named_store_leaves_the_others_working() -> None:
    """memory://NAME shares one store between the memories that open it: each has a handle
    of its own, so one memory's close() closes its own handle only."""
    one = OpticalMemory("memory://closing-one-of-two", codec=None)
    two = OpticalMemory("memory://closing-one-of-two", codec=None)
    one.add("s", "user", "from one")
    one.close()
    with pytest.raises(StoreError, match="closed"):
        one.add("s", "user", "after close")
    two.add("s", "assistant", "from two")
    assert [t.text for t in two.store.get_turns("s", 0, 10)] == ["from one", "from two"]
    three = OpticalMemory("memory://closing-one-of-two", codec=None)  # opened after a close
    assert three.store.turn_count("s") == 2
    two.close()
    three.close()
    with pytest.raises(StoreError, match="closed"):
        two.store.handle()


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), InMemoryStore)
    one, two = open_store("memory://shared"), open_store("memory://shared")
    one.append_turn("s", "user", "hi", 0.0)
    assert two.turn_count("s") == 1  # one name, one store's data
    s = open_store(f"sqlite:///{tmp_path}/a.db?synchronous=NORMAL")
    assert isinstance(s, SQLiteStore) and s.path == tmp_path / "a.db"
    s.close()
    # a path no file can have failed inside sqlite3 with a bare ValueError ("embedded null
    # byte") or UnicodeEncodeError; one with options but no path, as "cannot open SQLite
    # store ." (StoreUnavailableError, as if the disk were at fault)
    for bad in ("nothing", "sqlite://", "sqlite:///x.db?mode=ro", "ftp://x",
                "sqlite:///?synchronous=NORMAL",
                # an empty value was dropped, leaving the FULL default as if asked for
                f"sqlite:///{tmp_path}/a.db?synchronous=", f"sqlite:///{tmp_path}/a.db?mode=",
                f"sqlite:///{tmp_path}/a\x00b.db", f"sqlite:///{tmp_path}/\ud800.db"):
        with pytest.raises(StoreURLError):
            open_store(bad)
    # options of a memory URL were taken into the store's name: a new, empty store each
    for bad in ("memory://?synchronous=NORMAL", "memory://shared?x=1", "memory://#a"):
        with pytest.raises(StoreURLError, match="takes no options"):
            open_store(bad)

    made: list[str] = []

    def factory(url: str) -> Store:
        made.append(url)
        return InMemoryStore()

    register_store("test-kv", factory)
    assert "test-kv" in store_schemes()
    assert isinstance(open_store("test-kv://host/0"), InMemoryStore) and made == [
        "test-kv://host/0"]
    with pytest.raises(StoreURLError, match="already registered"):
        register_store("test-kv", factory)
    register_store("lazy-kv", "opticmem.memory_store:InMemoryStore")
    with pytest.raises(TypeError):  # InMemoryStore takes no URL: the target is imported
        open_store("lazy-kv://")
    register_store("broken-kv", "opticmem.nope:Store")
    with pytest.raises(StoreURLError, match="not available"):
        open_store("broken-kv://")


def test_background_mode_without_a_model_is_harmless() -> None:
    mem = OpticalMemory(codec=None, recollect="background", render_settings=SMALL,
                        verbatim_turns=2)
    bulk(mem, 30)
    mem.context("team")
    assert mem.flush(5.0)
    mem.close()


def test_metadata_round_trips() -> None:
    mem = OpticalMemory(codec=None)
    meta: Mapping[str, Any] = {"user_id": 7, "tags": ["a", "b"]}
    t = mem.add("s", "user", "hi", meta=meta, ts=5.0)
    assert (t.meta, t.ts) == (meta, 5.0) and mem.turns("s")[0].meta == meta


def test_the_library_configures_no_logging_and_warns_nothing() -> None:
    """Inside someone else's application: importing and using the library adds no handler
    and sets no level on the root logger, and nothing it does warns (-W error)."""
    script = """
import logging
import subprocess
import sys
import opticmem, opticmem.integrations, opticmem.encoder
from opticmem import OpticalMemory
mem = OpticalMemory(codec=None, budget_tokens=2048)
for i in range(40):
    mem.add("s", "user", f"turn {i}: ticket ABC-{i} " + "words " * 60)
ctx = mem.context("s")
ctx.text(); ctx.messages(); ctx.messages(format="openai")
assert mem.recall("s", "ABC-3")
mem.close()
root = logging.getLogger()
assert not root.handlers and root.level == logging.WARNING, (root.handlers, root.level)
assert not logging.getLogger("opticmem").handlers
"""
    done = subprocess.run([sys.executable, "-W", "error", "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not done.stdout and not done.stderr  # no print, no log line, no warning


def test_a_custom_cost_model_keeps_its_own_decay_mark() -> None:
    # The mark was keyed by the cost model's label alone: a TileCost with other prices but
    # the default label shared the built-in "openai" consumer's mark, so that consumer's
    # budget pressure put this one's pages out of context though they fit its budget.
    store = InMemoryStore()
    openai = OpticalMemory(store, codec=None, cost_model="openai")
    cheap = OpticalMemory(store, codec=None, cost_model=TileCost(tile_tokens=1))
    openai.add_many("team", [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                             for t in sample_turns(200)])
    assert openai.context("team", budget_tokens=4000).demotions > 0
    ctx = cheap.context("team", budget_tokens=4000)
    assert ctx.demotions == 0 and ctx.archived_pages == 0
    assert cost_model(TileCost(tile_tokens=1)).key != cost_model("openai").key
    assert cost_model(TileCost()).key == cost_model("openai").key
    # the built-ins keep the keys their marks are already stored under
    assert all(cost_model(p).key == cost_model(p).name for p in PRESETS)
