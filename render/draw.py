"""Page layout → pixels of the Large master, by copying glyph tiles into the grid.

No font is rasterised here (see :mod:`opticmem.render.atlas`): a page's pixels are a pure
function of its lines and settings, identical on every machine.
"""

from __future__ import annotations

import numpy as np

from opticmem.render.atlas import load_atlas
from opticmem.render.layout import PageLayout


def draw_page(page: PageLayout) -> np.ndarray:
    """The Large master of a page as a ``(P, P)`` uint8 array (255 = paper, 0 = ink)."""
    atlas = load_atlas()
    s = page.settings
    cw, chh = atlas.cell_w, atlas.cell_h
    rows, cols = s.rows, s.columns
    ids = np.full((rows, cols + 1), atlas.blank_tile, dtype=np.int32)  # +1: wide-char spill
    for r, line in enumerate(page.lines[:rows]):
        if not line:
            continue
        # surrogatepass: a lone surrogate in a hand-built page is a box, not an error
        # (layout already shows them as U+FFFD).
        cps = np.frombuffer(line.encode("utf-32-le", "surrogatepass"), dtype="<u4")
        width = atlas.width_lut[cps].astype(np.int64)
        col = np.cumsum(width) - width
        keep = col < cols
        cps, width, col = cps[keep], width[keep], col[keep]
        first = atlas.first_lut[cps]
        ids[r, col] = first
        wide = width == 2
        ids[r, col[wide] + 1] = first[wide] + 1
    tiles = atlas.tiles[ids[:, :cols]]  # (rows, cols, ch, cw)
    body = tiles.transpose(0, 2, 1, 3).reshape(rows * chh, cols * cw)
    img = np.full((s.page_pixels, s.page_pixels), 255, dtype=np.uint8)
    m = s.margin
    img[m : m + rows * chh, m : m + cols * cw] = body
    return img
