"""Reading how far down a page its writing reaches, at every tier (``render.ink``)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from opticmem.render import ORDER, RenderSettings, Tier, draw_page, render_page, to_tier
from opticmem.render.ink import INK_LEVEL, ink_rows, row_darkness
from opticmem.render.layout import PageLayout
from tests.render.sample import sample_page

SETTINGS = RenderSettings()
FAINT = ["_", ".", "`", "'", "😀", "-", "·", "°", "^", ",", "~"]
"""Characters with the least ink, or ink at the very edge of their cell."""
DENSE = ["_" * 104, "#" * 104, "█" * 104, "g" * 104, "|" * 104, "`" * 104, "한" * 52]
"""Full rows whose resampling halo reaches furthest into the rows beside them."""


def page_of(lines: tuple[str, ...], settings: RenderSettings = SETTINGS) -> PageLayout:
    return PageLayout(lines=lines, sources=(), settings=settings, complete=False)


@pytest.mark.parametrize("tier", ORDER, ids=lambda t: t.value)
@pytest.mark.parametrize("row", range(1, 6))  # every phase of a row against the pixels
def test_ink_level_separates_faint_rows_from_halos(tier: Tier, row: int) -> None:
    above = ("",) * row
    for line in DENSE:
        dark = row_darkness(to_tier(draw_page(page_of((*above, line, ""))), tier))
        assert dark[row - 1] >= INK_LEVEL + 10, (line[:3], "halo above")
        assert dark[row + 1] >= INK_LEVEL + 10, (line[:3], "halo below")
    for ch in FAINT:
        dark = row_darkness(to_tier(draw_page(page_of((*above, ch, ""))), tier))
        assert dark[row] <= INK_LEVEL - 15, ch


@pytest.mark.parametrize("tier", ORDER, ids=lambda t: t.value)
@pytest.mark.parametrize("last", [*FAINT, "Hangul 한국어", "x" * 104])
@pytest.mark.parametrize("length", [1, 7, 52])
def test_counts_rows_to_the_last_that_carries_ink(tier: Tier, last: str, length: int) -> None:
    lines = (*("Hello, world" if i % 3 else "" for i in range(length - 1)), last)
    assert ink_rows(render_page(page_of(lines), tier), SETTINGS) == length


def test_blank_and_trailing_blank_rows() -> None:
    assert ink_rows(render_page(page_of(()), Tier.TINY)) == 0
    assert ink_rows(render_page(page_of(("a", "", "   ", "")), Tier.SMALL)) == 1
    assert ink_rows(Image.new("RGB", (640, 640), "white")) == 0


def test_any_mode_and_size_of_the_same_page() -> None:
    page = sample_page()
    expected = max(i + 1 for i, line in enumerate(page.lines) if line.strip())
    img = render_page(page, Tier.BASE)
    assert ink_rows(img.convert("RGBA")) == expected
    assert ink_rows(img.convert("RGB").resize((777, 777))) == expected


def test_other_page_geometry() -> None:
    short = RenderSettings(page_pixels=640, margin=8, max_rows=10)
    lines = ("one", "", "three")
    assert ink_rows(to_tier(draw_page(page_of(lines, short)), Tier.TINY), short) == 3


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from(["", "", " ", "word", "숫자 42", ".", "_x", "😀 ok"]),
                max_size=52),
       st.sampled_from(ORDER))
@example(["", "", "", "", "", "", "", "_x"], Tier.TINY)  # an underscore's halo, found by CI
def test_matches_the_layout_for_any_lines(lines: list[str], tier: Tier) -> None:
    expected = max((i + 1 for i, line in enumerate(lines) if line.strip()), default=0)
    assert ink_rows(render_page(page_of(tuple(lines)), tier)) == expected
