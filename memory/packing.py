"""Packing: turns that leave the verbatim window are flowed, in order, onto sealed pages.

Each turn starts on a new line (speaker label first); a turn longer than a page continues
on the next one, so a page may start mid-turn at ``(first_seq, first_line)`` and end
mid-turn before ``(last_seq, end_line)``. The next page always continues exactly where
the previous one ended — its *frontier*.

Only **complete** pages are sealed: a page is complete once a line exists that no longer
fits on it. Turns that left the window but do not yet fill a page are *staging* turns;
the context shows them verbatim until their page seals. Packing is a pure function of
the turn texts and the settings, so two processes sealing the same page produce
identical records (the store keeps the first; the second ``add_page`` returns ``False``).

Sealing computes the exact-facts sidecar (facts and their cues) from the archived text;
pixels are not drawn here (rendering is lazy, see :mod:`opticmem.artefacts`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from opticmem.facts import FactSpans, page_cues, page_facts
from opticmem.lru import LRU
from opticmem.records import PageRecord, Turn
from opticmem.render import PageLayout, RenderSettings, TurnLayout, TurnText, layout_turn, paginate
from opticmem.tokens import TextCounter


def layout_text(text: str) -> str:
    """The text as :func:`~opticmem.render.layout_turn` indexes it (``Line.start/end``):
    NFC, with ``\\r\\n``, ``\\r``, U+2028 and U+2029 turned into ``\\n``."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return text.replace("\u2028", "\n").replace("\u2029", "\n")


@dataclass(frozen=True, slots=True)
class Frontier:
    """Where the next page starts: line ``line`` of turn ``seq``."""

    seq: int = 0
    line: int = 0

    @classmethod
    def after(cls, page: PageRecord | None) -> Frontier:
        return cls(page.last_seq, page.end_line) if page is not None else cls()


@dataclass(frozen=True, slots=True)
class Remainder:
    """The part of a staging turn not yet on a sealed page (shown verbatim)."""

    turn: Turn
    text: str
    partial: bool
    """True when earlier lines of the turn are on a sealed page."""


class Packer:
    """Lays out turns (cached in-process) and seals complete pages.

    ``max_tokens`` optionally closes a page before its lines exceed that many text
    tokens (counted with ``counter``), on top of the renderer's grid (about 1,000 tokens
    of chat on the default 104×52 grid).
    """

    def __init__(
        self,
        settings: RenderSettings,
        counter: TextCounter,
        *,
        max_tokens: int | None = None,
        cache_entries: int = 8192,
    ) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"page max_tokens must be ≥ 1, got {max_tokens}")
        self.settings = settings
        self.counter = counter
        self.max_tokens = max_tokens
        self.render_key = settings.key()
        self._layouts: LRU[tuple[str, str, float | None], TurnLayout] = LRU(
            cache_entries, max_size=256_000_000, size=lambda k, v: len(k[1]) + 64
        )
        self._facts: LRU[str, FactSpans] = LRU(
            1024, max_size=64_000_000, size=lambda k, v: len(k) + 64
        )

    def layout(self, turn: Turn) -> TurnLayout:
        """The turn's lines (cached by role, text and — when drawn — timestamp)."""
        ts = turn.ts if self.settings.timestamps else None
        key = (turn.role, turn.text, ts)
        return self._layouts.get_or_compute(
            key, lambda: layout_turn(TurnText(turn.role, turn.text, ts), self.settings)
        )

    def fact_spans(self, turn: Turn) -> FactSpans:
        """Facts of a turn with their offsets in its layout text (cached)."""
        return self._facts.get_or_compute(turn.text, lambda: FactSpans(layout_text(turn.text)))

    def _count(self, text: str) -> int:
        return self.counter.count(text)

    def may_seal(self, frontier: Frontier, turns: Sequence[Turn]) -> bool:
        """Cheap test: could ``turns`` (from the frontier on) complete a page?"""
        rows = self.settings.rows
        lines = 0
        tokens = 0
        for t in turns:
            tl = self.layout(t)
            first = frontier.line if t.seq == frontier.seq else 0
            lines += max(0, len(tl.lines) - first)
            if lines > rows:
                return True
            if self.max_tokens is not None:
                tokens += sum(self._count(ln.text) for ln in tl.lines[first:])
                if tokens > self.max_tokens and lines > 1:
                    return True
        return False

    def _paginate(self, frontier: Frontier, turns: Sequence[Turn]) -> list[PageLayout]:
        start = frontier.line if turns and turns[0].seq == frontier.seq else 0
        return paginate(
            [self.layout(t) for t in turns],
            self.settings,
            start_line=start,
            count_tokens=self._count if self.max_tokens is not None else None,
            max_tokens=self.max_tokens,
        )

    def seal(
        self, session: str, next_page_no: int, frontier: Frontier, turns: Sequence[Turn],
        *, last: PageRecord | None = None,
    ) -> list[PageRecord]:
        """Records of the complete pages ``turns`` fill, numbered from ``next_page_no``.

        ``turns`` are the staging turns in seq order, starting at the frontier's turn
        (turns forgotten from the archive are simply absent); ``last`` is the session's
        newest page (``None``: none), whose :attr:`~opticmem.records.PageRecord.digest`
        the first new page records and each later one chains on. The digest is taken only
        when a page seals: it hashes the whole record, and most calls seal nothing.
        """
        if not turns or not self.may_seal(frontier, turns):
            return []
        out: list[PageRecord] = []
        for layout in self._paginate(frontier, turns):
            if not layout.complete:
                break
            chain = out[-1].digest if out else (last.digest if last is not None else "")
            out.append(self._record(session, next_page_no + len(out), layout, turns, chain))
        return out

    def _record(
        self, session: str, page_no: int, layout: PageLayout, turns: Sequence[Turn],
        prev: str,
    ) -> PageRecord:
        first, last = layout.sources[0], layout.sources[-1]
        spans: dict[int, tuple[int, int]] = {}
        for src in layout.sources:
            lo, hi = spans.get(src.turn, (src.start, src.end))
            spans[src.turn] = (min(lo, src.start), max(hi, src.end))
        segments = [(self.fact_spans(turns[i]), lo, hi) for i, (lo, hi) in spans.items()]
        facts = page_facts(segments)
        transcript = layout.transcript
        # The page's time span is that of all its turns: timestamps are the caller's and
        # need not grow with seq (an import, a clock stepped back), and the span is what the
        # caption prints and the age policy measures the page's newest turn by.
        stamps = [t.ts for t in turns[first.turn : last.turn + 1]]
        return PageRecord(
            session=session,
            page_no=page_no,
            first_seq=turns[first.turn].seq,
            first_line=first.line,
            last_seq=turns[last.turn].seq,
            end_line=last.line + 1,
            transcript=transcript,
            text_tokens=self._count(transcript),
            first_ts=min(stamps),
            last_ts=max(stamps),
            render_key=self.render_key,
            facts=facts,
            missing=layout.missing,  # each character once (paginate)
            text_counter=self.counter.name,
            cues=page_cues(segments, facts),
            prev=prev,
        )

    def remainder(self, frontier: Frontier, turns: Sequence[Turn]) -> list[Remainder]:
        """What of the staging ``turns`` is not on a sealed page, turn by turn."""
        out: list[Remainder] = []
        for t in turns:
            if t.seq == frontier.seq and frontier.line > 0:
                lines = self.layout(t).lines
                if frontier.line >= len(lines):
                    continue  # the turn ended exactly at the page's end
                text = layout_text(t.text)[lines[frontier.line].start :]
                out.append(Remainder(t, text, partial=True))
            elif t.seq >= frontier.seq:
                out.append(Remainder(t, t.text, partial=False))
        return out
