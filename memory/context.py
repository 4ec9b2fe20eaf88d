"""The context: what a model is shown — pages at their tiers, then the verbatim turns.

A :class:`Context` is assembled by :meth:`opticmem.OpticalMemory.context` and costs no
more than its budget under the consumer's cost model. It is cheap to make: images are
rendered, and pages read back by the codec, only when :meth:`Context.messages`,
:meth:`Context.text` or :meth:`Context.embeddings` ask for them (and then cached).

The shape of :meth:`Context.messages` (plain dicts; the memory knows no framework)::

    {"role": "user", "content": [                       # only when a page is in context
        {"type": "text", "text": MEMORY_HEADER},
        {"type": "text", "text": "[Page 3 · turns 12–20 · 2026-03-01 09:12–09:40 UTC · Small]"},
        {"type": "image", "base64": "iVBOR…", "mime_type": "image/png"},
        {"type": "text", "text": "Exact facts: v0.9.1 · 2026-03-04"},
        …]}
    {"role": "user", "content": LEAD_NOTE}               # only when no page is in context
                                                         # and the first turn is a reply
    {"role": "user", "content": "…"}                     # staging and verbatim turns
    {"role": "assistant", "content": "…"}

The messages never open with an assistant turn (after any ``system`` turns): Anthropic's
API and Bedrock's Converse refuse a conversation that does ("A conversation must start
with a user message"). With a page in context the memory message comes first; without
one, when the oldest turn kept is a reply (its prompt left the budget, or went onto a page
the budget leaves out; or the session began with a greeting), a user message holding
:data:`LEAD_NOTE` is put before it. The note is priced inside the budget like any message
(``Cost.overhead``): the planner drops the oldest turn rather than let it overflow.

A turn before the newest that is too long for the budget even with every page out (a
pasted log: more than a quarter of what the newest turn leaves of the budget) is shown
clipped to that quarter: its head and tail around a note of how much was left out
(``ContextTurn.clipped``).

A page whose image would cost at least as much as its text (the **savings gate**) is
shown as its caption and transcript instead — exact text, no facts line needed.
``format="openai"`` writes images as ``image_url`` data-URL parts, each with the
``detail`` its price assumes when the consumer is tile-priced (``"low"`` for a page of at
most 512 pixels, ``"high"`` otherwise; see :class:`~opticmem.costs.TileCost`).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from opticmem.costs import CostModel, ImageCost, image_detail, png_size
from opticmem.errors import ConfigurationError
from opticmem.facts import facts_line
from opticmem.records import PageRecord, Turn
from opticmem.render import ORDER, Tier
from opticmem.render.layout import utc_minute

if TYPE_CHECKING:
    from opticmem.artefacts import Artefacts
    from opticmem.encoder.codec import VisionTokens

MEMORY_HEADER = (
    "Earlier conversation, kept as page images (oldest first; older pages are blurrier). "
    "Each page's caption names its turns and times; exact facts on it follow as text."
)
"""First text block of the memory message."""

LEAD_NOTE = "[Earlier conversation, if any, is not shown here.]"
"""Text of the user message put before a context's first turn when that turn is an
assistant's and no page is shown (see the module docstring): chat APIs that need a
conversation to open with a user message (Anthropic, Bedrock Converse) refuse it
otherwise. "If any": a session may really begin with the assistant's greeting."""


def needs_lead_note(roles: Iterable[str]) -> bool:
    """Whether turns of these roles (oldest first), shown with no page before them, need
    :data:`LEAD_NOTE` before them: the first that is not a ``system`` turn is an
    ``assistant`` turn.

    >>> needs_lead_note(["assistant", "user"]), needs_lead_note(["system", "assistant"])
    (True, True)
    >>> needs_lead_note(["user", "assistant"]), needs_lead_note(["tool"]), needs_lead_note([])
    (False, False, False)
    """
    return _lead_note_at(list(roles)) is not None


def lead_note_tokens(model: CostModel) -> int:
    """What the :data:`LEAD_NOTE` message costs under ``model`` (its text and the
    per-message overhead), exactly as :func:`~opticmem.costs.message_tokens` prices it."""
    return model.message_overhead + model.text_tokens(LEAD_NOTE)


def lead_note_cost(roles: Iterable[str], model: CostModel) -> int:
    """What :data:`LEAD_NOTE` adds before turns of these roles shown with no page:
    :func:`lead_note_tokens` when they need it (:func:`needs_lead_note`), else 0."""
    return lead_note_tokens(model) if needs_lead_note(roles) else 0


def lead_note_costs(roles: Sequence[str], model: CostModel) -> list[int]:
    """For each turn ``i`` of ``roles`` (oldest first), what :data:`LEAD_NOTE` adds to a
    context with no page that keeps turns ``i`` onwards: :func:`lead_note_tokens` when
    they need it (:func:`needs_lead_note`), else 0 — what the planner charges as it drops
    the oldest turns (:func:`~opticmem.budget.plan`).

    >>> from opticmem.costs import cost_model
    >>> m = cost_model()
    >>> lead_note_costs(["user", "assistant", "system", "assistant"], m) == [
    ...     0, lead_note_tokens(m), lead_note_tokens(m), lead_note_tokens(m)]
    True
    """
    note = lead_note_tokens(model)
    out = [0] * len(roles)
    first: str | None = None  # the first non-system role from ``i`` on
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] != "system":
            first = roles[i]
        out[i] = note if first == "assistant" else 0
    return out


def _lead_note_at(roles: Sequence[str]) -> int | None:
    """Where :data:`LEAD_NOTE` goes among turns of these roles shown with no page: before
    the first turn that is not a ``system`` turn, when that one is an assistant's
    (``None``: no note)."""
    i = next((i for i, r in enumerate(roles) if r != "system"), None)
    return i if i is not None and roles[i] == "assistant" else None


_UNMERGEABLE_ROLES = ("tool",)
"""Roles whose messages :func:`merge_message_runs` never merges: a tool message answers
one tool call (its ``tool_call_id``), so two of them are two answers."""


def _mergeable(message: Mapping[str, Any]) -> bool:
    """Whether :func:`merge_message_runs` may merge ``message`` with a neighbour: it holds
    only a ``role`` (not ``tool``) and a text or content-block ``content`` — any other
    field (``name``, ``tool_call_id``, ``tool_calls``, ``refusal``…) belongs to the one
    message and would be lost, or misattributed, in a merge."""
    return (isinstance(message.get("role"), str)
            and message["role"] not in _UNMERGEABLE_ROLES
            and set(message) <= {"role", "content"}
            and isinstance(message.get("content"), (str, list)))


def _blocks(content: str | list[Any]) -> list[Any]:
    """``content`` as content blocks: a string as one ``text`` block (the shape of a text
    part in both of :meth:`Context.messages`' formats, LangChain's and OpenAI's)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def merge_message_runs(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with each run of consecutive messages of one role merged into one
    message, whose content is the run's contents in order as content blocks: a string
    content becomes a ``{"type": "text", "text": ...}`` block (the text part of both the
    LangChain and the OpenAI format), a list of blocks is kept as it is. Nothing is lost
    and nothing reordered; a message not merged is returned as it is (the same dict), and
    the input is not changed.

    Why: :meth:`Context.messages` often gives two messages of one role in a row (the
    pages' message, then the user's first verbatim turn; a tool result sent as a user
    message after the user's turn; two replies stored in a row), and some chat APIs
    refuse that — Bedrock's Converse: "A conversation must alternate between user and
    assistant roles". Merging only removes per-message overhead, so under any
    :class:`~opticmem.costs.CostModel` the merged messages cost no more than the
    originals (:func:`~opticmem.costs.message_tokens`: exactly ``message_overhead`` less
    per message merged away).

    A message with any field besides ``role`` and ``content`` (a ``name``, a
    ``tool_call_id``, ``tool_calls``…), a ``tool`` message, and one whose content is
    neither text nor a list of blocks are never merged: two such messages of one role
    may still follow each other, and then alternation is up to the caller. ``system``
    messages merge like any other role.

    >>> merge_message_runs([
    ...     {"role": "user", "content": [{"type": "text", "text": "page"}]},
    ...     {"role": "user", "content": "hi"},
    ...     {"role": "assistant", "content": "hello"},
    ... ]) == [{"role": "user", "content": [{"type": "text", "text": "page"},
    ...                                     {"type": "text", "text": "hi"}]},
    ...        {"role": "assistant", "content": "hello"}]
    True
    >>> [m["role"] for m in merge_message_runs([
    ...     {"role": "tool", "content": "1", "tool_call_id": "a"},
    ...     {"role": "tool", "content": "2", "tool_call_id": "b"}])]
    ['tool', 'tool']
    """
    out: list[dict[str, Any]] = []
    fresh = False  # whether out[-1] is a message made here (its content list ours to extend)
    for msg in messages:
        prev = out[-1] if out else None
        if (prev is not None and prev.get("role") == msg.get("role")
                and _mergeable(prev) and _mergeable(msg)):
            if not fresh:
                prev = out[-1] = {"role": prev["role"], "content": _blocks(prev["content"])}
                fresh = True
            prev["content"].extend(_blocks(msg["content"]))
        else:
            out.append(msg)
            fresh = False
    return out


Shown = Literal["image", "text"]

_MESSAGE_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
"""A ``name`` chat APIs take on a message (OpenAI's pattern). Any other fails the whole
request (HTTP 400), so a turn's ``name`` meta that does not match is left off the message."""


def _span(t0: float, t1: float) -> str:
    start, stop = utc_minute(t0), utc_minute(t1)
    if start[:10] == stop[:10]:  # one day: the end's time only
        return f"{start}–{stop[11:]} UTC" if stop != start else f"{start} UTC"
    return f"{start} – {stop} UTC"


def caption(page: PageRecord, tier: Tier, shown: Shown) -> str:
    """The short text before a page: its number, turns, time span and tier.

    >>> from opticmem.records import PageRecord
    >>> p = PageRecord("s", 3, 12, 0, 20, 4, "…", 900, 1772352720.0, 1772354400.0, "k")
    >>> caption(p, Tier.SMALL, "image")
    '[Page 3 · turns 12–20 · 2026-03-01 08:12–08:40 UTC · Small]'
    """
    turns = f"turn {page.first_seq}" if page.first_seq == page.last_seq else (
        f"turns {page.first_seq}–{page.last_seq}"
    )
    if page.first_line > 0:
        turns += " (first one continued)"
    how = tier.value.title() + (", as text" if shown == "text" else "")
    return f"[Page {page.page_no} · {turns} · {_span(page.first_ts, page.last_ts)} · {how}]"


def continued_prefix(prev_page: int) -> str:
    """Written before the rest of a turn whose start is on page ``prev_page``."""
    return f"[…continued from page {prev_page}] "


@dataclass(frozen=True, slots=True)
class PagePrice:
    """What showing one page costs at each tier, after the savings gate."""

    costs: tuple[int, int, int, int]
    shown: tuple[Shown, Shown, Shown, Shown]
    image_tokens: tuple[int, int, int, int]
    transcript_tokens: int


def price_page(page: PageRecord, model: CostModel) -> PagePrice:
    """Cost of the page at Large…Tiny under ``model``: as an image (caption + image +
    facts line) when that is strictly cheaper than as text (caption + transcript).

    The transcript is counted with ``model``'s counter, never taken from the record's
    ``text_tokens``: the record was counted by whichever memory sealed it, and a counter's
    name does not identify it (every lambda is ``callable:<lambda>``, every Hugging Face
    tokenizer ``encoder:Tokenizer``), so a stored count could price a page below what it
    costs this consumer and let a context exceed its budget.
    """
    transcript = model.text_tokens(page.transcript)
    facts = model.text_tokens(facts_line(page.facts)) if page.facts else 0
    costs: list[int] = []
    shown: list[Shown] = []
    images: list[int] = []
    for tier in ORDER:
        img = model.image_tokens(tier)
        as_image = model.text_tokens(caption(page, tier, "image")) + img + facts
        as_text = model.text_tokens(caption(page, tier, "text")) + transcript
        if as_image < as_text:
            costs.append(as_image)
            shown.append("image")
            images.append(img)
        else:
            costs.append(as_text)
            shown.append("text")
            images.append(0)
    return PagePrice(tuple(costs), tuple(shown), tuple(images), transcript)  # type: ignore[arg-type]


class Cost(int):
    """A context's total cost (an ``int``), with its parts as attributes.

    ``turns`` (verbatim window), ``staging`` (turns waiting for their page to seal),
    ``images`` (page images), ``page_text`` (header, captions, facts lines, pages shown
    as text) and ``overhead`` (per-message overhead, and the :data:`LEAD_NOTE` message
    when one is shown) add up to the total.
    """

    turns: int
    staging: int
    images: int
    page_text: int
    overhead: int
    budget: int

    def __new__(cls, *, turns: int, staging: int, images: int, page_text: int, overhead: int,
                budget: int) -> Cost:
        self = super().__new__(cls, turns + staging + images + page_text + overhead)
        self.turns, self.staging, self.images = turns, staging, images
        self.page_text, self.overhead, self.budget = page_text, overhead, budget
        return self

    @property
    def total(self) -> int:
        return int(self)

    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, int]]:
        """The parts ``__new__`` takes: without it, ``copy``, ``deepcopy`` and ``pickle``
        called ``__new__`` with the bare total and raised ``TypeError``."""
        parts = self.as_dict()
        del parts["total"]
        return (), parts

    def as_dict(self) -> dict[str, int]:
        return {"total": int(self), "budget": self.budget, "turns": self.turns,
                "staging": self.staging, "images": self.images, "page_text": self.page_text,
                "overhead": self.overhead}

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}={v}" for k, v in self.as_dict().items())
        return f"Cost({parts})"


@dataclass(frozen=True, slots=True)
class ContextPage:
    """A sealed page as it appears in a context."""

    page_no: int
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float
    tier: Tier
    shown: Shown
    """``"image"``, or ``"text"`` when the savings gate kept the transcript."""
    cost: int
    image_tokens: int
    text_tokens: int
    """Tokens of the page's transcript (what the page holds, under the consumer's counter)."""
    caption: str
    facts: tuple[str, ...]
    record: PageRecord = field(repr=False, compare=False)

    @property
    def seqs(self) -> range:
        return range(self.first_seq, self.last_seq + 1)

    @property
    def compression(self) -> float:
        """Text tokens on the page per decoder slot at its tier (DeepSeek-OCR's measure)."""
        return self.text_tokens / self.tier.slots

    def as_dict(self) -> dict[str, Any]:
        return {"page_no": self.page_no, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "first_ts": self.first_ts, "last_ts": self.last_ts, "tier": self.tier.value,
                "shown": self.shown, "cost": self.cost, "image_tokens": self.image_tokens,
                "text_tokens": self.text_tokens, "compression": round(self.compression, 2),
                "caption": self.caption, "facts": list(self.facts)}


@dataclass(frozen=True, slots=True)
class ContextTurn:
    """A turn shown verbatim: from the verbatim window, or staging (left the window, not
    yet on a sealed page; ``partial`` when its first lines already are)."""

    seq: int
    role: str
    text: str
    """What the context shows (the rest of the turn when ``partial``)."""
    ts: float
    cost: int
    staging: bool
    partial: bool
    turn: Turn = field(repr=False, compare=False)
    clipped: int = 0
    """Characters of the middle of the turn left out (see :func:`clip_turns`); 0: whole."""

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "role": self.role, "ts": self.ts, "cost": self.cost,
                "staging": self.staging, "partial": self.partial, "chars": len(self.text),
                "clipped": self.clipped}


@dataclass(frozen=True, slots=True)
class TextSegment:
    """Text in an :meth:`Context.embeddings` sequence."""

    text: str


@dataclass(frozen=True, slots=True)
class VisionSegment:
    """A page's vision tokens in an :meth:`Context.embeddings` sequence."""

    page_no: int
    tier: Tier
    tokens: VisionTokens


Segment = TextSegment | VisionSegment


@dataclass(frozen=True)
class Context:
    """Pages at their tiers and verbatim turns that fit a budget; see the module docstring."""

    session: str
    pages: tuple[ContextPage, ...]
    """Pages in context, oldest first."""
    turns: tuple[ContextTurn, ...]
    """Staging and verbatim turns, oldest first."""
    cost: Cost
    model: str
    """Name of the cost model the cost is counted in."""
    archived_pages: int
    """Sealed pages of the session not in this context (still archived, still recallable)."""
    dropped_turns: int
    """Turns left out under budget pressure: only when every page was out and clipping the
    longest turns before the newest (:func:`clip_turns`) could not make them fit."""
    demotions: int
    """Tier steps below the decay policy, taken under budget pressure."""
    labels: tuple[tuple[str, str], ...] = field(repr=False, default=())
    memory_role: str = field(repr=False, default="user")
    _artefacts: Artefacts | None = field(repr=False, default=None, compare=False)
    _image_cost: ImageCost | None = field(repr=False, default=None, compare=False)
    """The image formula the cost was counted with: the ``detail`` of OpenAI image parts."""

    @property
    def budget(self) -> int:
        return self.cost.budget

    @property
    def lead_note(self) -> int | None:
        """Index into :attr:`turns` of the turn :data:`LEAD_NOTE` is shown before
        (``None``: no note) — the first non-``system`` turn when it is an assistant's and
        no page is in context, so that the messages open with a user message. Its cost is
        in ``cost.overhead``."""
        return None if self.pages else _lead_note_at([t.role for t in self.turns])

    def pages_per_tier(self) -> dict[str, int]:
        """How many pages are in context at each tier, plus ``out`` (archived only)."""
        counts = {t.value: 0 for t in ORDER}
        for p in self.pages:
            counts[p.tier.value] += 1
        counts["out"] = self.archived_pages
        return counts

    def compression(self) -> float | None:
        """Text tokens on image pages per decoder slot spent on them (``None``: no images)."""
        imgs = [p for p in self.pages if p.shown == "image"]
        if not imgs:
            return None
        return sum(p.text_tokens for p in imgs) / sum(p.tier.slots for p in imgs)

    # ------------------------------------------------------------------ messages
    def _jobs(self) -> list[Any]:
        from opticmem.artefacts import Job

        return [Job(p.record, p.tier) for p in self.pages if p.shown == "image"]

    def messages(
        self, format: Literal["langchain", "openai"] = "langchain", *, merge_runs: bool = False
    ) -> list[dict[str, Any]]:
        """Chat messages as plain dicts: the memory message with the pages (LangChain v1
        standard content blocks, or OpenAI ``image_url`` parts with ``format="openai"``),
        then one message per turn — with a user message holding :data:`LEAD_NOTE` before
        the first when no page is shown and that turn is an assistant's (:attr:`lead_note`),
        so that they open with a user message. Renders page images as needed (cached).

        Under a tile-priced cost model (``"openai"``) each ``image_url`` part names the
        ``detail`` its price assumes (:func:`~opticmem.costs.image_detail`): ``"low"``, a
        flat 85 tokens, for a page of at most 512 pixels a side, ``"high"`` for the others
        — left to OpenAI's default (``"auto"``) the bill need not match the plan. A
        LangChain standard ``image`` block has no detail field that LangChain's OpenAI
        converter passes on (it keeps only the data and the MIME type), so there OpenAI
        picks; send ``format="openai"`` parts (``ChatOpenAI`` passes them on as they are)
        to have the detail exactly as planned.

        A turn's ``name`` and ``tool_call_id`` meta are copied onto its message — a
        speaker's name only when OpenAI takes it (1–64 ASCII letters, digits, ``_`` or
        ``-``): one name like ``"Dr. Müller"`` would make it refuse the whole request. A
        ``tool`` turn keeps its tool's name as recorded: the integrations show it in the
        heading of the user message a recorded tool result is sent as.

        Each turn keeps its role, so a ``tool`` turn is a tool message, which a chat API
        refuses after no structured tool call: :func:`opticmem.integrations.with_memory`
        and the LangChain middleware send such turns as headed user messages instead,
        with the budget planned for the headings.

        ``merge_runs=True`` merges each run of consecutive messages of one role into one
        (:func:`merge_message_runs`), for APIs that need the roles to alternate (Bedrock's
        Converse): the pages' message and the first turn after it, say, become one user
        message with the pages' blocks, then the turn's text. It costs no more than the
        unmerged messages (one ``message_overhead`` less per message merged away), so the
        context stays within its budget; a message with a ``name`` or ``tool_call_id``,
        and a ``tool`` message, are never merged."""
        if format not in ("langchain", "openai"):
            raise ConfigurationError(f"format must be 'langchain' or 'openai', not {format!r}")
        out: list[dict[str, Any]] = []
        if self.pages:
            pngs = iter(self._pngs())
            blocks: list[dict[str, Any]] = [{"type": "text", "text": MEMORY_HEADER}]
            for p in self.pages:
                blocks.append({"type": "text", "text": p.caption})
                if p.shown == "text":
                    blocks.append({"type": "text", "text": p.record.transcript})
                    continue
                png = next(pngs)
                b64 = base64.b64encode(png).decode("ascii")
                if format == "openai":
                    part: dict[str, Any] = {"url": f"data:image/png;base64,{b64}"}
                    detail = (None if self._image_cost is None
                              else image_detail(self._image_cost, *png_size(png)))
                    if detail is not None:
                        part["detail"] = detail
                    blocks.append({"type": "image_url", "image_url": part})
                else:
                    blocks.append({"type": "image", "base64": b64, "mime_type": "image/png"})
                if p.facts:
                    blocks.append({"type": "text", "text": facts_line(p.facts)})
            out.append({"role": self.memory_role, "content": blocks})
        note = self.lead_note
        for i, t in enumerate(self.turns):
            if i == note:
                out.append({"role": "user", "content": LEAD_NOTE})
            msg: dict[str, Any] = {"role": t.role, "content": t.text}
            name, call_id = t.turn.meta.get("name"), t.turn.meta.get("tool_call_id")
            if isinstance(name, str) and (t.role == "tool" or _MESSAGE_NAME.fullmatch(name)):
                msg["name"] = name
            if isinstance(call_id, str):
                msg["tool_call_id"] = call_id
            out.append(msg)
        return merge_message_runs(out) if merge_runs else out

    def _pngs(self) -> list[bytes]:
        if self._artefacts is None:
            raise RuntimeError("this context is detached from its memory")
        return self._artefacts.pngs(self.session, self._jobs())

    def pngs(self) -> dict[int, bytes]:
        """PNG bytes of every page shown as an image, by page number."""
        shown = [p.page_no for p in self.pages if p.shown == "image"]
        return dict(zip(shown, self._pngs(), strict=True))

    # ------------------------------------------------------------------ text
    def _label(self, role: str) -> str:
        for r, lab in self.labels:
            if r == role:
                return lab
        return role.title()

    def text(self) -> str:
        """What the memory *remembers*: each page's caption, the text the codec reads
        back from it at its tier (decoding as needed, cached), its facts line; then the
        verbatim turns (:data:`LEAD_NOTE` where :meth:`messages` puts it). Without a codec
        an image page shows a placeholder — page transcripts are the ground truth, not a
        memory."""
        parts: list[str] = []
        recs = iter(self._recollections())
        for p in self.pages:
            parts.append(p.caption)
            if p.shown == "text":
                parts.append(p.record.transcript)
                continue
            rec = next(recs)
            parts.append(rec if rec is not None else "[page image; no codec to read it back]")
            if p.facts:
                parts.append(facts_line(p.facts))
        parts.extend(self._turn_texts())
        return "\n\n".join(parts)

    def _turn_texts(self) -> list[str]:
        """The turns as :meth:`text` and :meth:`embeddings` show them, with
        :data:`LEAD_NOTE` where :meth:`messages` puts it."""
        out = [f"{self._label(t.role)}: {t.text}" for t in self.turns]
        if (note := self.lead_note) is not None:
            out.insert(note, LEAD_NOTE)
        return out

    def _recollections(self) -> list[str | None]:
        jobs = self._jobs()
        if not jobs:
            return []
        if self._artefacts is None:
            raise RuntimeError("this context is detached from its memory")
        if self._artefacts.codec.get() is None:
            return [None] * len(jobs)
        return [r.text for r in self._artefacts.recollections(self.session, jobs)]

    # ------------------------------------------------------------------ embeddings
    def embeddings(self) -> list[Segment]:
        """The context for a VLM that reads our codec's vision tokens: text segments and,
        per image page, its :class:`~opticmem.encoder.codec.VisionTokens` (encoded on
        demand, cached), in the order of :meth:`messages`. Needs a codec."""
        if self._artefacts is None:
            raise RuntimeError("this context is detached from its memory")
        tokens = iter(self._artefacts.vision_tokens(self.session, self._jobs()))
        out: list[Segment] = []
        if self.pages:
            out.append(TextSegment(MEMORY_HEADER))
        for p in self.pages:
            out.append(TextSegment(p.caption))
            if p.shown == "text":
                out.append(TextSegment(p.record.transcript))
                continue
            out.append(VisionSegment(p.page_no, p.tier, next(tokens)))
            if p.facts:
                out.append(TextSegment(facts_line(p.facts)))
        out.extend(TextSegment(text) for text in self._turn_texts())
        return out

    # ------------------------------------------------------------------ async twins
    async def amessages(
        self, format: Literal["langchain", "openai"] = "langchain", *, merge_runs: bool = False
    ) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.messages, format, merge_runs=merge_runs)

    async def atext(self) -> str:
        return await asyncio.to_thread(self.text)

    async def apngs(self) -> dict[int, bytes]:
        return await asyncio.to_thread(self.pngs)

    async def aembeddings(self) -> list[Segment]:
        return await asyncio.to_thread(self.embeddings)

    # ------------------------------------------------------------------ reporting
    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no images): cost, tiers, pages, turns, and whether the
        messages show :data:`LEAD_NOTE` (``lead_note``)."""
        comp = self.compression()
        return {
            "session": self.session, "budget": self.budget, "cost": self.cost.as_dict(),
            "model": self.model, "pages_per_tier": self.pages_per_tier(),
            "compression": None if comp is None else round(comp, 3),
            "demotions": self.demotions, "dropped_turns": self.dropped_turns,
            "lead_note": self.lead_note is not None,
            "pages": [p.as_dict() for p in self.pages],
            "turns": [t.as_dict() for t in self.turns],
        }


def page_view(page: PageRecord, tier: Tier, price: PagePrice) -> ContextPage:
    """A :class:`ContextPage` for ``page`` at ``tier`` with its gated price."""
    i = tier.rank
    shown = price.shown[i]
    return ContextPage(
        page_no=page.page_no, first_seq=page.first_seq, last_seq=page.last_seq,
        first_ts=page.first_ts, last_ts=page.last_ts, tier=tier, shown=shown,
        cost=price.costs[i], image_tokens=price.image_tokens[i],
        text_tokens=price.transcript_tokens, caption=caption(page, tier, shown),
        facts=page.facts, record=page,
    )


def turn_views(
    items: Sequence[tuple[Turn, str, bool, bool]], model: CostModel
) -> list[ContextTurn]:
    """Priced :class:`ContextTurn`\\ s from ``(turn, shown_text, staging, partial)``."""
    return [
        ContextTurn(seq=t.seq, role=t.role, text=text, ts=t.ts,
                    cost=model.message_overhead + model.text_tokens(text), staging=staging,
                    partial=partial, turn=t)
        for t, text, staging, partial in items
    ]


CLIP_NOTE = ("\n[… {chars:,} characters of this turn left out here: it is too long for the "
             "context's budget; the archive keeps it whole]\n")
"""Put where the middle of a clipped turn was (:func:`clip_turns`)."""


_CLIP_TRIES = 32
"""Tries :func:`_clip` makes at most: enough to halve any text's length down to one
character."""


def _clip(view: ContextTurn, cap: int, model: CostModel) -> ContextTurn | None:
    """``view`` with the middle of its text left out so that it costs at most ``cap``
    (its head and tail kept, :data:`CLIP_NOTE` between them); ``None`` if even the note
    alone costs more.

    How many characters to keep is searched between the most known to fit and the fewest
    known not to: each try is sized from the tokens per character the last one cost
    (its head and tail, not the whole text: a middle of CJK or of one long run of spaces
    costs very differently), and halves the bracket when that guess falls outside it. So
    a turn is counted a few times however long it is and however uneven, and its clipped
    text uses nearly all of ``cap``."""
    text, overhead = view.text, model.message_overhead
    room = cap - overhead  # what the shown text may cost
    note = model.text_tokens(CLIP_NOTE.format(chars=len(text)))
    if note > room:
        return None
    full = max(1, view.cost - overhead)
    lo, hi = 0, len(text)  # keeping ``lo`` characters fits (0: none known), ``hi`` not
    best: ContextTurn | None = None
    keep = int(len(text) * (room - note) / full)
    for _ in range(_CLIP_TRIES):
        if not lo < keep < hi:
            keep = (lo + hi) // 2
            if keep <= lo:
                break
        head, tail = keep - keep // 2, keep // 2
        shown = text[:head] + CLIP_NOTE.format(chars=len(text) - keep) + text[len(text) - tail:]
        cost = overhead + model.text_tokens(shown)
        if cost <= cap:
            lo, best = keep, replace(view, text=shown, cost=cost, clipped=len(text) - keep)
            if cap - cost <= cap // 50:
                break  # within 2% of the cap: close enough
        else:
            hi = keep
        spent = cost - overhead - note  # what the kept characters cost
        keep = int(keep * (room - note) / spent) if spent > 0 else -1
    return best


def clip_turns(views: Sequence[ContextTurn], budget: int, model: CostModel
               ) -> list[ContextTurn] | None:
    """``views`` with the turns before the newest that are too long clipped: each costing
    more than a quarter of what the newest turn leaves of ``budget``, they share that
    quarter. Used only when the turns would not fit even with every page out, so that one
    pasted log or document does not push every page and every turn before it out of the
    context (and, by the decay mark, those pages out for good); turns of ordinary length
    are never clipped — when they alone overflow, the oldest are dropped as before. The
    newest turn is never clipped. ``None`` when no turn is too long, or none can be
    clipped to its share (the note alone would cost more)."""
    if len(views) < 2:
        return None
    *older, newest = views
    quarter = (budget - newest.cost) // 4
    long = [i for i, v in enumerate(older) if v.cost > quarter]
    if not long:
        return None
    out, changed = list(older), False
    for i in long:
        if (clipped := _clip(older[i], quarter // len(long), model)) is not None:
            out[i], changed = clipped, True
    return [*out, newest] if changed else None
