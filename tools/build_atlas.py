"""Build the renderer's glyph-tile atlas from the source fonts (a developer tool, run once).

The renderer never rasterises a font at run time: Pillow's layout engines and FreeType
builds place and shade glyphs differently from machine to machine, so pages would not be
byte-identical. Instead this tool draws every glyph once into fixed 12×24-pixel tiles
(wide East Asian glyphs take two tiles) and writes ``render/fonts/atlas.npz``; the
renderer only copies tiles, which makes its output a pure function of text and settings.

Needs ``fontTools`` (``pip install fonttools``; not among opticmem's dependencies) and the
source fonts (Debian packages ``fonts-dejavu-core``, ``fonts-nanum``,
``fonts-droid-fallback``), in priority order per code point:

* DejaVu Sans Mono — Latin, Greek, Cyrillic, Arabic subset, symbols, box drawing;
* DejaVu Sans — scripts the mono face lacks (Hebrew, Armenian, Georgian, …), fitted to a cell;
* NanumGothicCoding — Hangul syllables and jamo;
* Droid Sans Fallback — CJK ideographs, kana, fullwidth forms.

Usage::

    python tools/build_atlas.py            # writes render/fonts/atlas.npz
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

CELL_W, CELL_H = 12, 24
BASELINE = 19  # pixel row of the baseline inside a cell

FONT_DIRS = [Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype")]


@dataclass(frozen=True)
class Source:
    file: str
    size: int
    ranges: tuple[tuple[int, int], ...]
    fit: bool = False  # shrink glyphs whose ink overflows the cell (proportional fonts)


LATIN_AND_SYMBOLS = ((0x0020, 0x2FFF), (0xFB00, 0xFB4F), (0xFFF0, 0xFFFD))
HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7A3), (0xD7B0, 0xD7FF))
CJK = (
    (0x2E80, 0x2FDF),
    (0x3000, 0x30FF),
    (0x3190, 0x31FF),
    (0x3200, 0x33FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFE30, 0xFE4F),
    (0xFF00, 0xFFEF),
)

SOURCES = (
    Source("dejavu/DejaVuSansMono.ttf", 20, LATIN_AND_SYMBOLS),
    Source("dejavu/DejaVuSans.ttf", 18, LATIN_AND_SYMBOLS, fit=True),
    Source("nanum/NanumGothicCoding.ttf", 22, HANGUL),
    Source("droid/DroidSansFallbackFull.ttf", 21, CJK + LATIN_AND_SYMBOLS, fit=True),
)


def find_font(name: str) -> Path:
    for d in FONT_DIRS:
        p = d / name
        if p.exists():
            return p
    raise SystemExit(f"font {name} not found under {FONT_DIRS}; install the Debian font packages")


def cell_width(cp: int) -> int:
    """Cells a code point occupies: two for East Asian Wide/Fullwidth, else one."""
    return 2 if unicodedata.east_asian_width(chr(cp)) in ("W", "F") else 1


def drawable(cp: int) -> bool:
    """Code points that get a glyph: no controls, formats, surrogates, unassigned or spaces."""
    cat = unicodedata.category(chr(cp))
    return not (cat.startswith("C") or cat in ("Zs", "Zl", "Zp"))


def rasterise(font: ImageFont.FreeTypeFont, ch: str, width: int, fit: bool) -> np.ndarray | None:
    """Draw ``ch`` into a ``24 × 12·width`` tile; ``None`` if the glyph has no ink."""
    w = CELL_W * width
    ascent, _ = font.getmetrics()
    bbox = font.getbbox(ch)
    ink_w, ink_h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if ink_w <= 0 or ink_h <= 0:
        return None
    big = Image.new("L", (w * 3, CELL_H * 3), 255)
    ImageDraw.Draw(big).text((w, CELL_H + BASELINE - ascent), ch, font=font, fill=0)
    arr = np.asarray(big)
    if fit:
        # Proportional glyph: centre its ink horizontally; shrink only if it overflows.
        ys, xs = np.nonzero(arr < 255)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = Image.fromarray(arr[:, x0:x1])
        if x1 - x0 > w:
            crop = crop.resize((w, crop.height), Image.Resampling.LANCZOS)
        tile = np.full((CELL_H * 3, w), 255, np.uint8)
        left = (w - crop.width) // 2
        tile[:, left : left + crop.width] = np.asarray(crop)
        out = tile[CELL_H : 2 * CELL_H]
        if y0 < CELL_H or y1 > 2 * CELL_H:  # vertical overflow: squeeze into the cell
            band = Image.fromarray(tile[min(y0, CELL_H) : max(y1, 2 * CELL_H)])
            out = np.asarray(band.resize((w, CELL_H), Image.Resampling.LANCZOS))
        return np.ascontiguousarray(out)
    # Monospace glyph: keep the font's own placement, centred in its cells.
    adv = font.getlength(ch)
    dx = round((w - adv) / 2)
    return np.ascontiguousarray(arr[CELL_H : 2 * CELL_H, w - dx : 2 * w - dx])


def box_tiles(width: int) -> np.ndarray:
    """The replacement box drawn for characters no font has: a visible hollow rectangle."""
    w = CELL_W * width
    t = np.full((CELL_H, w), 255, np.uint8)
    t[4:21, 1] = t[4:21, w - 2] = 40
    t[4, 1 : w - 1] = t[20, 1 : w - 1] = 40
    return t


def build(out: Path) -> dict[str, object]:
    glyphs: dict[int, np.ndarray] = {}
    origin: dict[str, int] = {}
    for src in SOURCES:
        path = find_font(src.file)
        cmap = TTFont(str(path), fontNumber=0).getBestCmap()
        font = ImageFont.truetype(str(path), src.size, layout_engine=ImageFont.Layout.BASIC)
        n = 0
        for lo, hi in src.ranges:
            for cp in range(lo, hi + 1):
                if cp in glyphs or cp not in cmap or not drawable(cp):
                    continue
                tile = rasterise(font, chr(cp), cell_width(cp), src.fit)
                if tile is not None:
                    glyphs[cp] = tile
                    n += 1
        origin[src.file] = n
        print(f"{src.file}: {n} glyphs", file=sys.stderr)

    cps = np.array(sorted(glyphs), dtype=np.uint32)
    widths = np.array([cell_width(int(c)) for c in cps], dtype=np.uint8)
    tiles = [np.full((CELL_H, CELL_W), 255, np.uint8)]  # tile 0: blank cell
    for wd in (1, 2):  # tiles 1 and 2-3: replacement boxes
        b = box_tiles(wd)
        tiles += [b[:, i * CELL_W : (i + 1) * CELL_W] for i in range(wd)]
    first = np.zeros(len(cps), dtype=np.uint32)
    for i, cp in enumerate(cps):
        first[i] = len(tiles)
        g = glyphs[int(cp)]
        tiles += [g[:, k * CELL_W : (k + 1) * CELL_W] for k in range(g.shape[1] // CELL_W)]
    tile_arr = np.stack(tiles)
    meta = {
        "cell": [CELL_W, CELL_H],
        "baseline": BASELINE,
        "blank_tile": 0,
        "box_tile": {"1": 1, "2": 2},
        "sources": origin,
        "unicode_version": unicodedata.unidata_version,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        codepoints=cps,
        widths=widths,
        first_tile=first,
        tiles=tile_arr,
        meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    )
    digest = hashlib.sha256(tile_arr.tobytes()).hexdigest()[:16]
    print(f"{len(cps)} glyphs, {len(tile_arr)} tiles, {out.stat().st_size / 1e6:.1f} MB, "
          f"tiles sha256 {digest}", file=sys.stderr)
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).parents[1] / "render/fonts/atlas.npz"
    ap.add_argument("--out", type=Path, default=default)
    build(ap.parse_args().out)


if __name__ == "__main__":
    main()
