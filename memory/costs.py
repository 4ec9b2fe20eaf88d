"""What a context costs its consumer: image-token formulas and whole-message counting.

A page image costs different amounts depending on who reads it:

* **DeepSeek-OCR** (default): its own decoder reads ``g × g`` vision tokens from a
  ``64·g``-pixel page and spends ``g·(g+1)+1`` decoder slots on them (73/111/273/421 for
  Tiny/Small/Base/Large); ``nominal=True`` counts ``g²`` instead (64/100/256/400).
* **Tile formula** (OpenAI-style, ``"openai"``): fit in 2048×2048, shrink so the
  shortest side is at most 768, count 512-pixel tiles: ``85 + 170·tiles`` at
  ``detail: "high"``; an image of at most 512 pixels a side (a Tiny page) is sent at
  ``detail: "low"`` instead, a flat 85 (:meth:`TileCost.detail` decides both).
* **Pixel area** (Anthropic-style, ``"anthropic"``): fit the long side in 1568 pixels,
  shrink until the image costs at most ~1,600 tokens, then ``ceil(w·h / 750)``.

Every parameter is a dataclass field, so a new model's prices are one constructor call.
A :class:`CostModel` pairs an image formula with a text counter and a per-message
overhead; the budget planner, the savings gate and :func:`message_tokens` all use it.

>>> from opticmem.render import Tier
>>> [cost_model(n).image_tokens(Tier.TINY) for n in ("deepseek-ocr", "openai", "anthropic")]
[73, 85, 350]
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from opticmem.errors import ConfigurationError, ConfigurationTypeError
from opticmem.render.tiers import PIXELS_PER_TOKEN, Tier
from opticmem.tokens import TextCounter, text_counter

ImageDetail = Literal["low", "high"]
"""OpenAI's ``detail`` of an ``image_url`` part (its default, ``"auto"``, is never sent)."""


@runtime_checkable
class ImageCost(Protocol):
    """Tokens a consumer charges for one image of ``width × height`` pixels."""

    @property
    def name(self) -> str: ...

    def tokens(self, width: int, height: int) -> int: ...


@dataclass(frozen=True)
class DeepSeekOCRCost:
    """DeepSeek-OCR's own decoder: a page padded to ``64·g`` pixels costs its slots.

    >>> DeepSeekOCRCost().tokens(1280, 1280), DeepSeekOCRCost(nominal=True).tokens(1280, 1280)
    (421, 400)
    """

    nominal: bool = False
    pixels_per_token: int = PIXELS_PER_TOKEN

    @property
    def name(self) -> str:
        return "deepseek-ocr-nominal" if self.nominal else "deepseek-ocr"

    def tokens(self, width: int, height: int) -> int:
        g = math.ceil(max(width, height, 1) / self.pixels_per_token)
        return g * g if self.nominal else g * (g + 1) + 1


@dataclass(frozen=True)
class TileCost:
    """Tile-based pricing (OpenAI-style). Images are never upscaled.

    An image is sent, and priced, at the ``detail`` :meth:`detail` picks: ``"high"``
    costs ``base_tokens + tile_tokens`` per tile, ``"low"`` a flat ``base_tokens`` with the
    image read at 512×512 — no loss for one no larger than that, so such an image (a Tiny
    page) goes at low detail. :meth:`opticmem.Context.messages` writes the same choice
    on each ``image_url`` part: left to OpenAI's default (``"auto"``), what is billed
    need not be what the budget planned.

    >>> TileCost().tokens(1280, 1280), TileCost().tokens(512, 512), TileCost().detail(512, 512)
    (765, 85, 'low')
    >>> TileCost(low_detail_side=None).tokens(512, 512)
    255
    """

    max_side: int = 2048
    short_side: int = 768
    tile: int = 512
    base_tokens: int = 85
    tile_tokens: int = 170
    label: str = "openai-tiles"
    low_detail_side: int | None = 512
    """Images at most this many pixels on both sides go at ``detail: "low"`` (512: what
    OpenAI reads a low-detail image at, so nothing is lost); ``None``: all at high."""

    @property
    def name(self) -> str:
        return self.label

    def detail(self, width: int, height: int) -> ImageDetail:
        """The detail a ``width × height`` image is sent at, and priced at by :meth:`tokens`."""
        side = self.low_detail_side
        return "low" if side is not None and max(width, height) <= side else "high"

    def tokens(self, width: int, height: int, detail: str | None = None) -> int:
        """Tokens of the image at ``detail`` (``"low"`` or ``"high"``, as a message part
        may name it; anything else — ``None``, ``"auto"`` — is :meth:`detail`'s choice)."""
        if detail not in ("low", "high"):
            detail = self.detail(width, height)
        if detail == "low":
            return self.base_tokens
        w, h = float(width), float(height)
        if max(w, h) > self.max_side:
            s = self.max_side / max(w, h)
            w, h = w * s, h * s
        if min(w, h) > self.short_side:
            s = self.short_side / min(w, h)
            w, h = w * s, h * s
        tiles = math.ceil(round(w, 6) / self.tile) * math.ceil(round(h, 6) / self.tile)
        return self.base_tokens + self.tile_tokens * tiles


def image_detail(image: ImageCost, width: int, height: int) -> ImageDetail | None:
    """The ``detail`` an OpenAI ``image_url`` part of a ``width × height`` image is sent
    with under ``image``: :meth:`TileCost.detail` for tile pricing — the one rule both the
    price and the message follow — and ``None`` (no ``detail`` written) for any other
    formula, whose consumer is not priced by OpenAI's detail levels."""
    return image.detail(width, height) if isinstance(image, TileCost) else None


def image_tokens(image: ImageCost, width: int, height: int, detail: object = None) -> int:
    """Tokens of a ``width × height`` image under ``image``, sent with ``detail`` (what a
    message part names, or ``None``): only tile pricing reads it."""
    if isinstance(image, TileCost):
        return image.tokens(width, height, detail=detail if isinstance(detail, str) else None)
    return image.tokens(width, height)


@dataclass(frozen=True)
class PixelAreaCost:
    """Pixel-area pricing (Anthropic-style): ``ceil(w·h / divisor)`` after fitting.

    Anthropic scales an image down, keeping its aspect ratio, when its long edge passes
    1568 pixels *or* it would cost more than about 1,600 tokens (a square image is read at
    about 1092×1092 at most), so a 1280-pixel page costs ~1,600 tokens, not
    ``1280² / 750`` = 2,185: priced at the latter, the savings gate kept Large pages as
    text that were cheaper as images, and a context overstated its cost.

    >>> PixelAreaCost().tokens(1280, 1280), PixelAreaCost().tokens(640, 640)
    (1599, 547)
    """

    max_long_side: int = 1568
    divisor: float = 750.0
    max_tokens: int = 1600
    """Images that would cost more are shrunk (aspect ratio kept) to cost at most this."""
    label: str = "anthropic-area"

    @property
    def name(self) -> str:
        return self.label

    def tokens(self, width: int, height: int) -> int:
        w, h = float(width), float(height)
        if max(w, h) > self.max_long_side:
            s = self.max_long_side / max(w, h)
            w, h = math.floor(w * s), math.floor(h * s)
        if w * h > self.max_tokens * self.divisor:
            s = math.sqrt(self.max_tokens * self.divisor / (w * h))
            w, h = math.floor(w * s), math.floor(h * s)
        return math.ceil(w * h / self.divisor)


@dataclass(frozen=True)
class CostModel:
    """A consumer's prices: images, text, and a fixed overhead per chat message."""

    image: ImageCost = field(default_factory=DeepSeekOCRCost)
    text: TextCounter = field(default_factory=lambda: text_counter(None))
    message_overhead: int = 3
    """Tokens every chat message costs besides its content (role and separators)."""

    def __post_init__(self) -> None:
        # a whole number: 1.5 made every cost a float that Context.cost truncated, so it
        # disagreed with message_tokens; "3" failed later with a bare TypeError
        overhead = self.message_overhead
        if isinstance(overhead, bool) or not isinstance(overhead, int) or overhead < 0:
            raise ConfigurationError(
                f"message_overhead must be a whole number ≥ 0, got {overhead!r}")

    @property
    def name(self) -> str:
        """``image-model/text-counter/overhead``: identifies the prices in cache keys."""
        return f"{self.image.name}/{self.text.name}/{self.message_overhead}"

    @property
    def key(self) -> str:
        """:attr:`name`, with the image formula's parameters: what a consumer's stored
        decay mark is kept under (see :func:`image_key`).

        >>> cost_model("openai").key, cost_model(TileCost(tile_tokens=100)).key
        ('openai-tiles/approx-bpe-v1/3', 'openai-tiles#2ee2ef14b34f/approx-bpe-v1/3')
        """
        return f"{image_key(self.image)}/{self.text.name}/{self.message_overhead}"

    def text_tokens(self, text: str) -> int:
        return self.text.count(text)

    def image_tokens(self, tier: Tier | str) -> int:
        """Cost of a page image at ``tier`` (square, ``tier.pixels`` on a side)."""
        t = Tier.parse(tier)
        return self.image.tokens(t.pixels, t.pixels)


def _image_presets() -> dict[str, ImageCost]:
    return {
        "deepseek-ocr": DeepSeekOCRCost(),
        "deepseek-ocr-nominal": DeepSeekOCRCost(nominal=True),
        "openai": TileCost(),
        "tiles": TileCost(),
        "anthropic": PixelAreaCost(),
        "pixel-area": PixelAreaCost(),
    }


PRESETS: tuple[str, ...] = tuple(_image_presets())
"""Names :func:`cost_model` accepts."""


def image_key(image: ImageCost) -> str:
    """``image.name``, and for any formula but a built-in one a digest of its class and
    dataclass fields: a ``TileCost(tile_tokens=100)`` keeps the label ``"openai-tiles"``,
    and keyed by it alone, its consumer shared the built-in one's decay mark and was
    demoted by that consumer's budget. The built-ins keep their bare names, so marks
    already stored for them are still found. A formula that is not a dataclass is known
    by its name alone; a field that is not JSON (a callable) is digested by its ``repr``,
    which may change from one process to the next (its marks are then not found again)."""
    if image in _image_presets().values() or not dataclasses.is_dataclass(image):
        return image.name
    fields = {f.name: getattr(image, f.name) for f in dataclasses.fields(image)}
    blob = json.dumps([type(image).__qualname__, fields], sort_keys=True, default=repr)
    return f"{image.name}#{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def cost_model(
    spec: CostModel | ImageCost | str = "deepseek-ocr",
    *,
    text: TextCounter | Any | None = None,
    message_overhead: int | None = None,
) -> CostModel:
    """A :class:`CostModel` from a preset name, an image formula or a model.

    ``text`` replaces the text counter (anything :func:`~opticmem.tokens.text_counter`
    takes); ``message_overhead`` the per-message overhead. An unknown preset name raises
    :class:`~opticmem.errors.ConfigurationError` listing the presets; a ``spec`` of another
    type, :class:`~opticmem.errors.ConfigurationTypeError` (a ``ConfigurationError`` and a
    ``TypeError``).

    >>> cost_model("anthropic").name
    'anthropic-area/approx-bpe-v1/3'
    """
    if isinstance(spec, CostModel):
        base = spec
    elif isinstance(spec, str):
        presets = _image_presets()
        key = spec.strip().lower()
        if key not in presets:
            raise ConfigurationError(
                f"unknown cost model {spec!r}; presets: {', '.join(presets)}"
            )
        base = CostModel(image=presets[key])
    elif isinstance(spec, ImageCost):
        base = CostModel(image=spec)
    else:
        # was a bare TypeError, unlike the ConfigurationError of an unknown name
        raise ConfigurationTypeError(
            f"cost_model must be a preset name ({', '.join(_image_presets())}), an ImageCost "
            f"or a CostModel, not {type(spec).__name__} {spec!r}")
    return CostModel(
        image=base.image,
        text=base.text if text is None else text_counter(text),
        message_overhead=base.message_overhead if message_overhead is None else message_overhead,
    )


# --------------------------------------------------------------------------- messages


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's header; ``ValueError`` if it is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    w, h = struct.unpack(">II", data[16:24])
    return int(w), int(h)


def b64_head(b64: str, chars: int = 44) -> bytes:
    """The bytes of the first ``chars`` base64 characters of ``b64`` (44: 33 bytes, a PNG's
    signature and IHDR size fields), whitespace skipped — line breaks every 76 characters
    or a leading newline decode fine, and must not throw the count off. ``ValueError`` if
    it is not base64."""
    head = ""
    for start in range(0, len(b64), 4 * chars):
        head += "".join(b64[start : start + 4 * chars].split())
        if len(head) >= chars:
            break
    try:
        return base64.b64decode(head[:chars])
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image block is not valid base64: {exc}") from None


def _b64_png_size(b64: str) -> tuple[int, int]:
    return png_size(b64_head(b64))


def _block_tokens(block: Mapping[str, Any], model: CostModel) -> int:
    kind = block.get("type")
    if kind == "text":
        return model.text_tokens(str(block.get("text", "")))
    if kind == "image" and "base64" in block:
        return model.image.tokens(*_b64_png_size(str(block["base64"])))
    if kind == "image_url":
        part = block.get("image_url", {})
        detail = part.get("detail") if isinstance(part, Mapping) else None
        url = part.get("url", "") if isinstance(part, Mapping) else str(part)
        if not url.startswith("data:") or "," not in url:
            raise ValueError("only data: image URLs can be priced offline")
        return image_tokens(model.image, *_b64_png_size(url.split(",", 1)[1]), detail)
    raise ValueError(f"cannot price a content block of type {kind!r}")


def message_tokens(messages: Iterable[Mapping[str, Any]], model: CostModel) -> int:
    """Tokens ``messages`` (plain dicts with ``role`` and ``content``) cost under ``model``.

    Text blocks go through the text counter, PNG image blocks (LangChain ``image`` with
    ``base64``, or OpenAI ``image_url`` data URLs, at the ``detail`` they name) through the
    image formula, and each
    message adds ``model.message_overhead``. This is exactly how a
    :class:`~opticmem.context.Context` prices itself, so it can check one independently.
    Content ``None`` (OpenAI's assistant message that only calls tools) costs the overhead
    alone; content of any other type, or a content block that is not a dict, raises
    ``TypeError`` naming the message.

    >>> message_tokens([{"role": "user", "content": "hello"}], cost_model())
    4
    """
    total = 0
    for i, msg in enumerate(messages):
        total += model.message_overhead
        content = msg.get("content")
        if content is None:  # an OpenAI assistant message that only calls tools
            continue
        if isinstance(content, str):
            total += model.text_tokens(content)
        elif isinstance(content, (list, tuple)):
            for j, block in enumerate(content):
                if not isinstance(block, Mapping):  # was an AttributeError on ``.get``
                    raise TypeError(f"message {i}: content block {j} must be a dict with a "
                                    f"'type', got {type(block).__name__}")
                total += _block_tokens(block, model)
        else:
            raise TypeError(f"message {i}: content must be text or a list of content blocks, "
                            f"got {type(content).__name__}")
    return total
