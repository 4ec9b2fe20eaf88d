"""opticmem.encoder: the DeepSeek-OCR-style DeepEncoder and MoE decoder, and the codec seam.

The heavy names (anything that imports torch) load lazily, so ``import opticmem`` stays
fast for code that only needs the codec seam.

>>> from opticmem.encoder import OCRCodec, preset  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from opticmem.encoder.codec import Codec, CodecError, Recollection, VisionTokens

_LAZY = {
    "OCRCodec": "opticmem.encoder.ocr",
    "OCRModel": "opticmem.encoder.model",
    "build_model": "opticmem.encoder.model",
    "ModelConfig": "opticmem.encoder.config",
    "preset": "opticmem.encoder.config",
    "GenerationConfig": "opticmem.encoder.generate",
    "generate": "opticmem.encoder.generate",
    "generate_continuous": "opticmem.encoder.continuous",
    "save_checkpoint": "opticmem.encoder.checkpoint",
    "load_checkpoint": "opticmem.encoder.checkpoint",
    "load_official": "opticmem.encoder.official",
    "preprocess": "opticmem.encoder.preprocess",
    "CheckpointError": "opticmem.encoder.errors",
    "ConfigError": "opticmem.encoder.errors",
    "InputError": "opticmem.encoder.errors",
}

if TYPE_CHECKING:
    from opticmem.encoder.checkpoint import load_checkpoint, save_checkpoint
    from opticmem.encoder.config import ModelConfig, preset
    from opticmem.encoder.continuous import generate_continuous
    from opticmem.encoder.errors import CheckpointError, ConfigError, InputError
    from opticmem.encoder.generate import GenerationConfig, generate
    from opticmem.encoder.model import OCRModel, build_model
    from opticmem.encoder.ocr import OCRCodec
    from opticmem.encoder.official import load_official
    from opticmem.encoder.preprocess import preprocess


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'opticmem.encoder' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "CheckpointError",
    "Codec",
    "CodecError",
    "ConfigError",
    "GenerationConfig",
    "InputError",
    "ModelConfig",
    "OCRCodec",
    "OCRModel",
    "Recollection",
    "VisionTokens",
    "build_model",
    "generate",
    "generate_continuous",
    "load_checkpoint",
    "load_official",
    "preprocess",
    "preset",
    "save_checkpoint",
]
