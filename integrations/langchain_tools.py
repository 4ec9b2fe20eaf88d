"""The recall tool: an agent's way back to what its blurry pages said.

``recall(query, include_original=False)`` searches the session's pages
(:meth:`~opticmem.OpticalMemory.recall`: what the codec read back from each page at its
tier, and the exact-facts sidecars) and answers with passages and their provenance —
session, page, turn numbers, time span, the tier the page was read at and the codec's
confidence. With ``include_original=True`` each passage also carries the archived
original turns of its page, so the agent can check a blurry memory against the record.

The model gets the passages as text; the tool message's ``artifact`` holds them as
dicts (:meth:`~opticmem.recall.Passage.as_dict`) for code that wants the structure.

The session is resolved like the middleware's: the run's thread id by default, or the
``session`` given (a fixed id or ``config -> str``), so inside an agent run the tool
searches the session the run records into. Sync (``invoke``) and async (``ainvoke``).

>>> from opticmem import OpticalMemory
>>> mem = OpticalMemory(codec=None, verbatim_turns=2)
>>> _ = mem.add("s", "user", "Ticket ABC-123 ships on 2026-03-04. " * 30)
>>> for i in range(60):
...     _ = mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
>>> tool = make_recall_tool(mem, session="s")
>>> print(tool.invoke({"query": "when does ABC-123 ship?"}).splitlines()[1])
[1] page 0 · turns 0–21 · ... UTC · exact facts · confidence 1.00
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from opticmem.arguments import whole_number
from opticmem.errors import ConfigurationError
from opticmem.integrations.langchain_session import (
    SessionSpec,
    check_session_spec,
    resolve_session,
)
from opticmem.memory import OpticalMemory
from opticmem.recall import Passage
from opticmem.render.layout import utc_minute

try:
    from langchain_core.runnables import RunnableConfig
    from langchain_core.tools import BaseTool
    from pydantic import BaseModel, ConfigDict, Field
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

DEFAULT_DESCRIPTION = (
    "Search the earlier conversation, which is kept as page images that blur with age, for "
    "what was said about something. Returns matching passages with the turns, times, tier "
    "and confidence they come from. Set include_original to also get the exact original "
    "turns, to check details (numbers, names, code) a blurry page may not show reliably."
)


class RecallInput(BaseModel):
    """Arguments of the recall tool, as the model sees them."""

    query: str = Field(description="What to look for: words, names, ids or numbers.")
    include_original: bool = Field(
        default=False,
        description="Also return the exact archived turns each passage comes from.",
    )


def _when(ts: float) -> str:
    return f"{utc_minute(ts)} UTC"  # a four-digit year: _span cuts at fixed offsets


def _span(t0: float, t1: float) -> str:
    a, b = _when(t0), _when(t1)
    if a == b:
        return a
    if a[:10] == b[:10]:
        return f"{a[:-4]}–{b[11:]}"
    return f"{a} – {b}"


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit:,} more characters]"


def _passage_block(i: int, p: Passage, shown_with: int | None, max_original_chars: int) -> str:
    turns = f"turn {p.first_seq}" if p.first_seq == p.last_seq else (
        f"turns {p.first_seq}–{p.last_seq}")
    source = "exact facts" if p.source == "facts" else (
        f"read at {p.tier.value.title() if p.tier else '?'}")
    lines = [f"[{i}] page {p.page_no} · {turns} · {_span(p.first_ts, p.last_ts)} · {source} · "
             f"confidence {p.confidence:.2f}", p.text]
    if shown_with is not None:
        lines.append(f"  original turns: as for [{shown_with}]")
    elif p.original:
        lines.append("  original turns:")
        lines.extend(f"  #{t.seq} {t.role} ({_when(t.ts)}): {_clip(t.text, max_original_chars)}"
                     for t in p.original)
    return "\n".join(lines)


def _longest_prefix(text: str, fits: Callable[[str], bool]) -> int:
    """Length of the longest prefix of ``text`` that ``fits`` (binary search)."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(text[:mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo


ECHO_CHARS = 200
"""The most characters of a query the tool's answer repeats back to the model."""


def _echo(query: str) -> str:
    """``query`` quoted for the answer, its first :data:`ECHO_CHARS` characters at most: the
    model sent it, so repeating it whole would only spend the answer's tokens."""
    if len(query) <= ECHO_CHARS:
        return repr(query)
    return f"{query[:ECHO_CHARS]!r}… ({len(query):,} characters)"


def format_passages(
    query: str,
    passages: Sequence[Passage],
    *,
    max_original_chars: int = 4000,
    max_tokens: int | None = None,
    count: Callable[[str], int] | None = None,
) -> str:
    """The text the model gets for ``passages`` (best first), with their provenance.

    A page's original turns are written once (later passages of the same page point
    back). With ``max_tokens`` (counted with ``count``) the text is cut to fit: whole
    passages while they fit, then the next one clipped, then a note of what was left out
    (the header and that note are kept even when they alone exceed ``max_tokens``).
    """
    shown = _echo(query)
    if not passages:
        return f"No passage in memory matches {shown}."
    session = passages[0].session
    header = f"{len(passages)} passage(s) from memory session {session!r} for {shown}:"
    first_of_page: dict[int, int] = {}
    blocks = []
    for i, p in enumerate(passages, 1):
        shown_with = first_of_page.get(p.page_no) if p.original else None
        if p.original and shown_with is None:
            first_of_page[p.page_no] = i
        blocks.append(_passage_block(i, p, shown_with, max_original_chars))
    if max_tokens is None or count is None:
        return "\n".join([header, *blocks])
    out = [header]
    cut = next((j for j, block in enumerate(blocks)
                if count("\n".join([*out, *blocks[: j + 1]])) > max_tokens), None)
    if cut is None:
        return "\n".join([header, *blocks])
    out.extend(blocks[:cut])

    def note(n: int) -> str:
        return (f"[{n} more passage(s) left out to stay within {max_tokens} tokens; ask a "
                "narrower question, or without include_original]")

    def fits(prefix: str) -> bool:
        return count("\n".join([*out, prefix + "…", note(len(blocks) - cut - 1)])) <= max_tokens

    keep = _longest_prefix(blocks[cut], fits)
    if keep >= 80:  # enough of the passage to be worth showing
        out.extend([blocks[cut][:keep] + "…", note(len(blocks) - cut - 1)])
        return "\n".join(out)
    left = len(blocks) - cut
    # the note takes room too: leave out whole passages until it fits beside them
    while len(out) > 1 and count("\n".join([*out, note(left)])) > max_tokens:
        out.pop()
        left += 1
    out.append(note(left))
    return "\n".join(out)


class RecallTool(BaseTool):
    """A LangChain tool over :meth:`~opticmem.OpticalMemory.recall` (see the module
    docstring). Make one with :func:`make_recall_tool`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "recall"
    description: str = DEFAULT_DESCRIPTION
    args_schema: type[BaseModel] = RecallInput
    response_format: str = "content_and_artifact"  # type: ignore[assignment]

    memory: OpticalMemory
    session: SessionSpec = None
    k: int = 5
    """Passages returned per call."""
    max_original_chars: int = 4000
    """Original turns longer than this are cut in the text (the artifact keeps them whole)."""
    max_tokens: int | None = None
    """Cap on the text's tokens under the memory's cost model (default: a quarter of the
    memory's budget), so a tool result does not crowd out the conversation."""

    def _session(self, config: RunnableConfig | None) -> str:
        return resolve_session(self.session, config)

    def _answer(self, query: str, passages: list[Passage]) -> tuple[str, list[dict[str, Any]]]:
        cap = self.max_tokens if self.max_tokens is not None else max(
            64, self.memory.budget_tokens // 4)
        text = format_passages(query, passages, max_original_chars=self.max_original_chars,
                               max_tokens=cap, count=self.memory.cost_model.text_tokens)
        return text, [p.as_dict() for p in passages]

    def _run(
        self,
        query: str,
        include_original: bool = False,
        *,
        config: RunnableConfig,
        run_manager: Any = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        passages = self.memory.recall(self._session(config), query, k=self.k,
                                      include_original=include_original)
        return self._answer(query, passages)

    async def _arun(
        self,
        query: str,
        include_original: bool = False,
        *,
        config: RunnableConfig,
        run_manager: Any = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        session = self._session(config)
        passages = await self.memory.arecall(session, query, k=self.k,
                                             include_original=include_original)
        return await asyncio.to_thread(self._answer, query, passages)


def make_recall_tool(
    memory: OpticalMemory,
    *,
    session: SessionSpec = None,
    k: int = 5,
    name: str = "recall",
    description: str = DEFAULT_DESCRIPTION,
    max_original_chars: int = 4000,
    max_tokens: int | None = None,
) -> RecallTool:
    """A recall tool for ``memory``; ``session`` as in the middleware (default: the
    run's thread id). ``max_tokens`` caps the text the model gets (default: a quarter of
    the memory's budget); the tool message's artifact always holds every passage whole.
    A count that is not a whole number in its range raises
    :class:`~opticmem.errors.ConfigurationError` (a ``ValueError``)."""
    session = check_session_spec(session)  # as the middleware does: "" failed at each call
    # "3" (from an environment variable) failed with a bare TypeError from "<", and True
    # passed as k=1
    k = whole_number(k, "k")
    if k < 1:
        raise ConfigurationError(f"k must be ≥ 1, got {k}")
    if max_tokens is not None:
        max_tokens = whole_number(max_tokens, "max_tokens")
        if max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be ≥ 1, got {max_tokens}")
    max_original_chars = whole_number(max_original_chars, "max_original_chars")
    if max_original_chars < 0:  # a negative cut clipped from the end, with a nonsense count
        raise ConfigurationError(f"max_original_chars must be ≥ 0, got {max_original_chars}")
    return RecallTool(memory=memory, session=session, k=k, name=name, description=description,
                      max_original_chars=max_original_chars, max_tokens=max_tokens)


__all__ = ["DEFAULT_DESCRIPTION", "RecallInput", "RecallTool", "format_passages",
           "make_recall_tool"]
