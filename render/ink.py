"""How far down a page its writing reaches, read back from the page's pixels at any tier.

A reader of our grid knows where each character it writes goes (its cursor row), but not
how many rows the page holds: a decoder that takes a paragraph break for the end of the
page stops with half the page unread. The rows that carry ink say it, and they survive
every tier: a text row is 24 Large pixels high, still 9.6 at Tiny, and Lanczos keeps a
row of glyphs far darker than the ringing it leaves in the rows beside it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from opticmem.render.layout import RenderSettings

INK_LEVEL = 200
"""A pixel darker than this (0 = ink, 255 = paper) is writing. Inside a row's band, the
halo of a full row of glyphs above or below stays above ~213 at every tier and row; a row
holding one faint character (an emoji, a back-tick, a full stop, an underscore) has a
pixel below ~183 even at Tiny (``tests/render/test_ink.py`` measures both)."""


def row_darkness(image: Image.Image, settings: RenderSettings | None = None) -> np.ndarray:
    """``(rows,)`` uint8: the darkest pixel of each text row of ``settings``' grid.

    ``image`` is the page at any tier (resampled from the Large master, any mode). The top
    tenth and the bottom 7% of each row's band, where a neighbour's resampling halo is
    darkest (glyphs reach from the cell's 3rd to its 23rd pixel row of 24), are not looked
    at; a band with no pixel left reads as paper (255).
    """
    s = settings or RenderSettings()
    page = np.asarray(image.convert("L"), dtype=np.uint8)
    scale = page.shape[0] / s.page_pixels
    row_h = s.cell_height * scale
    darkest = np.full(s.rows, 255, dtype=np.uint8)
    for r in range(s.rows):
        top = (s.margin + r * s.cell_height) * scale
        band = page[int(np.floor(top + 0.1 * row_h)) : int(np.ceil(top + 0.93 * row_h))]
        if band.size:
            darkest[r] = band.min()
    return darkest


def ink_rows(image: Image.Image, settings: RenderSettings | None = None) -> int:
    """The text rows of ``settings``' grid up to the last that carries ink (0: blank page),
    read from the page at any tier (:func:`row_darkness`)."""
    inked = np.flatnonzero(row_darkness(image, settings) < INK_LEVEL)
    return int(inked[-1]) + 1 if inked.size else 0
