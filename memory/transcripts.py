"""Transcript files: JSON lines of ``{"session", "role", "text", "ts"?, "meta"?}``.

Used by ``opticmem ingest`` and ``opticmem demo``. Every line is checked with the same
rules as :meth:`~opticmem.OpticalMemory.add` (:mod:`opticmem.sessions`) *before* anything
is stored, and problems are reported with their line numbers. ``ts`` may be Unix seconds
or an ISO 8601 string (UTC if it has no offset); a missing ``session`` takes the default.

>>> turns, errors = parse_transcript(['{"role": "user", "text": "hi", "ts": "2026-03-01T08:00"}',
...                                   '{"role": "robot", "text": "beep"}'])
>>> turns[0].ts, errors[0].line
(1772352000.0, 2)
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opticmem.errors import OpticMemError
from opticmem.render.layout import iso_seconds
from opticmem.sessions import (
    DEFAULT_ROLES,
    MAX_TURN_CHARS,
    validate_session,
    validate_ts,
    validate_turn,
)


@dataclass(frozen=True, slots=True)
class TranscriptTurn:
    """One valid line of a transcript."""

    line: int
    session: str
    role: str
    text: str
    ts: float | None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_input(self) -> dict[str, Any]:
        """The mapping :meth:`~opticmem.OpticalMemory.add_many` takes."""
        return {"role": self.role, "text": self.text, "ts": self.ts, "meta": self.meta}


@dataclass(frozen=True, slots=True)
class TranscriptError:
    """A line that cannot be stored, and why."""

    line: int
    message: str


class TranscriptEncodingError(OpticMemError, ValueError):
    """A transcript file in another encoding than UTF-8 (UTF-16 or UTF-32, as PowerShell's
    ``>`` and Windows' "Unicode" save write): an error of the whole file, not of each
    line."""


_UNICODE_NAMES = {"utf-16": "UTF-16 (with a byte order mark)", "utf-16-le": "UTF-16LE",
                  "utf-16-be": "UTF-16BE", "utf-32": "UTF-32 (with a byte order mark)",
                  "utf-32-le": "UTF-32LE", "utf-32-be": "UTF-32BE"}


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        return iso_seconds(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"ts must be a number or an ISO 8601 string, got {value!r}")
    # JSON integers have no size limit: float() of one past ~1e308 raised OverflowError,
    # which escaped the per-line errors (ingest and demo showed a traceback)
    return validate_ts(value)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: an object naming a key twice is an error. JSON keeps
    the last one, so ``{"text": "a", …, "text": "b"}`` stored "b" and dropped "a" (or a
    second ``"session"`` moved the turn to another session) without a word."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key!r} appears more than once in an object")
            seen.add(key)
    return obj


def parse_transcript(
    lines: Iterable[str],
    *,
    default_session: str = "default",
    roles: Collection[str] = DEFAULT_ROLES,
    max_chars: int = MAX_TURN_CHARS,
) -> tuple[list[TranscriptTurn], list[TranscriptError]]:
    """Valid turns and per-line errors of a JSON-lines transcript (blank lines skipped)."""
    turns: list[TranscriptTurn] = []
    errors: list[TranscriptError] = []
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=_unique_keys)
            if not isinstance(obj, dict):
                raise ValueError("each line must be a JSON object")
            if "text" not in obj:
                # a chat API's message ({"role", "content"}) got "turn text must be str or
                # UTF-8 bytes, got NoneType", which named neither key
                raise ValueError('no "text"' + (
                    ': a line holds its turn\'s text under "text", not "content"'
                    if "content" in obj else ""))
            # null is absent, as for "ts": an exporter writes every key of its schema
            session = validate_session(
                default_session if obj.get("session") is None else obj["session"])
            ts = _ts(obj.get("ts"))
            role, text, ts_ok, meta = validate_turn(
                obj.get("role"), obj.get("text"), 0.0 if ts is None else ts, obj.get("meta"),
                roles=roles, max_chars=max_chars,
            )
            turns.append(TranscriptTurn(n, session, role, text, None if ts is None else ts_ok,
                                        meta))
        except (OpticMemError, ValueError) as exc:
            message = str(exc)
            if message.startswith("Exceeds the limit") and "integer string" in message:
                # Python's own guard against slow int parsing, which told the user to
                # call sys.set_int_max_str_digits()
                message = (f"a number of more than {sys.get_int_max_str_digits()} digits "
                           "(no ts, id or count is that long)")
            errors.append(TranscriptError(n, message))
        except RecursionError:  # json.loads on brackets nested thousands deep
            errors.append(TranscriptError(n, "JSON nested too deeply"))
    return turns, errors


def read_transcript(
    path: str | Path, **kwargs: Any
) -> tuple[list[TranscriptTurn], list[TranscriptError]]:
    """:func:`parse_transcript` of a UTF-8 file (invalid UTF-8 is an error of its line).

    A leading byte order mark (as Windows tools write UTF-8) is the encoding's signature,
    not part of the first line: ``json.loads`` would refuse that line for it. A file in
    UTF-16 or UTF-32 (a byte order mark of theirs, or the zero bytes of their ASCII, as
    :func:`json.detect_encoding` tells them) raises :class:`TranscriptEncodingError`:
    each of its lines was reported as "not valid UTF-8" or as bad JSON."""
    data = Path(path).read_bytes()
    encoding = json.detect_encoding(data[:4])
    if encoding in _UNICODE_NAMES:
        raise TranscriptEncodingError(
            f"{path} is {_UNICODE_NAMES[encoding]}, not UTF-8: a transcript is UTF-8 JSON "
            "lines. Save it as UTF-8 (PowerShell: Out-File -Encoding utf8, or "
            f"iconv -f {encoding[:6].upper()} -t UTF-8)")
    data = data.removeprefix(codecs.BOM_UTF8)
    lines: list[str] = []
    bad: list[TranscriptError] = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append("")
            bad.append(TranscriptError(n, f"not valid UTF-8 at byte {exc.start}"))
    turns, errors = parse_transcript(lines, **kwargs)
    return turns, sorted(bad + errors, key=lambda e: e.line)
