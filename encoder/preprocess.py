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


def parse_tier(tier: Tier | str) -> Tier:
    """:meth:`Tier.parse`, with an unknown name raised as :class:`InputError` (still a
    ``ValueError``), so that ``except CodecError`` around a codec call catches it too."""
    try:
        return Tier.parse(tier)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def to_rgb(image: Image.Image, *, keep_grey: bool = False) -> Image.Image:
    """EXIF-transpose and convert any mode (RGBA, LA, P, L, 1, I, F, CMYK…) to RGB, with
    transparent parts as white paper (or, with ``keep_grey``, leave an ``L`` image grey:
    the same pixels in a third of the bytes)."""
    if not isinstance(image, Image.Image):
        raise InputError(f"expected a PIL image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InputError(f"image has no pixels ({image.width}×{image.height})")
    try:
        image.load()  # a lazily opened file is decoded here: truncated, corrupt or closed
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the image's pixels: {exc}") from exc
    image = ImageOps.exif_transpose(image)
    if keep_grey and image.mode == "L":
        # A grey PNG's transparent colour (tRNS) is paper too: returned as it was, a page
        # read it as its stored colour alone, as white in a batch with an RGB image, and
        # counted it as ink. Grey over white stays grey (every band alike), so still L.
        return on_white(image).convert("L") if image.has_transparency_data else image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # High-bit-depth greys: scale into 8 bits rather than clipping at 255. The scale
        # comes from the finite values only: one infinite pixel of a float image would
        # otherwise make the scale 0 and every pixel NaN (cast to black); NaN reads as
        # black, ±inf as white/black.
        arr = np.asarray(image, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        hi = float(finite.max()) if finite.size else 0.0
        scale = 255.0 / hi if hi > 255.0 else 1.0
        grey = np.nan_to_num(arr * scale, nan=0.0, posinf=255.0, neginf=0.0)
        # 2-D uint8 is mode L (Pillow 11.3 deprecates passing mode=).
        image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    elif image.mode == "La":  # premultiplied alpha: Pillow converts it to "LA" only
        image = image.convert("LA")
    if image.has_transparency_data:
        return on_white(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def on_white(image: Image.Image) -> Image.Image:
    """An image with transparency, composited over white paper.

    The reference drops alpha (``convert("RGB")``), which turns a transparent background
    into whatever colour its pixels store, usually black, and black text on it vanishes.
    Pages are ink on paper, so transparency reads as paper; opaque pixels are unchanged.
    """
    rgba = image.convert("RGBA")
    paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, rgba).convert("RGB")


def fit_to_tier(image: Image.Image, tier: Tier | str, *, keep_grey: bool = False) -> Image.Image:
    """Any image → the tier's RGB square (stretch for resize tiers, grey pad for pad tiers);
    with ``keep_grey`` an ``L`` image stays ``L`` (PIL resamples each band alike, so its
    pixels equal every band of the RGB result)."""
    tier = parse_tier(tier)
    side = tier.pixels
    image = to_rgb(image, keep_grey=keep_grey)
    if image.size == (side, side):
        return image
    if tier.spec.preprocess == "resize":
        return image.resize((side, side), Image.Resampling.BICUBIC)
    fill = PAD_COLOUR if image.mode == "RGB" else PAD_COLOUR[0]
    return ImageOps.pad(image, (side, side), method=Image.Resampling.BICUBIC, color=fill)


def pixel_batch(images: Sequence[Image.Image], tier: Tier | str) -> torch.Tensor:
    """A list of images → their uint8 pixels at ``tier``'s size: (B, S, S) when every image
    is greyscale (``L``, as the renderer draws pages), else RGB (B, S, S, 3)."""
    tier = parse_tier(tier)
    if len(images) == 0:
        return torch.empty(0, tier.pixels, tier.pixels, 3, dtype=torch.uint8)
    grey = all(isinstance(img, Image.Image) and img.mode == "L" for img in images)
    return torch.from_numpy(
        np.stack([np.asarray(fit_to_tier(img, tier, keep_grey=grey)) for img in images])
    )


def normalise_pixels(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 RGB (B, S, S, 3) or grey (B, S, S) pixels → (B, 3, S, S) in [−1, 1], in ``dtype``.

    Computed in fp32 where ``pixels`` live, then cast: move the uint8 batch to the GPU
    first and the host neither converts nor copies four times the bytes.
    """
    if pixels.ndim == 3:  # grey: the values an RGB copy of it gives, as a broadcast view
        x = pixels.float().div_(127.5).sub_(1.0).unsqueeze(1).expand(-1, 3, -1, -1)
    else:
        x = pixels.permute(0, 3, 1, 2).contiguous().float().div_(127.5).sub_(1.0)
    return x.to(dtype)


def preprocess(
    images: Sequence[Image.Image],
    tier: Tier | str,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A list of images → one batch (B, 3, S, S) for ``tier`` (S = ``tier.pixels``),
    normalised on ``device`` (default: the CPU) in ``dtype``."""
    pixels = pixel_batch(images, tier)
    return normalise_pixels(pixels if device is None else pixels.to(device), dtype)
