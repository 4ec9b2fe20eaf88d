"""The contact sheet: columns side by side, every page at one display size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from opticmem.render import ORDER, TurnText, layout_pages, render_page
from opticmem.render.sheet import SheetColumn, contact_sheet


def test_columns_rows_and_decay_are_visible() -> None:
    page = layout_pages([TurnText("user", "Decay test " * 200)])[0]
    cols = [SheetColumn(t.value, [(f"p0 {t.value}", render_page(page, t))] * (i + 1))
            for i, t in enumerate(ORDER)]
    sheet = contact_sheet(cols, cell=160, crop=0.25, title="decay")
    assert sheet.mode == "L"
    assert sheet.width == 8 + 4 * (160 + 8)
    assert sheet.height == 8 + 22 + 22 + 4 * (160 + 20 + 8) + 8
    arr = np.asarray(sheet, dtype=np.float64)
    # a magnified Tiny crop is blurrier than the Large one: fewer sharp transitions
    x0 = [8 + i * 168 for i in range(4)]
    y0 = 8 + 22 + 22
    sharp = [np.abs(np.diff(arr[y0 : y0 + 160, x : x + 160], axis=1)).mean() for x in x0]
    assert sharp[0] > sharp[-1]


def test_empty_columns_and_bad_arguments() -> None:
    sheet = contact_sheet([SheetColumn("Large"), SheetColumn("Tiny")], cell=64)
    assert sheet.size == (8 + 2 * 72, 8 + 22 + 8)
    with pytest.raises(ValueError, match="cell"):
        contact_sheet([SheetColumn("x")], cell=4)
    with pytest.raises(ValueError, match="crop"):
        contact_sheet([SheetColumn("x")], crop=0)
    with pytest.raises(ValueError, match="column"):
        contact_sheet([])
    wide = Image.new("L", (300, 100), 0)
    sheet = contact_sheet([SheetColumn("w", [("x", wide)])], cell=150)
    assert sheet.size == (166, 8 + 22 + 178 + 8)


def test_titles_and_labels_are_drawn_in_the_pages_glyphs() -> None:
    # Pillow's default font drew a session named in Hangul as boxes.
    from opticmem.render.draw import draw_text

    box = draw_text("\U0010fffd")  # no glyph: the pages' replacement box
    hangul = draw_text("한")
    assert hangul.shape == (24, 24) and draw_text("ab").shape == (24, 24)
    assert not np.array_equal(hangul, np.hstack([box, box])) and hangul.min() < 128
    assert np.array_equal(draw_text("a\u0301\n\x00b"), draw_text("ab"))  # no cell, no ink
    assert draw_text("").shape == (24, 0)
    page = Image.new("L", (256, 256), 255)

    def title_band(title: str) -> np.ndarray:
        sheet = contact_sheet([SheetColumn("작은", [("기억", page)])], cell=64, title=title)
        return np.asarray(sheet)[8:20, 8:72]

    assert title_band("기억 세션").min() < 128  # ink
    assert not np.array_equal(title_band("기억 세션"), title_band("\U0010fffd" * 4))
    long = contact_sheet([SheetColumn("x" * 500)], cell=32)  # cut at its column
    assert long.size == (8 + 40, 8 + 22 + 8)


@pytest.mark.parametrize("cell", [10**6, 4097])
def test_a_cell_larger_than_any_page_needs_is_refused_before_allocating(cell: int) -> None:
    """cell=10**6 asked Pillow for terabytes and the process was killed."""
    with pytest.raises(ValueError, match="cell must be 16 to 4096 pixels"):
        contact_sheet([SheetColumn("x")], cell=cell)


@pytest.mark.parametrize("cell", [16.5, "64", True])
def test_a_cell_that_is_not_a_whole_number_is_a_type_error_naming_it(cell: object) -> None:
    with pytest.raises(TypeError, match="cell must be a whole number of pixels"):
        contact_sheet([SheetColumn("x")], cell=cell)  # type: ignore[arg-type]
