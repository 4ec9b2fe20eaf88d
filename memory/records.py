"""What a store keeps: turns (the archive, append-only) and pages (sealed, append-only).

Both are frozen dataclasses with a JSON form, so every backend stores them the same way
and nothing is ever unpickled. Derived artefacts (page images per tier, vision tokens,
recollected text) are not records: they are blobs in the store's cache, recomputable
from the records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from opticmem.errors import CorruptRecordError

JSON = Any


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation, as archived.

    ``seq`` is the turn's 0-based position in its session, assigned atomically by the
    store; ``ts`` is Unix time in seconds (UTC).
    """

    session: str
    seq: int
    role: str
    text: str
    ts: float
    meta: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"seq": self.seq, "role": self.role, "text": self.text, "ts": self.ts,
             "meta": dict(self.meta)},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, session: str, data: str | bytes) -> Turn:
        try:
            d = json.loads(data)
            return cls(session=session, seq=int(d["seq"]), role=str(d["role"]),
                       text=str(d["text"]), ts=float(d["ts"]), meta=dict(d.get("meta") or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptRecordError(f"session {session!r}: unreadable turn record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class PageRecord:
    """A sealed page: a run of turn lines, rendered once, never changed.

    The page holds lines ``first_line..`` of turn ``first_seq`` through lines ``..end_line``
    (exclusive) of turn ``last_seq``; the next page starts where this one ends, so pages
    tile the archive with no gaps. ``transcript`` is the page's text exactly as drawn.
    ``facts`` is the exact-facts sidecar (ids, numbers, URLs… found on the page);
    ``cues[i]`` holds the words found around ``facts[i]`` (see :func:`opticmem.facts.page_cues`).
    """

    session: str
    page_no: int
    first_seq: int
    first_line: int
    last_seq: int
    end_line: int
    transcript: str
    text_tokens: int
    first_ts: float
    """Earliest timestamp of the page's turns (timestamps need not grow with ``seq``)."""
    last_ts: float
    """Latest timestamp of the page's turns: the age policy's age of the page."""
    render_key: str
    facts: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    text_counter: str = ""
    """Name of the text counter ``text_tokens`` was counted with (``""``: unknown), for
    reports. Pricing always recounts the transcript with the consumer's own counter: a
    name does not identify a counter (two lambdas share ``callable:<lambda>``)."""
    cues: tuple[str, ...] = ()
    """Per fact, the content words around it on the page, space-separated (``()``: sealed
    before cues existed), so recall finds a fact by what it was about."""
    prev: str = ""
    """:attr:`digest` of the session's page before this one (``""``: page 0, or a page
    sealed before digests were chained). Through it a page names every page before it, so
    a memory that finds the newest page it caches unchanged in the store knows the older
    ones it caches are unchanged too — after the session was deleted and imported again
    with one turn redacted in place, only the pages holding that turn differ."""

    @property
    def digest(self) -> str:
        """A digest of the whole record, :attr:`prev` included: of this page and, through
        the chain, of every page before it."""
        return hashlib.sha256(self.to_json().encode("utf-8", "surrogatepass")).hexdigest()[:32]

    @property
    def seqs(self) -> range:
        """Turn numbers with lines on this page."""
        return range(self.first_seq, self.last_seq + 1)

    def to_json(self) -> str:
        # The fields read straight off the record, in declaration order, as asdict() gave
        # them (less the session) but without its recursive deep copy of every tuple and
        # string: that copy was half the cost of a digest.
        d = {name: getattr(self, name) for name in _PAGE_FIELDS}
        return json.dumps(d, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, session: str, data: str | bytes) -> PageRecord:
        try:
            d = json.loads(data)
            return cls(
                session=session,
                page_no=int(d["page_no"]),
                first_seq=int(d["first_seq"]),
                first_line=int(d["first_line"]),
                last_seq=int(d["last_seq"]),
                end_line=int(d["end_line"]),
                transcript=str(d["transcript"]),
                text_tokens=int(d["text_tokens"]),
                first_ts=float(d["first_ts"]),
                last_ts=float(d["last_ts"]),
                render_key=str(d["render_key"]),
                facts=tuple(str(f) for f in d.get("facts", ())),
                missing=tuple(str(m) for m in d.get("missing", ())),
                text_counter=str(d.get("text_counter", "")),
                cues=tuple(str(c) for c in d.get("cues", ())),
                prev=str(d.get("prev", "")),
            )
        except (ValueError, KeyError, TypeError, OverflowError) as exc:  # Overflow: int(1e999)
            raise CorruptRecordError(f"session {session!r}: unreadable page record: {exc}") from exc


_PAGE_FIELDS = tuple(f.name for f in fields(PageRecord) if f.name != "session")
"""The fields :meth:`PageRecord.to_json` writes, in order."""
