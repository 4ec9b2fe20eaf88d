"""Drawing and tiers: geometry, ink where the text is, and byte-identical output.

The golden digests pin the exact pixels (a pure function of the shipped atlas and our
code, independent of FreeType and Pillow's layout engine) and the PNG bytes (which also
depend on Pillow's zlib; checked on this machine and the GPU machine, see
``benchmarks/results/render_determinism.md``).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from opticmem.render import (
    ORDER,
    PageLayout,
    Tier,
    TurnText,
    draw_page,
    layout_pages,
    png_bytes,
    render_page,
)
from opticmem.render.resample import to_tier
from tests.render.sample import sample_page

GOLDEN_PIXELS = {
    "large": "785e27001824b216",
    "base": "4fac0086a610dc95",
    "small": "656d711e36b0f34d",
    "tiny": "2f2da06bea6b6c73",
}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()[:16]


def test_master_geometry_and_margins() -> None:
    page = sample_page()
    img = draw_page(page)
    s = page.settings
    assert img.shape == (s.page_pixels, s.page_pixels) and img.dtype == np.uint8
    m = s.margin
    assert (img[:m] == 255).all() and (img[:, :m] == 255).all()
    assert (img < 128).any()


def test_ink_only_in_cells_that_hold_characters() -> None:
    page = layout_pages([TurnText("user", "x")])[0]
    img = draw_page(page)
    ys, xs = np.nonzero(img < 200)
    box = page.boxes()
    x0, y0, x1, y1 = box[:, 0].min(), box[:, 1].min(), box[:, 2].max(), box[:, 3].max()
    assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1


def test_missing_glyph_is_a_visible_box() -> None:
    page = layout_pages([TurnText("user", "😀")])[0]
    img = draw_page(page)
    c = page.cells()
    boxes = page.boxes()[c["char"] == 0xFFFD]
    assert len(boxes) == 2
    for x0, y0, x1, y1 in boxes:
        assert (img[y0:y1, x0:x1] < 128).sum() > 20


def test_a_hand_built_page_with_a_lone_surrogate_draws_a_box() -> None:
    # PageLayout is public; its lines used to be encoded strictly (UnicodeEncodeError).
    settings = layout_pages([TurnText("user", "x")])[0].settings
    page = PageLayout(lines=("a\ud800b",), sources=(), settings=settings, complete=False)
    boxed = PageLayout(lines=("a\ufffdb",), sources=(), settings=settings, complete=False)
    assert np.array_equal(draw_page(page), draw_page(boxed))
    assert render_page(page, Tier.TINY).size == (512, 512)


@pytest.mark.parametrize("tier", ORDER)
def test_tier_sizes_and_mode(tier: Tier) -> None:
    img = render_page(sample_page(), tier)
    assert img.size == (tier.pixels, tier.pixels) and img.mode == "L"


@pytest.mark.usefixtures("pillow_11_3_fromarray")
@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_rendering_makes_no_deprecated_pillow_call() -> None:
    """Every page went through ``Image.fromarray(master, mode="L")``: a DeprecationWarning
    per page rendered on Pillow 11.3 (an error under ``-W error``)."""
    img = render_page(sample_page(), Tier.TINY)
    assert img.mode == "L" and img.size == (Tier.TINY.pixels,) * 2


def test_a_master_that_is_not_8_bit_grey_is_refused() -> None:
    master = draw_page(sample_page())
    with pytest.raises(ValueError, match="uint8"):
        to_tier(master.astype(np.float32), Tier.TINY)


def test_rendering_is_deterministic_in_process() -> None:
    a = [png_bytes(render_page(sample_page(), t)) for t in ORDER]
    b = [png_bytes(render_page(sample_page(), t)) for t in ORDER]
    assert a == b
    for data, t in zip(a, ORDER, strict=True):
        back = np.asarray(Image.open(io.BytesIO(data)))
        assert back.shape == (t.pixels, t.pixels)
        assert (back == np.asarray(render_page(sample_page(), t))).all()


@pytest.mark.parametrize("tier", ORDER)
def test_pixels_match_golden_digest(tier: Tier) -> None:
    digest = sha(np.asarray(render_page(sample_page(), tier)).tobytes())
    assert digest == GOLDEN_PIXELS[tier.value], f"{tier.value}: pixels changed ({digest})"
