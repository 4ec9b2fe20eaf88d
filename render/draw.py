"""Page layout → pixels of the Large master, by copying glyph tiles into the grid.

No font is rasterised here (see :mod:`opticmem.render.atlas`): a page's pixels are a pure
function of its lines and settings, identical on every machine.
"""

from __future__ import annotations

import numpy as np

from opticmem.render.atlas import OTHER, SPACE, Atlas, load_atlas
from opticmem.render.layout import PageLayout


def draw_page(page: PageLayout) -> np.ndarray:
    """The Large master of a page as a ``(P, P)`` uint8 array (255 = paper, 0 = ink)."""
    atlas = load_atlas()
    s = page.settings
    cw, chh = atlas.cell_w, atlas.cell_h
    rows, cols = s.rows, s.columns
    ids = np.full((rows, cols), atlas.blank_tile, dtype=np.int32)
    for r, line in enumerate(page.lines[:rows]):
        if line:
            ids[r] = _line_tiles(atlas, line, cols)
    tiles = atlas.tiles[ids]  # (rows, cols, ch, cw)
    body = tiles.transpose(0, 2, 1, 3).reshape(rows * chh, cols * cw)
    img = np.full((s.page_pixels, s.page_pixels), 255, dtype=np.uint8)
    m = s.margin
    img[m : m + rows * chh, m : m + cols * cw] = body
    return img


def draw_text(text: str) -> np.ndarray:
    """One line of ``text`` in the pages' own glyphs, as a ``(cell_h, cells · cell_w)``
    uint8 array: captions (a contact sheet's titles) in every script the pages show,
    where Pillow's default font draws Hangul and CJK as boxes. Characters that take no
    cell on a page (controls, format characters, combining marks) are left out."""
    atlas = load_atlas()
    shown = "".join(ch for ch in text if ch.isprintable() and atlas.char_class(ch) in
                    (OTHER, SPACE))
    cells = int(sum(atlas.width(ch) for ch in shown))
    ids = _line_tiles(atlas, shown, cells)
    return atlas.tiles[ids].transpose(1, 0, 2).reshape(atlas.cell_h, cells * atlas.cell_w)


def _line_tiles(atlas: Atlas, line: str, cols: int) -> np.ndarray:
    """``(cols,)`` tile ids of one line: each character's tiles from its cell on (a wide
    one takes two), blank cells after the text, and what passes ``cols`` cut off."""
    ids = np.full(cols + 1, atlas.blank_tile, dtype=np.int32)  # +1: a wide char's spill
    # surrogatepass: a lone surrogate in a hand-built page is a box, not an error
    # (layout already shows them as U+FFFD).
    cps = np.frombuffer(line.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    width = atlas.width_lut[cps].astype(np.int64)
    col = np.cumsum(width) - width
    keep = col < cols
    cps, width, col = cps[keep], width[keep], col[keep]
    first = atlas.first_lut[cps]
    ids[col] = first
    wide = width == 2
    ids[col[wide] + 1] = first[wide] + 1
    return ids[:cols]
