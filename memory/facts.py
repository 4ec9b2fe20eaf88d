"""The exact-facts sidecar: strings optical reading gets wrong silently, kept as text.

A blurry page still conveys *what was discussed*; it does not reliably convey
``9f86d081884c``, ``$48,250.00``, ``2026-03-04`` or ``mina.kim@example.com`` — a misread
digit looks as plausible as the right one. So when a page is sealed, the identifiers,
numbers, dates, times, versions, URLs, e-mail addresses, hashes, paths and code spans
on it are extracted from the archived turn text and stored with the page. The context
shows them as one text line after the page image, and recall indexes them.

>>> extract_facts("Ship v0.9.1 on 2026-03-04; budget $48,250.00, see https://x.io/a.")
('v0.9.1', '2026-03-04', '$48,250.00', 'https://x.io/a')
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence

MAX_FACTS = 32
"""At most this many facts per page (the first ones on the page)."""

MAX_FACT_CHARS = 200
"""Longer matches are left out: a truncated "exact" fact would not be exact."""

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)

# Leftmost match wins; at one position, the first alternative that matches.
_FACT = re.compile(
    "|".join(
        [
            r"(?:https?|ftp)://[^\s<>\"'`]+",  # URLs
            r"\bwww\.[^\s<>\"'`]+",
            r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",  # e-mail addresses
            r"`[^`\n]{1,120}`",  # code spans
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:?\d{2})?)?\b",
            r"\b\d{1,2}/\d{1,2}/\d{2,4}\b",
            rf"\b{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?\b",
            rf"\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}(?: \d{{4}})?\b",
            r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b",  # times
            r"[$€£¥₩]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:[kKmMbB]n?|million|billion))?",  # money
            r"\bv?\d+(?:\.\d+){2,3}(?:-[0-9A-Za-z.]+)?\b",  # versions (three+ parts)
            r"\bv\d+(?:\.\d+)?\b",
            r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b",  # hashes
            r"(?:~|\.{1,2})(?:/[\w.@-]+)+/?|\b[\w.-]*(?:/[\w.@-]+){2,}/?",  # paths
            r"\b[\w-]+\.(?:py|js|ts|tsx|json|ya?ml|toml|md|txt|csv|sql|sh|rs|go|java|c|h|cpp)\b",
            r"#\d+\b",  # issue / ticket numbers
            r"\b[A-Z][A-Z0-9]+-\d+\b",  # JIRA-style keys
            r"\b[A-Za-z_][A-Za-z0-9]*_[A-Za-z0-9_]+\b",  # snake_case identifiers
            r"\b[a-z]+(?:[A-Z][a-z0-9]*)+\b",  # camelCase identifiers
            r"\b(?=[A-Za-z]*\d)(?=\d*[A-Za-z])[A-Za-z0-9]{3,}\b",  # mixed letters+digits
            r"[+-]?\b\d[\d,]*(?:\.\d+)?\s?%",  # percentages
            r"\+?\d[\d ().-]{7,}\d",  # phone-like digit runs
            r"(?<![\w.,])\d+(?:[.,]\d+)+(?![\d])",  # numbers with separators or decimals
            r"(?<![\w.,])\d{2,}(?!\d)",  # numbers of two or more digits (also "2026년")
        ]
    )
)
_TRAIL = ".,;:!?)]}'\""


def fact_spans(text: str) -> list[tuple[int, int, str]]:
    """Every fact in ``text`` as ``(start, end, fact)``, in order of appearance."""
    out: list[tuple[int, int, str]] = []
    for m in _FACT.finditer(text):
        s, e = m.start(), m.end()
        fact = m.group()
        if fact[0] not in "`" and fact[-1] in _TRAIL:  # sentence punctuation after a URL…
            stripped = fact.rstrip(_TRAIL)
            if fact.startswith(("http", "ftp", "www")) and "(" in stripped:
                stripped = fact.rstrip(_TRAIL.replace(")", ""))
            e -= len(fact) - len(stripped)
            fact = stripped
        fact = fact.strip()
        if fact and len(fact) <= MAX_FACT_CHARS:
            out.append((s, e, fact))
    return out


def _dedupe(facts: Iterable[str], limit: int) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for f in facts:
        if f not in seen:
            seen[f] = None
            if len(seen) >= limit:
                break
    return tuple(seen)


def extract_facts(text: str, limit: int = MAX_FACTS) -> tuple[str, ...]:
    """The distinct facts in ``text`` in order of first appearance (at most ``limit``)."""
    return _dedupe((f for _, _, f in fact_spans(text)), limit)


class FactSpans:
    """The facts of one text with their offsets, searchable by range."""

    __slots__ = ("_ends", "spans")

    def __init__(self, text: str) -> None:
        self.spans = fact_spans(text)
        self._ends = [e for _, e, _ in self.spans]

    def between(self, lo: int, hi: int) -> list[str]:
        """Facts overlapping ``[lo, hi)`` (spans are ordered and disjoint, so a binary
        search on their ends finds the first)."""
        i = bisect.bisect_right(self._ends, lo)
        out = []
        while i < len(self.spans) and self.spans[i][0] < hi:
            out.append(self.spans[i][2])
            i += 1
        return out


def page_facts(
    segments: Sequence[tuple[FactSpans, int, int]], limit: int = MAX_FACTS
) -> tuple[str, ...]:
    """Facts of a page from its turns: ``segments`` are ``(FactSpans(turn_text), start,
    end)`` with the span of each turn's text drawn on the page. A fact that straddles the
    page edge (a URL wrapped onto the next page) is kept whole, on both pages.

    >>> page_facts([(FactSpans("see v1.2.3 and 2026-03-04"), 0, 8)])
    ('v1.2.3',)
    """
    return _dedupe((f for spans, lo, hi in segments for f in spans.between(lo, hi)), limit)


def facts_line(facts: Sequence[str]) -> str:
    """The sidecar as the single text line the context shows after a page.

    >>> facts_line(("v0.9.1", "2026-03-04"))
    'Exact facts: v0.9.1 · 2026-03-04'
    """
    return "Exact facts: " + " · ".join(facts) if facts else ""
