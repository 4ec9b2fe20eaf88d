"""Large master → the four tiers, and page images as PNG bytes.

Decay never re-renders: a tier is the Large master resampled with Lanczos (Pillow's
resampling filter widens its support with the scale factor, a proper anti-aliasing
low-pass). Pillow resamples 8-bit images in fixed-point arithmetic, so the result is
the same on every machine.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from opticmem.render.tiers import Tier


def to_tier(master: np.ndarray | Image.Image, tier: Tier | str) -> Image.Image:
    """Resample a Large master (square, mode ``L``) to ``tier``'s size."""
    tier = Tier.parse(tier)
    if isinstance(master, Image.Image):
        img = master
    else:  # mode L follows from a 2-D uint8 array (Pillow 11.3 deprecates passing mode=)
        if master.ndim != 2 or master.dtype != np.uint8:
            raise ValueError(f"page masters are 2-D uint8 arrays; got {master.ndim}-D "
                             f"{master.dtype}")
        img = Image.fromarray(master)
    if img.size[0] != img.size[1]:
        raise ValueError(f"page masters are square; got {img.size[0]}×{img.size[1]}")
    if img.size[0] == tier.pixels:
        return img.copy()
    return img.resize((tier.pixels, tier.pixels), Image.Resampling.LANCZOS, reducing_gap=None)


def png_bytes(image: Image.Image) -> bytes:
    """Encode a page image as PNG with fixed settings (no metadata, fixed compression)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()
