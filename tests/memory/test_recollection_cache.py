"""How readings are cached: per page, tier and what produced them — never served to a
memory that would have read the page otherwise. The codecs here are cheap stand-ins that
say in their text how they were called."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from opticmem import InMemoryStore, OpticalMemory, RenderSettings, Tier
from opticmem.encoder.codec import Recollection, VisionTokens
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
