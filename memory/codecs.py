"""Which codec the memory reads its pages with, loaded only when first needed.

The memory talks to a vision model only through :class:`~opticmem.encoder.codec.Codec`.
:class:`CodecSlot` holds the choice:

* a :class:`Codec` instance — used as given;
* ``"bundled"`` (the default) — the small trained codec that ships with opticmem, loaded
  on first need (first decode or encode, never at construction) on the best device
  (the loader picks CUDA when present). If the bundled weights are not installed, the
  slot logs one warning and behaves like ``None``; :attr:`CodecSlot.status` says why;
* ``None`` — no model. Pages are still rendered and shown as images, but nothing is
  read back: ``Context.text()`` shows a placeholder for each image page, and recall
  searches only the exact-facts sidecars. Page transcripts are never used in their
  place — they are the ground truth of what was drawn, not what the memory remembers.

Codec calls are serialised by the slot's lock (models are not assumed thread-safe); a
forked child gets fresh locks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal, TypeAlias

from opticmem.encoder.codec import Codec, CodecError, checkpoint_codec_name, weights_dir
from opticmem.forks import renew_in_forked_child

log = logging.getLogger(__name__)

CodecSpec: TypeAlias = Codec | Literal["bundled"] | None
"""What ``OpticalMemory(codec=...)`` accepts."""


def load_bundled_codec() -> Codec:
    """Load the bundled codec through the encoder's loader.

    Raises :class:`~opticmem.errors.CodecUnavailableError` if this installation has no
    loader or no weights, naming the cause.
    """
    from opticmem.errors import CodecUnavailableError

    try:
        from opticmem.encoder.bundled import load_bundled_codec as loader
    except (ImportError, AttributeError) as exc:
        raise CodecUnavailableError(
            "no bundled codec: this installation of opticmem has no bundled-codec loader "
            f"({exc}); pass codec=None, or a codec such as OCRCodec.from_pretrained(dir)"
        ) from exc
    try:
        return loader()
    except (CodecError, OSError, ValueError, RuntimeError) as exc:
        raise CodecUnavailableError(f"the bundled codec could not be loaded: {exc}") from exc


class CodecSlot:
    """The memory's codec, resolved lazily; see the module docstring."""

    def __init__(
        self,
        spec: CodecSpec = "bundled",
        *,
        loader: Callable[[], Codec] = load_bundled_codec,
        on_load: Callable[[Codec], None] | None = None,
    ) -> None:
        if spec is not None and spec != "bundled" and not isinstance(spec, Codec):
            given = repr(spec) if isinstance(spec, str) else type(spec).__name__
            raise TypeError(
                f"codec must be a Codec, 'bundled' or None, not {given} (a checkpoint "
                "directory loads with OCRCodec.from_pretrained(path))"
            )
        self._spec = spec
        self._loader = loader
        self._codec: Codec | None = spec if isinstance(spec, Codec) else None
        self._resolved = spec != "bundled"
        self._status = "none (codec=None)" if spec is None else (
            "bundled (not loaded yet)" if spec == "bundled" else f"given: {self._codec_name()}"
        )
        self._on_load = on_load
        self._bundled_name: str | None = None
        """:meth:`expected_name` of the bundled codec, once read from its files."""
        self.after_fork_in_child()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        """Fresh locks: at construction, and in a forked child, where a lock the parent's
        background reader held at the fork would stay held for good (no thread of the
        parent lives on in the child to release it)."""
        self._load_lock = threading.Lock()
        self.lock = threading.RLock()
        """Held around every codec call."""

    def _codec_name(self) -> str:
        return self._codec.name if self._codec is not None else "none"

    @property
    def status(self) -> str:
        """Human-readable state: given, bundled (loaded or not), or why there is none."""
        return self._status

    @property
    def configured(self) -> bool:
        """True unless the memory was made with ``codec=None``."""
        return self._spec is not None

    def peek(self) -> Codec | None:
        """The codec if already resolved, without loading anything."""
        return self._codec

    def expected_name(self) -> str:
        """The name of the codec this slot holds or would load, without loading it: the
        bundled codec's is read from its files (:func:`checkpoint_codec_name`); ``""``
        when there is no telling (a loader of the caller's own, or weights not there).

        What a bot queuing pages tells the workers: they refuse a page meant for another
        codec than theirs, whose readings the bot would never look up. A bot that had not
        loaded its codec named none, and a worker of another codec read its pages for
        nothing, saying nothing."""
        if self._codec is not None:
            return self._codec.name
        if self._resolved or self._loader is not load_bundled_codec:
            return ""
        if self._bundled_name is None:
            try:
                self._bundled_name = checkpoint_codec_name(weights_dir())
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.debug("the bundled codec's name is not known: %s", exc)
                self._bundled_name = ""
        return self._bundled_name

    def get(self) -> Codec | None:
        """The codec, loading the bundled one on first call; ``None`` if there is none."""
        if self._resolved:
            return self._codec
        with self._load_lock:
            if not self._resolved:
                from opticmem.errors import CodecUnavailableError

                try:
                    self._codec = self._loader()
                    self._status = f"bundled: {self._codec.name}"
                    log.info("loaded the bundled codec %s", self._codec.name)
                    if self._on_load is not None:
                        self._on_load(self._codec)
                except CodecUnavailableError as exc:
                    self._codec = None
                    self._status = f"unavailable: {exc}"
                    log.warning("opticmem runs without a codec: %s", exc)
                self._resolved = True
        return self._codec

