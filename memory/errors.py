"""The exceptions opticmem raises, as one small hierarchy users can catch.

Everything the memory raises derives from :class:`OpticMemError`, except what a codec or
its weights raise: :class:`CodecError` (from :mod:`opticmem.encoder`, re-exported here) is
a root of its own, since the model package does not depend on the memory — catch
``(OpticMemError, CodecError)`` for both. Errors about bad arguments also derive from
``ValueError`` so generic handlers keep working. The exceptions to the rule: an argument
that is of no type it takes (``codec=``, ``text_counter=``, ``original()``'s passage)
raises a plain ``TypeError`` (``cost_model=`` and ``policy=`` raise
:class:`ConfigurationTypeError`, which is a ``TypeError`` too);
:meth:`~opticmem.OpticalMemory.page_png` raises ``IndexError`` for a page the session does
not have; and a few checks raise a plain
``ValueError``: :func:`~opticmem.message_tokens` for a content block it cannot price,
and the integrations' constructors for a bad option (``with_memory`` also for a call
with no session). The store classes' own constructors raise :class:`ConfigurationError`
for a bad setting (:func:`~opticmem.open_store` raises :class:`StoreURLError` for the
same URL).
"""

from __future__ import annotations

from opticmem.encoder.codec import CodecError


class OpticMemError(Exception):
    """Base class of every error the memory, its stores and integrations raise on purpose
    (a codec's own errors are :class:`CodecError`)."""


class InvalidSessionError(OpticMemError, ValueError):
    """A session id that cannot be stored (empty, too long, or not valid text)."""


class InvalidTurnError(OpticMemError, ValueError):
    """A turn that cannot be stored as given (empty, not valid UTF-8, unknown role, or for
    ``add_many`` a turn of another shape than a mapping or a (role, text[, ts]) tuple)."""


class TurnTooLargeError(InvalidTurnError):
    """A turn over the memory's size limit; nothing was stored. (A turn within it that
    the store's backend cannot take in one value raises :class:`RecordTooLargeError`.)"""


class BudgetError(OpticMemError, ValueError):
    """A budget that is not a whole number of tokens ≥ 1, or cannot hold even the newest
    turn.

    ``needed``: for a budget too small for the newest turn, the smallest budget that holds
    it (what the message tells the user to raise ``budget_tokens`` to); else ``None``.
    """

    def __init__(self, message: str, *, needed: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed


class ConfigurationError(OpticMemError, ValueError):
    """A setting the memory cannot work with: an unknown cost model or decay policy name, an
    unknown tier, or an option out of its range. Names the setting and what it accepts."""


class ConfigurationTypeError(ConfigurationError, TypeError):
    """A setting of no type it takes (``cost_model=3``, ``policy=object()``): a
    :class:`ConfigurationError` as an unknown name for it is, naming the setting and what
    it accepts, and a ``TypeError`` as before, for handlers that catch that."""


class StoreError(OpticMemError):
    """A store failed to read or write."""


class SessionFullError(StoreError):
    """An append would take a session past the store's cap on live turns (the Redis
    store's ``max_turns``); nothing was stored.

    Forget old turns (:meth:`~opticmem.store.Store.forget_turns`) or delete the session
    to make room, or open the store with a larger cap.
    """


class RecordTooLargeError(StoreError, ValueError):
    """A write holding a value larger than the store's backend takes in one piece (on
    Redis: the server's ``proto-max-bulk-len``, 512 MB by default, or its
    ``client-query-buffer-limit`` if that is lower): a turn, a page, a blob or a state
    value. Raised at once, without retries; nothing of the write was stored.

    ``size``: the value's size in bytes as it would be sent; ``limit``: the most the
    server takes (``None`` where it could not be read); ``setting``: the server setting
    that sets it (``"proto-max-bulk-len"``, ``"client-query-buffer-limit"``, or
    ``None``). Split the turn, or raise the setting on the server.
    """

    def __init__(self, message: str, *, size: int, limit: int | None = None,
                 setting: str | None = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.setting = setting


class StoreUnavailableError(StoreError, ConnectionError):
    """The store's backend (a Redis server, a database file) cannot be reached."""


class StoreURLError(OpticMemError, ValueError):
    """A store URL with an unknown scheme or a malformed location."""


class CodecUnavailableError(OpticMemError):
    """An operation needs a codec (vision tokens) but the memory has none (``codec=None``),
    or the bundled weights are not installed."""


class CorruptRecordError(StoreError):
    """A stored record or blob failed validation; names the session and key."""


class PageConflictError(StoreError):
    """A page was written with a number the store did not expect (a gap in the log)."""


__all__ = [
    "BudgetError",
    "CodecError",
    "CodecUnavailableError",
    "ConfigurationError",
    "ConfigurationTypeError",
    "CorruptRecordError",
    "InvalidSessionError",
    "InvalidTurnError",
    "OpticMemError",
    "PageConflictError",
    "RecordTooLargeError",
    "SessionFullError",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "TurnTooLargeError",
]
