"""How readings are cached: per page, tier and what produced them — never served to a
memory that would have read the page otherwise. The codecs here are cheap stand-ins that
say in their text how they were called."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from opticmem import InMemoryStore, OpticalMemory, RenderSettings, Tier
from opticmem.artefacts import rec_key, vt_key
from opticmem.encoder.codec import CodecError, Recollection, VisionTokens
from opticmem.render import ORDER
from tests.memory.sample import turns as sample_turns

SMALL = RenderSettings(max_rows=6)


class Telling:
    """Reads each page back as a line naming its tier and the cap it was read under."""

    render_settings = None

    def __init__(self, name: str = "telling") -> None:
        self.name = name
        self.decoded: list[int] = []

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        grid = np.zeros((tier.grid, tier.grid, 1), np.float32)
        return [VisionTokens(tier, grid, codec=self.name) for _ in images]

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        self.decoded.append(len(tokens))
        return [Recollection(f"read at {t.tier.value} capped at {max_new_tokens}", t.tier,
                             0.5, 5, codec=self.name) for t in tokens]


def feed(mem: OpticalMemory, n: int, session: str = "s") -> None:
    mem.add_many(session, [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                           for t in sample_turns(n)])


def test_a_reading_capped_at_fewer_tokens_is_not_served_to_a_memory_without_the_cap() -> None:
    """Readings were cached under the codec's name alone, so a memory with
    ``decode_max_tokens`` (a quick preview, an inspect run) left its truncated readings
    in the store, and every memory on that store without the cap — or with another —
    served them as its own for good: the page was never read again in full."""
    store, codec = InMemoryStore(), Telling()
    capped = OpticalMemory(store, codec=codec, render_settings=SMALL, verbatim_turns=2,
                           decode_max_tokens=3)
    feed(capped, 40)
    assert "capped at 3" in capped.context("s").text()
    reads = sum(codec.decoded)
    assert reads > 0

    full = OpticalMemory(store, codec=codec, render_settings=SMALL, verbatim_turns=2)
    text = full.context("s").text()
    assert "capped at 3" not in text and "capped at None" in text
    assert sum(codec.decoded) == 2 * reads  # each page read again, once

    # the same cap shares the readings: nothing is read again
    again = OpticalMemory(store, codec=codec, render_settings=SMALL, verbatim_turns=2,
                          decode_max_tokens=3)
    assert "capped at None" not in again.context("s").text()
    assert sum(codec.decoded) == 2 * reads

    # and recall searches each memory's own readings
    for mem, cap in ((full, None), (again, 3)):
        hits = [h for h in mem.recall("s", "capped", k=50) if h.source == "recollection"]
        assert hits and all(f"capped at {cap}" in h.text for h in hits)


class Garbage(Telling):
    """Reads pages back as :class:`Recollection` objects holding the wrong kinds of value."""

    def __init__(self, field: str, value: object) -> None:
        super().__init__("garbage")
        self.field, self.value = field, value

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        made = super().decode(tokens, max_new_tokens=max_new_tokens)
        return [dataclasses.replace(r, **{self.field: self.value}) for r in made]


@pytest.mark.parametrize(("field", "value"), [
    ("confidence", "high"), ("text", None), ("text", b"bytes"), ("tier", "tiny"),
    ("tier", Tier.LARGE), ("tokens", 2.5), ("seconds", None), ("codec", None),
], ids=["confidence-str", "text-none", "text-bytes", "tier-str", "tier-other", "tokens",
        "seconds", "codec"])
def test_a_codec_reading_back_garbage_raises_codec_error_and_caches_nothing(
        field: str, value: object) -> None:
    """A reading was checked only for being a ``Recollection``: one holding text of
    ``None`` or bytes, a tier by name or a confidence of ``"high"`` failed later with a
    bare ``TypeError``/``AttributeError``, or was cached as it was, and the store then
    held a reading that every later recall of the session failed on
    (``CorruptRecordError``), or that said ``"None"``, for good."""
    store = InMemoryStore()
    mem = OpticalMemory(store, codec=Garbage(field, value), render_settings=SMALL,
                        verbatim_turns=2)
    feed(mem, 40)
    with pytest.raises(CodecError, match=rf"'garbage': decode\(\) .*{field}"):
        mem.context("s").text()
    keys = [rec_key("garbage", p, t) for p in mem.pages("s") for t in ORDER]
    assert len(keys) > 4 and store.get_blobs("s", keys) == [None] * len(keys)
    # a codec that reads properly afterwards leaves the memory whole
    fixed = OpticalMemory(store, codec=Telling("garbage"), render_settings=SMALL,
                          verbatim_turns=2)
    assert "capped at None" in fixed.context("s").text()
    assert fixed.recall("s", "capped")


@pytest.mark.parametrize(("field", "value"), [("confidence", np.float32(0.25)),
                                              ("tokens", np.int64(7))])
def test_a_reading_with_numpy_numbers_is_cached_and_found(field: str, value: object) -> None:
    """A codec that scores with NumPy gives ``np.float32`` confidences and ``np.int64``
    token counts: numbers, but ``json`` refused them, and no page could be read."""
    mem = OpticalMemory(InMemoryStore(), codec=Garbage(field, value), render_settings=SMALL,
                        verbatim_turns=2)
    feed(mem, 40)
    assert "capped at None" in mem.context("s").text()
    hits = [h for h in mem.recall("s", "capped") if h.source == "recollection"]
    assert hits and all(h.confidence == (0.25 if field == "confidence" else 0.5)
                        for h in hits)


class TierCounting(Telling):
    """:class:`Telling`, counting the pages it reads at each tier."""

    def __init__(self) -> None:
        super().__init__("tier-counting")
        self.tiers: list[Tier] = []

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        self.tiers += [t.tier for t in tokens]
        return super().decode(tokens, max_new_tokens=max_new_tokens)


def test_a_bulk_import_reads_ahead_at_large_only_the_pages_shown_at_large() -> None:
    """A background memory read every page it sealed at Large: a history imported with
    one ``add_many`` seals dozens of pages at once, nearly all past Large already, and
    each was read at Large for nothing. Only those the policy shows at Large now are read
    ahead; a context reads the rest at the tiers it shows them at."""
    codec = TierCounting()
    mem = OpticalMemory(codec=codec, render_settings=SMALL, verbatim_turns=2,
                        recollect="background")
    feed(mem, 120)
    assert mem.flush(60)
    pages = mem.store.page_count("s")
    assert pages > 8
    assert codec.tiers == [Tier.LARGE] * 2  # RankDecay: ranks 0-1 at Large
    shown = mem.context("s").pages
    assert mem.flush(60)
    assert sorted(codec.tiers[2:]) == sorted(v.tier for v in shown
                                             if v.shown == "image" and v.tier is not Tier.LARGE)
    mem.close()


@pytest.mark.parametrize("damaged", [("rec",), ("rec", "vt")])
def test_an_unreadable_cached_artefact_is_made_again_and_cached_over(
    damaged: tuple[str, ...],
) -> None:
    """Readings and vision tokens are a cache, recomputable from the page record: one a
    damaged store (or another version) left unreadable made every recall and context text
    of its session fail with CorruptRecordError, for good."""
    store, codec = InMemoryStore(), Telling()
    mem = OpticalMemory(store, codec=codec, render_settings=SMALL, verbatim_turns=2)
    feed(mem, 40)
    ctx = mem.context("s")
    first = ctx.text()
    page = next(v.record for v in ctx.pages if v.shown == "image")
    keys = [k for key_of in ((rec_key, vt_key)[("rec", "vt").index(d)] for d in damaged)
            for k in (key_of(codec.name, page, t) for t in ORDER)
            if store.get_blob("s", k) is not None]
    assert len(keys) == len(damaged)
    for key in keys:
        store.put_blob("s", key, b"\x00not an artefact")
    reads = sum(codec.decoded)
    assert mem.context("s").text() == first
    assert sum(codec.decoded) == reads + 1  # read again ...
    assert all(store.get_blob("s", k) != b"\x00not an artefact" for k in keys)  # ... kept
    assert mem.recall("s", "read", k=3)


def test_recall_without_reading_passes_over_an_unreadable_cached_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Recall indexes the readings it finds cached, and decoded them itself, without the
    cache's check: a reading a damaged store left unreadable still failed every recall of
    its session that reads nothing (``decode=False``) with CorruptRecordError
    ("unreadable recollection of page 3"). It is passed over as absent, and warned of, as
    the cache does; a recall that reads makes it again."""
    store, codec = InMemoryStore(), Telling()
    mem = OpticalMemory(store, codec=codec, render_settings=SMALL, verbatim_turns=2)
    feed(mem, 40)
    ctx = mem.context("s")
    ctx.text()  # reads the pages it shows
    page = next(v.record for v in ctx.pages if v.shown == "image")
    [key] = [k for k in (rec_key(codec.name, page, t) for t in ORDER)
             if store.get_blob("s", k) is not None]
    store.put_blob("s", key, b"\x00not an artefact")
    reads = sum(codec.decoded)
    with caplog.at_level(logging.WARNING):
        hits = mem.recall("s", "read", k=50, decode=False)
    assert key in caplog.text
    assert sum(codec.decoded) == reads  # nothing read ...
    assert hits and page.page_no not in {h.page_no for h in hits if h.source == "recollection"}
    assert any(h.page_no == page.page_no for h in mem.recall("s", "read", k=50))
    assert sum(codec.decoded) > reads  # ... until a recall reads (it again)
    assert store.get_blob("s", key) != b"\x00not an artefact"
