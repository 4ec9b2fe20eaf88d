"""The codec seam: the only surface through which the memory talks to a vision model.

``memory/`` hands page images of one tier in and gets :class:`VisionTokens` back
(``encode``), and hands vision tokens in and gets :class:`Recollection` text back
(``decode``). Both calls are batch-first. Vision tokens cross the seam as numpy
arrays with a self-describing byte form, so stores can cache them and the memory
never holds a tensor it did not ask for.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from opticmem.render.tiers import Tier

if TYPE_CHECKING:
    from PIL import Image

    from opticmem.render.layout import RenderSettings

_MAGIC = b"OMVT"
_VERSION = 1


class CodecError(Exception):
    """Base class for errors raised by a codec or its weights."""


class VisionTokensFormatError(CodecError, ValueError):
    """Bytes that do not hold a valid :class:`VisionTokens` record."""


@dataclass(frozen=True, eq=False)
class VisionTokens:
    """The vision tokens of one page at one tier: a ``(g, g, dim)`` feature grid.

    The grid is kept before the decoder's newline and separator slots are added:
    those are model parameters, not page content. ``slots`` still reports what the
    page costs in a decoder sequence. Grids are stored as float16 when every value fits
    (half the bytes), else as float32 — never rounded to infinity.
    """

    tier: Tier
    grid: np.ndarray  # (g, g, dim), float16 or float32
    codec: str = ""
    """Name of the codec (model + weights) that made these tokens; decoders check it."""
    ink_rows: int | None = None
    """How many text rows of the renderer's grid the page's writing reaches
    (:func:`~opticmem.render.ink.ink_rows`), read from its pixels by a codec that reads
    that grid; ``None`` when not known. It is layout, not content: a decoder uses it to
    keep reading past a blank line instead of ending the page there."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier.parse(self.tier))  # "tiny" as well as Tier.TINY
        if not isinstance(self.grid, np.ndarray):
            kind = type(self.grid).__name__
            raise ValueError(f"vision tokens need a real-valued numpy grid, got {kind}")
        if self.grid.dtype.kind not in "fiu":  # not complex, object, bool or text
            raise ValueError(f"vision tokens need a real-valued numpy grid, got {self.grid.dtype}")
        g = self.tier.grid
        if self.grid.ndim != 3 or self.grid.shape[:2] != (g, g):
            raise ValueError(
                f"vision tokens for tier {self.tier.value} need shape ({g}, {g}, dim), "
                f"got {tuple(self.grid.shape)}"
            )
        if self.ink_rows is not None and (
            isinstance(self.ink_rows, bool) or not isinstance(self.ink_rows, int)
            or self.ink_rows < 0
        ):
            raise ValueError(f"ink_rows must be an int ≥ 0 or None, got {self.ink_rows!r}")

    @property
    def dim(self) -> int:
        return int(self.grid.shape[2])

    @property
    def slots(self) -> int:
        return self.tier.slots

    def to_bytes(self) -> bytes:
        """A compact, pickle-free byte form: magic, JSON header, raw little-endian floats.

        A float16 or float32 grid is written exactly; any other (float64, integers) as
        :func:`compact` makes it, since :meth:`from_bytes` reads those two types only —
        a finite value past float32's range raises ``ValueError`` rather than being
        written as infinity."""
        grid = self.grid if self.grid.dtype.kind == "f" and self.grid.itemsize in (2, 4) else (
            compact(self.grid))
        if grid is not self.grid and not np.isfinite(grid).all() and np.isfinite(self.grid).all():
            # float64 past float32's range would be written as infinity, and read back so
            raise ValueError("vision tokens hold values past float32's range "
                             f"(largest magnitude {float(np.abs(self.grid).max()):.3g}); "
                             "they cannot be stored")
        arr = np.ascontiguousarray(grid.astype(grid.dtype.newbyteorder("<")))
        fields: dict[str, object] = {"v": _VERSION, "tier": self.tier.value,
                                     "shape": list(arr.shape), "dtype": arr.dtype.str,
                                     "codec": self.codec}
        if self.ink_rows is not None:
            fields["ink"] = self.ink_rows
        header = json.dumps(fields, separators=(",", ":")).encode()
        return _MAGIC + struct.pack("<I", len(header)) + header + arr.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> VisionTokens:
        """Parse :meth:`to_bytes` output; anything else raises :class:`VisionTokensFormatError`."""
        try:
            if isinstance(data, (bytearray, memoryview)):
                data = bytes(data)
            if data[:4] != _MAGIC:
                raise ValueError("bad magic")
            (n,) = struct.unpack("<I", data[4:8])
            header = json.loads(data[8 : 8 + n])
            if not isinstance(header, dict):
                raise ValueError("header is not a JSON object")
            version = header.get("v")
            if isinstance(version, bool) or version != _VERSION:
                raise ValueError(f"unsupported version {version!r}")
            shape = header["shape"]
            if not isinstance(shape, list) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape
            ):
                raise ValueError(f"shape must be a list of sizes, got {shape!r}")
            dtype = np.dtype(header.get("dtype", "<f2"))
            if dtype.str not in ("<f2", "<f4"):
                raise ValueError(f"unsupported dtype {dtype.str}")
            codec = header["codec"]
            if not isinstance(codec, str):
                raise ValueError(f"codec must be a string, got {codec!r}")
            body = data[8 + n :]
            expected = math.prod(shape) * dtype.itemsize
            if len(body) != expected:
                raise ValueError(f"{len(body)} payload bytes, expected {expected}")
            grid = np.frombuffer(body, dtype=dtype).reshape(shape)
            return cls(tier=Tier.parse(header["tier"]), grid=grid, codec=codec,
                       ink_rows=header.get("ink"))
        except (ValueError, KeyError, TypeError, struct.error, RecursionError) as exc:
            # (json.JSONDecodeError is a ValueError; RecursionError: deeply nested JSON.)
            raise VisionTokensFormatError(f"not a vision-token record: {exc}") from exc


def compact(grid: np.ndarray) -> np.ndarray:
    """``grid`` as float16 when all its values are finite in float16, else float32."""
    with np.errstate(over="ignore"):  # past float32's range: inf, which callers check
        g32 = np.asarray(grid, dtype=np.float32)
    if np.isfinite(g32).all() and np.abs(g32).max(initial=0.0) < 65000.0:
        return g32.astype(np.float16)
    return g32


@dataclass(frozen=True)
class Recollection:
    """What a codec read back from one page's vision tokens.

    ``confidence`` is the geometric mean of the probabilities the decoder gave its own
    greedy choices (1.0 = certain); ``tokens`` the number of decoder tokens produced.
    """

    text: str
    tier: Tier
    confidence: float
    tokens: int
    seconds: float = 0.0
    codec: str = ""
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Codec(Protocol):
    """Page images → vision tokens → text. Implementations must be deterministic."""

    @property
    def name(self) -> str:
        """Identifies model and weights; cached artefacts are keyed by it."""
        ...

    @property
    def render_settings(self) -> RenderSettings | None:
        """The page layout this codec was trained to read, or ``None`` if it reads any."""
        ...

    def encode(self, images: Sequence[Image.Image], tier: Tier) -> list[VisionTokens]:
        """Encode page images of one tier (each ``tier.pixels`` square) in one batch."""
        ...

    def decode(
        self, tokens: Sequence[VisionTokens], *, max_new_tokens: int | None = None
    ) -> list[Recollection]:
        """Read text back from vision tokens, batched across pages."""
        ...


def weights_dir() -> Path:
    """Directory of the packaged weights, config, tokenizer and model card."""
    return Path(str(resources.files("opticmem.encoder").joinpath("weights")))


def checkpoint_codec_name(directory: str | Path, preset_name: str | None = None) -> str:
    """The name :meth:`~opticmem.encoder.OCRCodec.from_pretrained` gives one of our
    checkpoints: ``opticmem:PRESET:DIGEST``, the digest that of its index (which holds
    every shard's SHA-256). Read from two small files, no weights loaded (nor torch), so
    a bot that has not loaded its codec can still name it to the workers reading its
    pages. ``preset_name`` is the config's, read from ``config.json`` when not given;
    ``OSError``, ``ValueError`` or ``KeyError`` when the files are not there or not ours."""
    root = Path(directory)
    if preset_name is None:
        config = json.loads((root / "config.json").read_text(encoding="utf-8"))
        preset_name = config["model"]["name"]
        if not isinstance(preset_name, str):
            raise ValueError(f"{root / 'config.json'} names no model")
    index = (root / "model.safetensors.index.json").read_bytes()
    return f"opticmem:{preset_name}:{hashlib.sha256(index).hexdigest()[:12]}"
