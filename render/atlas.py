"""The shipped glyph-tile atlas: which characters have glyphs, how wide they are, their pixels.

Built once by ``tools/build_atlas.py`` from the fonts credited in ``fonts/README.md``.
Every cell of a page is one 12×24 tile; a wide (East Asian) glyph is two adjacent tiles.
Beside it ships the Unicode properties the layout reads for characters without a glyph
(``tools/build_unicode_table.py``), frozen at the atlas's Unicode version so that a newer
Python's database cannot change a page. Loading is lazy and cached per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import ModuleType
from typing import Any

import numpy as np

ATLAS_FILE = "atlas.npz"
UNICODE_FILE = "unicode.npz"

# A character's class in the frozen table (bits 1–2; bit 0 marks two cells).
OTHER, SURROGATE, INVISIBLE, SPACE = 0, 1, 2, 3


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
    props: bytes  # one byte per code point, as :func:`unicode_properties` makes them

    def has(self, ch: str) -> bool:
        return ord(ch) in self.index

    def width(self, ch: str) -> int:
        """Cells ``ch`` occupies: from the atlas when it has a glyph, else by its East Asian
        width at the atlas's Unicode version."""
        hit = self.index.get(ord(ch))
        if hit is not None:
            return hit[1]
        return 2 if self.props[ord(ch)] & 1 else 1

    def char_class(self, ch: str) -> int:
        """``ch``'s class at the atlas's Unicode version: :data:`SURROGATE`,
        :data:`INVISIBLE` (format characters and combining marks), :data:`SPACE` (space
        separators) or :data:`OTHER`."""
        return self.props[ord(ch)] >> 1

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


def unicode_properties(db: ModuleType) -> np.ndarray:
    """One byte per code point from the Unicode database ``db`` (:mod:`unicodedata`): bit 0
    set when the character takes two cells (East Asian width W or F), bits 1–2 its class."""
    props = np.zeros(0x110000, dtype=np.uint8)
    classes = {"Cs": SURROGATE, "Cf": INVISIBLE, "Mn": INVISIBLE, "Me": INVISIBLE,
               "Zs": SPACE}
    for cp in range(0x110000):
        ch = chr(cp)
        wide = db.east_asian_width(ch) in ("W", "F")
        props[cp] = wide | classes.get(db.category(ch), OTHER) << 1
    return props


def _read_fonts_file(name: str, what: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the packaged ``fonts/name``; :class:`AtlasError` naming the
    file if it is missing or broken."""
    ref = resources.files("opticmem.render").joinpath("fonts", name)
    try:
        with resources.as_file(ref) as path, np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in keys}
    except (OSError, KeyError, ValueError) as exc:
        raise AtlasError(f"cannot read the {what} {ref}: {exc}") from exc


def _meta(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(arrays["meta"].tobytes().decode())
    return meta


def atlas_unicode_version() -> str:
    """The Unicode version the packaged atlas was built with."""
    return str(_meta(_read_fonts_file(ATLAS_FILE, "glyph atlas", ("meta",)))["unicode_version"])


@cache
def load_atlas() -> Atlas:
    """Load the packaged atlas once; raise :class:`AtlasError` naming the file if it is broken."""
    z = _read_fonts_file(ATLAS_FILE, "glyph atlas",
                         ("codepoints", "widths", "first_tile", "tiles", "meta"))
    cps = z["codepoints"].astype(np.int64)
    widths = z["widths"].astype(np.int64)
    first = z["first_tile"].astype(np.int64)
    tiles = np.ascontiguousarray(z["tiles"])
    meta = _meta(z)
    table = _read_fonts_file(UNICODE_FILE, "Unicode table", ("props", "meta"))
    props = table["props"]
    if _meta(table).get("unicode_version") != meta["unicode_version"] or props.shape != (
        0x110000,
    ):
        raise AtlasError(f"the Unicode table {UNICODE_FILE} does not match the glyph atlas's "
                         f"Unicode {meta['unicode_version']}: rebuild it with "
                         f"tools/build_unicode_table.py")
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
        props=props.astype(np.uint8).tobytes(),
    )
