"""The four optical tiers a page decays through, and their pixel and token arithmetic.

These are DeepSeek-OCR's native modes (see ``shared/design/deepseek-ocr-facts.md`` §1.5).
A tier's vision-token grid is ``g × g`` with ``g = pixels / 64``; in the decoder's
sequence it occupies ``g·(g+1) + 1`` slots (a newline token after every row and one
view separator), which is what a budget must count.

Every other room (memory, encoder) takes tier facts from here so that a number such as
"Small is 100 tokens" is written down exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal


class Tier(str, Enum):
    """A page's optical resolution, sharpest first. ``Tier("small")`` parses a name."""

    LARGE = "large"
    BASE = "base"
    SMALL = "small"
    TINY = "tiny"

    @property
    def spec(self) -> TierSpec:
        return TIER_SPECS[self]

    @property
    def pixels(self) -> int:
        """Side of the square page image at this tier."""
        return self.spec.pixels

    @property
    def grid(self) -> int:
        """Side ``g`` of the vision-token grid."""
        return self.spec.grid

    @property
    def tokens(self) -> int:
        """Nominal vision tokens, ``g²`` (64/100/256/400)."""
        return self.spec.grid**2

    @property
    def slots(self) -> int:
        """Decoder sequence slots, ``g·(g+1)+1`` (73/111/273/421)."""
        g = self.spec.grid
        return g * (g + 1) + 1

    @property
    def rank(self) -> int:
        """0 for Large (sharpest) to 3 for Tiny; larger is blurrier."""
        return ORDER.index(self)

    def next(self) -> Tier | None:
        """The tier a page decays to from this one; ``None`` after Tiny (out of context)."""
        i = self.rank + 1
        return ORDER[i] if i < len(ORDER) else None

    @classmethod
    def parse(cls, value: str | Tier) -> Tier:
        """Accept a tier or its name in any case; raise ``ValueError`` naming the choices."""
        if isinstance(value, Tier):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(t.value for t in ORDER)
            raise ValueError(f"unknown tier {value!r}; expected one of: {names}") from None


def parse_tiers(spec: str) -> list[Tier]:
    """Tiers from a comma-separated list (``"small,tiny"``) or ``"all"``, each once, in the
    order given; raise ``ValueError`` for an unknown name or an empty list."""
    if spec.strip().lower() == "all":
        return list(ORDER)
    # each once: a tier named twice would draw or read every page twice
    tiers = list(dict.fromkeys(Tier.parse(t) for t in spec.split(",") if t.strip()))
    if not tiers:
        raise ValueError("no tiers given")
    return tiers


@dataclass(frozen=True, slots=True)
class TierSpec:
    """Pixel size, token grid and the reference preprocessing of one tier."""

    pixels: int
    grid: int
    preprocess: Literal["resize", "pad"]


TIER_SPECS: dict[Tier, TierSpec] = {
    Tier.LARGE: TierSpec(pixels=1280, grid=20, preprocess="pad"),
    Tier.BASE: TierSpec(pixels=1024, grid=16, preprocess="pad"),
    Tier.SMALL: TierSpec(pixels=640, grid=10, preprocess="resize"),
    Tier.TINY: TierSpec(pixels=512, grid=8, preprocess="resize"),
}

ORDER: tuple[Tier, ...] = (Tier.LARGE, Tier.BASE, Tier.SMALL, Tier.TINY)
"""Tiers from sharpest to blurriest: the order of decay."""

PATCH = 16
"""SAM patch size in pixels; the 16× compressor then folds 4×4 patches into one token."""

PIXELS_PER_TOKEN = 64
"""Side of the square of page pixels one vision token summarises (PATCH × 4)."""
