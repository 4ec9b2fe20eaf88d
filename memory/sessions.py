"""What may be stored: session ids, roles, turn text, timestamps and metadata.

Every check here runs *before* a store is called, so a rejected call changes nothing.
The limits (all documented; the roles and the turn-length limit are configurable on
:class:`~opticmem.OpticalMemory`, the others are fixed):

* **Session ids**: 1 to :data:`MAX_SESSION_CHARS` (256) characters of valid Unicode with
  no control characters (C0, C1, DEL) and no line or paragraph separators. Anything else
  is allowed — spaces, colons, slashes, glob characters (``* ? [ ]``), emoji,
  right-to-left text — and backends must treat the id as an opaque string.
* **Roles**: ``user``, ``assistant``, ``system``, ``tool`` by default
  (:data:`DEFAULT_ROLES`); the memory takes a wider set if given one.
* **Turn text**: valid Unicode (no lone surrogates; ``bytes`` must be valid UTF-8), not
  empty or only whitespace, control and format characters, at most
  :data:`MAX_TURN_CHARS` (1,000,000) characters by default. Control characters,
  zero-width characters, emoji and right-to-left text are archived exactly as given (the
  renderer draws control characters as boxes, U+FFFD in the transcript, and records what it
  could not draw).
* **Timestamps**: finite Unix seconds from year 1 to year 9999 (:data:`MIN_TS` to
  :data:`MAX_TS`), the span a page caption can print as a date.
* **Metadata**: a JSON object with string keys, at most :data:`MAX_META_BYTES` when encoded.

>>> validate_session("team:alpha/*")
'team:alpha/*'
>>> validate_session("x" * 10_000)
Traceback (most recent call last):
...
opticmem.errors.InvalidSessionError: session id is 10000 characters long; the limit is 256
"""

from __future__ import annotations

import json
import math
import numbers
import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import Any

from opticmem.errors import InvalidSessionError, InvalidTurnError, TurnTooLargeError
from opticmem.render.layout import MAX_TS, MIN_TS, has_visible_text

MAX_SESSION_CHARS = 256
"""Longest session id accepted, in characters."""

MAX_TURN_CHARS = 1_000_000
"""Default limit on one turn's text, in characters (about 250k text tokens)."""

MAX_META_BYTES = 65_536
"""Limit on a turn's metadata, as compact UTF-8 JSON."""

DEFAULT_ROLES: tuple[str, ...] = ("user", "assistant", "system", "tool")
"""Roles a memory accepts unless configured otherwise."""


_SURROGATE = re.compile(r"[\ud800-\udfff]")
"""A lone surrogate (U+D800–U+DFFF): no valid Unicode text holds one."""


def _first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in ``text`` (``None``: none). A search in C: a
    loop over the characters in Python was a third of an ``add``'s own work (layout
    aside) on a 330-character turn, and 3.5 ms on a 100,000-character one."""
    m = _SURROGATE.search(text)
    return m.start() if m is not None else None


def validate_session(session: object) -> str:
    """Return ``session`` if it is a storable session id, else raise
    :class:`~opticmem.errors.InvalidSessionError` saying why."""
    if not isinstance(session, str):
        raise InvalidSessionError(f"session id must be a str, got {type(session).__name__}")
    if not session:
        raise InvalidSessionError("session id is empty")
    if len(session) > MAX_SESSION_CHARS:
        raise InvalidSessionError(
            f"session id is {len(session)} characters long; the limit is {MAX_SESSION_CHARS}"
        )
    bad = _first_surrogate(session)
    if bad is not None:
        raise InvalidSessionError(
            f"session id has a lone surrogate at index {bad}; it must be valid Unicode"
        )
    for i, ch in enumerate(session):
        if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029":
            raise InvalidSessionError(
                f"session id has control character U+{ord(ch):04X} at index {i}"
            )
    return _plain(session)


def _plain(text: str) -> str:
    """``text`` as an exact ``str``: a subclass (a ``class Role(str, Enum)`` member, NumPy's
    ``str_``) was kept as given by the in-process store, so it came back from ``turns()``,
    ``sessions()`` and ``messages()`` as that object (``str()`` of an enum member is
    ``"Role.USER"``) where a SQLite or Redis store gave back text. ``str.__str__`` copies
    the characters without calling the subclass's ``__str__``."""
    return text if type(text) is str else str.__str__(text)


def validate_role(role: object, roles: Collection[str] = DEFAULT_ROLES) -> str:
    """Return ``role`` if the memory accepts it, else raise
    :class:`~opticmem.errors.InvalidTurnError` naming the accepted roles."""
    if not isinstance(role, str):
        raise InvalidTurnError(f"role must be a str, got {type(role).__name__}")
    if role not in roles:
        hint = ""
        if role.strip().lower() in roles:
            hint = f" (did you mean {role.strip().lower()!r}?)"
        raise InvalidTurnError(
            f"unknown role {role!r}{hint}; accepted roles: {', '.join(sorted(roles))} "
            "(pass roles=... to OpticalMemory to accept more)"
        )
    return _plain(role)


def validate_text(text: object, max_chars: int = MAX_TURN_CHARS) -> str:
    """Return the turn text as ``str`` if it can be archived, else raise a typed error.

    ``bytes`` are decoded as strict UTF-8. The text itself is never altered: what is
    archived is exactly what was given.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidTurnError(
                f"turn text is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.end]!r}); "
                "the archive holds valid Unicode only"
            ) from None
    if not isinstance(text, str):
        raise InvalidTurnError(f"turn text must be str or UTF-8 bytes, got {type(text).__name__}")
    if len(text) > max_chars:
        raise TurnTooLargeError(
            f"turn text is {len(text):,} characters; the limit is {max_chars:,} "
            "(max_turn_chars); split it into several turns or raise the limit"
        )
    bad = _first_surrogate(text)
    if bad is not None:
        raise InvalidTurnError(
            f"turn text has a lone surrogate U+{ord(text[bad]):04X} at index {bad}; "
            "the archive holds valid Unicode only"
        )
    if not has_visible_text(text):
        raise InvalidTurnError("turn text is empty or only whitespace/invisible characters")
    return _plain(text)


def validate_ts(ts: object) -> float:
    """Return ``ts`` as float seconds if finite and within years 1–9999, else raise
    :class:`InvalidTurnError` (a page caption prints its turns' dates, so a timestamp
    outside that span would make every later context of the session fail). Any real
    number type is taken (NumPy's ``int64`` and ``float32`` too), except ``bool``."""
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real):
        raise InvalidTurnError(f"timestamp must be Unix seconds (a number), got {ts!r}")
    try:
        value = float(ts)
    except OverflowError:
        # not the value itself: repr of an int past 4,300 digits raises a bare ValueError
        # (and one just short of that would fill the message)
        raise InvalidTurnError(
            f"timestamp is out of range: a number of about {_magnitude(ts)} digits, not "
            "Unix seconds") from None
    if not math.isfinite(value):
        raise InvalidTurnError(f"timestamp must be finite, got {ts!r}")
    if not MIN_TS <= value <= MAX_TS:
        raise InvalidTurnError(
            f"timestamp {ts!r} is outside years 1–9999 (Unix seconds {MIN_TS:.0f} to "
            f"{MAX_TS:.0f}); is it in milliseconds or nanoseconds?"
        )
    return value


def _magnitude(number: numbers.Real) -> int:
    """Roughly how many decimal digits the integer part of ``number`` has (without
    converting it to text, which Python refuses past 4,300 digits)."""
    try:
        whole = int(math.trunc(number))  # noqa: RUF046 - typeshed: an _IntegralLike, not int
        return int(abs(whole).bit_length() * 0.30103) + 1
    except (TypeError, ValueError, OverflowError):
        return 0


def validate_turn(
    role: object,
    text: object,
    ts: object,
    meta: Mapping[str, Any] | None = None,
    *,
    roles: Collection[str] = DEFAULT_ROLES,
    max_chars: int = MAX_TURN_CHARS,
) -> tuple[str, str, float, dict[str, Any]]:
    """Validate a whole turn: ``(role, text, ts, meta)`` ready for a store.

    >>> validate_turn("user", "café".encode(), 0)
    ('user', 'café', 0.0, {})
    """
    return (validate_role(role, roles), validate_text(text, max_chars), validate_ts(ts),
            validate_meta(meta))


def validate_meta(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return metadata as a plain dict if it is a small JSON object, else raise."""
    if meta is None:
        return {}
    if not isinstance(meta, Mapping):
        raise InvalidTurnError(f"meta must be a mapping, got {type(meta).__name__}")
    try:
        blob = json.dumps(dict(meta), ensure_ascii=False, allow_nan=False)
        size = len(blob.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidTurnError(f"meta is not a JSON object with valid text: {exc}") from None
    except RecursionError:
        raise InvalidTurnError("meta is nested too deeply to store as JSON") from None
    bad = _non_string_key(meta)
    if bad is not None:
        where, key = bad
        raise InvalidTurnError(
            f"meta keys must be strings, got {key!r} in meta{where}: JSON would store it as "
            "a string (and drop a value whose key then collides); convert it first")
    if size > MAX_META_BYTES:
        raise InvalidTurnError(f"meta is {size:,} bytes as JSON; the limit is {MAX_META_BYTES:,}")
    result: dict[str, Any] = json.loads(blob)
    return result


def _non_string_key(meta: Mapping[str, Any]) -> tuple[str, object] | None:
    """The first key that is not a string, at any depth of ``meta`` (an object's keys,
    within objects and arrays), with where it is (``"['a'][0]"``; ``""`` at the top);
    ``None`` if every key is a string.

    JSON turns a number, ``True`` or ``None`` key into a string silently, so ``{1: "x"}``
    would come back as ``{"1": "x"}`` and ``{1: "x", "1": "y"}`` lose a value. Walked
    without recursion: the encoder has already bounded the depth, not this stack.
    """
    todo: list[tuple[str, object]] = [("", meta)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, Mapping):
            for k, v in value.items():
                if not isinstance(k, str):
                    return where, k
                todo.append((f"{where}[{k!r}]", v))
        elif isinstance(value, (list, tuple)):
            todo.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
    return None
