"""Typed errors of the model package, all under :class:`~opticmem.encoder.codec.CodecError`.

Callers can catch ``CodecError`` for anything the codec or its weights raise, or one of
these for a specific failure.
"""

from __future__ import annotations

from opticmem.encoder.codec import CodecError


class ConfigError(CodecError, ValueError):
    """A config that cannot describe a working model (bad sizes, unknown preset or field)."""


class InputError(CodecError, ValueError):
    """Inputs of the wrong shape or kind for the model (image size, token counts, dtypes)."""


class CheckpointError(CodecError):
    """A checkpoint that cannot be loaded: missing, truncated, corrupt or wrong-shaped files.

    ``path`` names the file and ``key`` the first tensor name that did not fit (either may
    be ``None`` when the failure is not about one file or tensor).
    """

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = []
        if path is not None:
            where.append(f"file {path}")
        if key is not None:
            where.append(f"key {key!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.path = path
        self.key = key
