"""The memory with a real codec: the tiny randomly initialised DeepSeek-OCR-style model.

Its readings are meaningless text, but every path is the real one — rendering, encoding
to vision tokens, batched decoding, caching per (page, tier, codec), recall over what it
read. ``Counting`` wraps the real codec only to count its calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from opticmem import InMemoryStore, OpticalMemory, RenderSettings, Tier
from opticmem.artefacts import Job
from opticmem.context import TextSegment, VisionSegment
from opticmem.encoder.codec import Codec, Recollection, VisionTokens
from tests.memory.sample import turns as sample_turns
from tests.memory.sample import write

ocr = pytest.importorskip("opticmem.encoder.ocr")

SMALL = RenderSettings(max_rows=8)
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def real_codec() -> Codec:
    codec: Codec = ocr.OCRCodec.random("test", seed=0)
    return codec


class Counting:
    """Delegates to a real codec and records the batches it was given."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.encoded: list[tuple[Tier, int]] = []
        self.decoded: list[int] = []

    @property
    def name(self) -> str:
        return self.codec.name

    @property
    def render_settings(self) -> Any:
        return self.codec.render_settings

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        self.encoded.append((tier, len(images)))
        return self.codec.encode(images, tier)

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        self.decoded.append(len(tokens))
        return self.codec.decode(tokens, max_new_tokens=max_new_tokens)


def memory(codec: Codec, store: InMemoryStore | None = None, **kw: Any) -> OpticalMemory:
    return OpticalMemory(store or InMemoryStore(), codec=codec, render_settings=SMALL,
                         verbatim_turns=3, decode_max_tokens=MAX_TOKENS,
                         policy=kw.pop("policy", "rank"), **kw)


def feed(mem: OpticalMemory, n: int, start: int = 0) -> None:
    mem.add_many("team", [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                          for t in sample_turns(start + n)[start:]])


def test_counting_wrapper_is_a_codec(real_codec: Codec) -> None:
    assert isinstance(Counting(real_codec), Codec)


def test_each_page_is_read_once_per_tier_in_batches(real_codec: Codec) -> None:
    codec = Counting(real_codec)
    mem = memory(codec)  # type: ignore[arg-type]
    feed(mem, 60)
    ctx = mem.context("team")
    assert codec.encoded == [] and codec.decoded == []  # context() needs no model
    text = ctx.text()
    images = [p for p in ctx.pages if p.shown == "image"]
    assert images and codec.decoded == [len(images)]  # one batch for every page
    assert sorted(codec.encoded) == sorted(
        (t, sum(1 for p in images if p.tier == t)) for t in {p.tier for p in images})
    assert "[page image" not in text
    ctx.text()
    assert codec.decoded == [len(images)]  # cached: no second reading
    before = {p.page_no: p.tier for p in images}
    feed(mem, 40, start=60)  # pages age: only those reaching a new tier are read again
    ctx2 = mem.context("team")
    ctx2.text()
    moved = [p for p in ctx2.pages if p.shown == "image" and before.get(p.page_no) != p.tier]
    assert codec.decoded[1:] == [len(moved)]


def test_readings_live_in_the_store_keyed_by_codec(real_codec: Codec) -> None:
    store = InMemoryStore()
    a = memory(real_codec, store)
    feed(a, 40)
    a.context("team").text()
    counting = Counting(real_codec)
    b = memory(counting, store)  # type: ignore[arg-type]
    b.context("team").text()
    assert counting.decoded == [] and counting.encoded == []


def test_embeddings_interleave_vision_tokens_and_text(real_codec: Codec) -> None:
    codec = Counting(real_codec)
    mem = memory(codec)  # type: ignore[arg-type]
    feed(mem, 60)
    ctx = mem.context("team")
    segs = ctx.embeddings()
    vision = [s for s in segs if isinstance(s, VisionSegment)]
    assert [v.page_no for v in vision] == [p.page_no for p in ctx.pages if p.shown == "image"]
    for v in vision:
        g = v.tier.grid
        assert v.tokens.grid.shape[:2] == (g, g) and v.tokens.codec == real_codec.name
        assert np.isfinite(v.tokens.grid.astype(np.float32)).all()
    assert isinstance(segs[0], TextSegment) and isinstance(segs[-1], TextSegment)
    assert segs[-1].text.endswith(ctx.turns[-1].text)
    n_encoded = len(codec.encoded)
    ctx.embeddings()
    assert len(codec.encoded) == n_encoded  # vision tokens are cached too


def test_recall_searches_what_the_codec_read(real_codec: Codec) -> None:
    mem = memory(real_codec)
    feed(mem, 80)
    ctx = mem.context("team")
    # what the codec read, page by page
    readings = mem._artefacts.recollections("team", [Job(p.record, p.tier) for p in ctx.pages])
    word = next(w for r in readings for w in r.text.split() if len(w) > 3 and w.isalpha())
    hits = mem.recall("team", word, k=10)
    rec = [h for h in hits if h.source == "recollection"]
    assert rec, f"no recollection passage for {word!r}"
    for h in rec:
        assert h.codec == real_codec.name and 0.0 < h.confidence <= 1.0
        assert h.tier in {p.tier for p in ctx.pages if p.page_no == h.page_no}
    facts = mem.recall("team", "TITAN-100", k=1)
    assert facts[0].source == "facts" and 0 in facts[0].seqs


def test_background_recollection(real_codec: Codec) -> None:
    mem = memory(real_codec, recollect="background")
    feed(mem, 36)
    ctx = mem.context("team")
    assert mem.flush(120)
    counting = Counting(real_codec)
    again = memory(counting, mem.store)  # type: ignore[arg-type]
    again.context("team").text()
    assert counting.decoded == []  # the worker had read every page at its tier
    assert ctx.pages
    mem.close()


def test_background_recollection_reads_a_restarted_session_again(real_codec: Codec) -> None:
    """A session deleted and begun again reuses page numbers; the worker must not take the
    new pages for ones it has read already (it remembered pages by number and tier)."""
    mem = memory(real_codec, recollect="background")
    feed(mem, 36)
    mem.context("team")
    assert mem.flush(120)
    mem.delete_session("team")
    feed(mem, 36, start=40)  # other turns: other pages under the same numbers
    ctx = mem.context("team")
    assert mem.flush(120) and ctx.pages
    counting = Counting(real_codec)
    memory(counting, mem.store).context("team").text()  # type: ignore[arg-type]
    assert counting.decoded == []  # the worker had read the new pages too
    mem.close()


def test_recollect_all_pages(real_codec: Codec) -> None:
    mem = memory(real_codec)
    feed(mem, 70)
    seen: list[tuple[int, int]] = []
    n = mem.recollect("team", all_pages=True, batch_size=8,
                      progress=lambda done, total: seen.append((done, total)))
    assert n == mem.store.page_count("team") and seen[-1] == (n, n)
    assert mem.recollect("team", all_pages=True) == 0


def test_demo_with_the_random_codec(tmp_path: Path) -> None:
    from opticmem.cli import app

    conv, qs = write(tmp_path, n=120)
    result = CliRunner().invoke(app, ["demo", "--transcript", str(conv), "--questions", str(qs),
                                      "--codec", "random", "--decode-max-tokens", "8",
                                      "--budget", "3000", "--json"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.stdout)
    assert d["codec"].startswith("random:") and d["timings"]["recollect_s"] > 0
    assert d["cost"]["total"] <= 3000


def test_memory_adopts_the_codec_layout_and_warns_on_a_mismatch(
    real_codec: Codec, caplog: pytest.LogCaptureFixture,
) -> None:
    import dataclasses

    trained = RenderSettings(max_rows=20)
    codec = ocr.OCRCodec(real_codec.model, name="layout-test",  # type: ignore[attr-defined]
                         render_settings=trained)
    assert OpticalMemory(codec=codec).render_settings == trained
    with caplog.at_level("WARNING", logger="opticmem.memory"):
        OpticalMemory(codec=codec, render_settings=dataclasses.replace(trained, max_rows=10))
    assert "trained on page layout" in caplog.text
