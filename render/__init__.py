"""opticmem.render: text → page images on a monospace grid, and their decay tiers.

Pure functions of text and settings; no model, no conversation state.

>>> from opticmem.render import TurnText, layout_pages, render_page, Tier
>>> pages = layout_pages([TurnText("user", "Let's plan Project Titan for March.")])
>>> render_page(pages[0], Tier.SMALL).size
(640, 640)
"""

from __future__ import annotations

from PIL import Image

from opticmem.render.atlas import Atlas, AtlasError, load_atlas
from opticmem.render.draw import draw_page
from opticmem.render.layout import (
    REPLACEMENT,
    Cursor,
    Line,
    LineSource,
    PageLayout,
    RenderSettings,
    TurnLayout,
    TurnText,
    char_cells,
    layout_pages,
    layout_turn,
    paginate,
    redraw,
    transcript_positions,
)
from opticmem.render.resample import png_bytes, to_tier
from opticmem.render.tiers import (
    ORDER,
    PIXELS_PER_TOKEN,
    TIER_SPECS,
    Tier,
    TierSpec,
    parse_tiers,
)


def render_page(page: PageLayout, tier: Tier | str = Tier.LARGE) -> Image.Image:
    """Draw a page and resample it to ``tier`` (mode ``L``, ``tier.pixels`` square)."""
    return to_tier(draw_page(page), tier)


__all__ = [
    "ORDER",
    "PIXELS_PER_TOKEN",
    "REPLACEMENT",
    "TIER_SPECS",
    "Atlas",
    "AtlasError",
    "Cursor",
    "Line",
    "LineSource",
    "PageLayout",
    "RenderSettings",
    "Tier",
    "TierSpec",
    "TurnLayout",
    "TurnText",
    "char_cells",
    "draw_page",
    "layout_pages",
    "layout_turn",
    "load_atlas",
    "paginate",
    "parse_tiers",
    "png_bytes",
    "redraw",
    "render_page",
    "to_tier",
    "transcript_positions",
]
