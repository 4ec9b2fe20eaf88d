"""Tier preprocessing: any PIL image → a batch of normalised square pixel tensors.

The reference pipeline (``shared/design/deepseek-ocr-facts.md`` §1.6): EXIF transpose,
convert to RGB, then for Tiny/Small a plain (stretching) bicubic resize to the tier's
side, for Base/Large an aspect-keeping bicubic resize centred on a grey (127,127,127)
square (``PIL.ImageOps.pad``), and finally ``(x/255 − 0.5)/0.5`` so values lie in [−1, 1].

A page already rendered at the tier's size passes through both branches unchanged.

>>> from PIL import Image
>>> batch = preprocess([Image.new("L", (20, 20000), 255)], "base")
>>> tuple(batch.shape), float(batch.max()), float(batch.min())
((1, 3, 1024, 1024), 1.0, -0.003921568393707275)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from opticmem.encoder.errors import InputError
from opticmem.render.tiers import Tier

PAD_COLOUR = (127, 127, 127)
"""Grey fill for padded tiers: the normalisation mean × 255, rounded down."""


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF-transpose and convert any mode (RGBA, LA, P, L, 1, I, F, CMYK…) to RGB."""
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"image has no pixels ({image.width}×{image.height})")
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High-bit-depth greys: scale into 8 bits rather than clipping at 255.
        arr = np.asarray(image, dtype=np.float64)
        hi = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / hi if hi > 255.0 else 1.0
        image = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_to_tier(image: Image.Image, tier: Tier | str) -> Image.Image:
    """RGB image → the tier's square (stretch for resize tiers, grey pad for pad tiers)."""
    tier = Tier.parse(tier)
    side = tier.pixels
    image = to_rgb(image)
    if image.size == (side, side):
        return image
    if tier.spec.preprocess == "resize":
        return image.resize((side, side), Image.Resampling.BICUBIC)
    return ImageOps.pad(image, (side, side), method=Image.Resampling.BICUBIC, color=PAD_COLOUR)


def normalise(image: Image.Image) -> torch.Tensor:
    """RGB image (H, W) → float tensor (3, H, W) in [−1, 1]."""
    arr = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1).float()  # (3, H, W)
    return t.div_(127.5).sub_(1.0)


def preprocess(images: Sequence[Image.Image], tier: Tier | str) -> torch.Tensor:
    """A list of images → one batch (B, 3, S, S) for ``tier`` (S = ``tier.pixels``)."""
    tier = Tier.parse(tier)
    if len(images) == 0:
        return torch.empty(0, 3, tier.pixels, tier.pixels)
    return torch.stack([normalise(fit_to_tier(img, tier)) for img in images])
