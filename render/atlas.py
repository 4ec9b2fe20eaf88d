"""The shipped glyph-tile atlas: which characters have glyphs, how wide they are, their pixels.

Built once by ``tools/build_atlas.py`` from the fonts credited in ``fonts/README.md``.
Every cell of a page is one 12×24 tile; a wide (East Asian) glyph is two adjacent tiles.
Loading is lazy and cached per process.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

ATLAS_FILE = "atlas.npz"


class AtlasError(RuntimeError):
    """The glyph atlas is missing or unreadable (a broken install)."""


@dataclass(frozen=True, eq=False)
class Atlas:
    """Glyph tiles and the code point → (first tile, width) index."""

    tiles: np.ndarray  # (T, cell_h, cell_w) uint8, 255 = paper
    index: dict[int, tuple[int, int]]
    cell_w: int
    cell_h: int
    blank_tile: int
    box_tiles: dict[int, int]  # width → first tile of the replacement box
    unicode_version: str
    first_lut: np.ndarray  # (0x110000,) int32: first tile per code point (box for unknown)
    width_lut: np.ndarray  # (0x110000,) uint8: cells per code point

    def has(self, ch: str) -> bool:
        return ord(ch) in self.index

    def width(self, ch: str) -> int:
        """Cells ``ch`` occupies: from the atlas when it has a glyph, else by East Asian width."""
        hit = self.index.get(ord(ch))
        if hit is not None:
            return hit[1]
        return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1

    def tiles_for(self, ch: str) -> tuple[int, int, bool]:
        """``(first_tile, width, found)``; a missing glyph gets the replacement box, and so
        does U+FFFD itself, which is how the layout marks characters no font has."""
        if ch == "\ufffd":
            return self.box_tiles[1], 1, False
        hit = self.index.get(ord(ch))
        if hit is not None:
            return hit[0], hit[1], True
        w = self.width(ch)
        return self.box_tiles[w], w, False


@cache
def load_atlas() -> Atlas:
    """Load the packaged atlas once; raise :class:`AtlasError` naming the file if it is broken."""
    ref = resources.files("opticmem.render").joinpath("fonts", ATLAS_FILE)
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
            cps = z["codepoints"].astype(np.int64)
            widths = z["widths"].astype(np.int64)
            first = z["first_tile"].astype(np.int64)
            tiles = np.ascontiguousarray(z["tiles"])
            meta = json.loads(z["meta"].tobytes().decode())
    except (OSError, KeyError, ValueError) as exc:
        raise AtlasError(f"cannot read the glyph atlas {ref}: {exc}") from exc
    index = {int(c): (int(f), int(w)) for c, f, w in zip(cps, first, widths, strict=True)}
    box = {int(k): int(v) for k, v in meta["box_tile"].items()}
    first_lut = np.full(0x110000, box[1], dtype=np.int32)
    first_lut[cps] = first
    first_lut[0x20] = int(meta["blank_tile"])
    first_lut[0xFFFD] = box[1]
    width_lut = np.ones(0x110000, dtype=np.uint8)
    width_lut[cps] = widths
    width_lut[0xFFFD] = 1
    cw, ch = meta["cell"]
    return Atlas(
        tiles=tiles,
        index=index,
        cell_w=int(cw),
        cell_h=int(ch),
        blank_tile=int(meta["blank_tile"]),
        box_tiles=box,
        unicode_version=str(meta["unicode_version"]),
        first_lut=first_lut,
        width_lut=width_lut,
    )
