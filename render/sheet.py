"""Contact sheets: page images side by side, one column per tier, to *see* the decay.

A pure image composition (no memory, no model): each column has a title and a list of
labelled page images; every image is shown at the same display size, so a Tiny page
(512 pixels) is upscaled as much as a Large one (1280) is reduced and its lost detail is
visible. ``crop`` shows only the top-left part of each page, magnified — that is where
the text is, and where blur is easiest to judge.

>>> from PIL import Image
>>> page = Image.new("L", (512, 512), 255)
>>> sheet = contact_sheet([SheetColumn("Tiny", [("page 0", page)])], cell=128)
>>> sheet.size
(144, 194)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from opticmem.render.draw import draw_text

_PAD = 8
_TITLE_H = 22
_LABEL_H = 20


@dataclass(frozen=True)
class SheetColumn:
    """One column: a title (a tier name) and ``(label, image)`` pairs, top to bottom."""

    title: str
    items: Sequence[tuple[str, Image.Image]] = field(default_factory=tuple)


def _fit(img: Image.Image, cell: int, crop: float) -> Image.Image:
    img = img.convert("L")
    if crop < 1.0:
        w, h = img.size
        img = img.crop((0, 0, max(1, round(w * crop)), max(1, round(h * crop))))
    scale = cell / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


MIN_CELL = 16
"""Smallest display size of a page on a sheet, in pixels."""
MAX_CELL = 4096
"""Largest: a Large page is 1280 pixels, so more only magnifies; a sheet of cells of 10**6
pixels asked for terabytes and the process was killed."""


def contact_sheet(
    columns: Sequence[SheetColumn],
    *,
    cell: int = 256,
    crop: float = 1.0,
    title: str | None = None,
) -> Image.Image:
    """Compose ``columns`` side by side into one greyscale image.

    ``cell`` is the display size of every page (:data:`MIN_CELL` to :data:`MAX_CELL`
    pixels; ``ValueError`` outside, ``TypeError`` for anything but an ``int``); ``crop``
    in ``(0, 1]`` keeps that fraction of each page's width and height from its top-left
    corner before scaling.
    An empty column keeps its place (a tier with no pages is still shown).
    """
    if isinstance(cell, bool) or not isinstance(cell, int):
        raise TypeError(f"cell must be a whole number of pixels, got {cell!r}")
    if not MIN_CELL <= cell <= MAX_CELL:
        raise ValueError(f"cell must be {MIN_CELL} to {MAX_CELL} pixels, got {cell}")
    if not 0.0 < crop <= 1.0:
        raise ValueError(f"crop must be in (0, 1], got {crop}")
    if not columns:
        raise ValueError("a contact sheet needs at least one column")
    rows = max((len(c.items) for c in columns), default=0)
    top = _PAD + (_TITLE_H if title else 0)
    width = _PAD + len(columns) * (cell + _PAD)
    height = top + _TITLE_H + rows * (cell + _LABEL_H + _PAD) + _PAD
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)
    if title:
        _caption(sheet, (_PAD, _PAD), title, width - 2 * _PAD)
    for ci, col in enumerate(columns):
        x = _PAD + ci * (cell + _PAD)
        _caption(sheet, (x, top + 4), f"{col.title} ({len(col.items)})", cell)
        for ri, (label, img) in enumerate(col.items):
            y = top + _TITLE_H + ri * (cell + _LABEL_H + _PAD)
            thumb = _fit(img, cell, crop)
            sheet.paste(thumb, (x, y))
            draw.rectangle((x - 1, y - 1, x + thumb.width, y + thumb.height), outline=160)
            _caption(sheet, (x, y + thumb.height + 4), label, cell)
    return sheet


def _caption(sheet: Image.Image, at: tuple[int, int], text: str, width: int) -> None:
    """``text`` at half the pages' glyph size (12 pixels high), cut at ``width`` pixels:
    in the pages' own glyphs, so a session named in Hangul reads as it does on its pages."""
    strip = draw_text(text)
    if strip.shape[1] == 0:
        return
    img = Image.fromarray(strip)
    img = img.resize((max(1, img.width // 2), img.height // 2), Image.Resampling.LANCZOS)
    sheet.paste(img.crop((0, 0, min(img.width, width), img.height)), at)
