"""``OpticalMemory``: the public entry point — add turns, get a context that fits, recall.

>>> mem = OpticalMemory(budget_tokens=8192, codec=None)
>>> _ = mem.add("alice", "user", "Let's plan Project Titan for March.")
>>> _ = mem.add("alice", "assistant", "Sure — milestones first?")
>>> ctx = mem.context("alice")
>>> ctx.cost <= 8192, [t.role for t in ctx.turns]
(True, ['user', 'assistant'])

What happens where:

* :meth:`OpticalMemory.add` validates (:mod:`opticmem.sessions`), appends the turn to the
  store (durable before it returns), and when turns leaving the verbatim window fill a
  page, seals it (:mod:`opticmem.packing`). Nothing is drawn or encoded here.
* :meth:`OpticalMemory.context` reads a bounded amount — the turn and page counts, the
  newest ``policy.max_pages`` page records and the turns after the last sealed page —
  so its cost does not grow with the history. Page records are cached in-process; the
  newest cached one is read back each call, so a session deleted or expired elsewhere and
  begun again is never served from the cache. It applies the decay policy
  (:mod:`opticmem.policy`), prices pages and turns with the consumer's cost model and
  the savings gate (:mod:`opticmem.context`), and fits them to the budget
  (:mod:`opticmem.budget`).
* :meth:`OpticalMemory.recall` searches what the memory remembers of its pages
  (:mod:`opticmem.recall`).

Recollection (reading pages back with the codec) happens ``recollect="lazy"`` (default:
when ``Context.text()``, ``recall`` or :meth:`OpticalMemory.recollect` need it, batched),
``"background"`` (a worker thread reads each page as it is sealed, if the decay policy
shows it at Large — a bulk import seals many pages already past it — and as a context
shows it at a new tier; with more than 4096 waiting,
:attr:`~opticmem.recollectors.ThreadRecollector.MAX_PENDING`, it drops the oldest, logged
at INFO) or ``"queue"`` (on a Redis store: those pages go onto a Redis Stream that
``opticmem worker`` processes on GPU machines read, batched across sessions and bots; see
:mod:`opticmem.recollect_queue`). :meth:`OpticalMemory.flush` waits for either. A page
not read yet when its text is needed is read in this process, as in lazy mode.

Every store-facing method has an ``a``-prefixed async twin that runs it in a worker
thread (as LangChain's defaults do), so an event loop never blocks on the store or model.
Cancelling the awaiting task does not stop that thread: the call runs to its end, so a
cancelled ``aadd`` or ``aadd_many`` may still have stored its turns (the built-in stores
write a batch in one step: all of its turns or none). The writing twins (``aadd``,
``aadd_many``, ``aforget``, ``adelete_session``, ``aclose``) wait for that end before the
cancellation reaches the caller (a timeout of ``asyncio.wait_for`` too), so the caller's
next call never runs beside a write it gave up on: turns are stored in the order one
task added them, and a delete after a timed-out ``aadd`` leaves no turn behind. Cancelled
before its thread has begun, a write never runs.

One memory may be shared by any number of threads and tasks, on one session or many;
codec calls are serialised (:mod:`opticmem.codecs`). :meth:`OpticalMemory.close` does not
wait for calls still running in other threads: close the memory after them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import numbers
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, ParamSpec

from opticmem.arguments import check_count, whole_number
from opticmem.artefacts import Artefacts, Job
from opticmem.budget import Mark, PageOption, plan
from opticmem.codecs import CodecSlot, CodecSpec
from opticmem.context import (
    MEMORY_HEADER,
    Context,
    ContextPage,
    ContextTurn,
    Cost,
    PagePrice,
    clip_turns,
    continued_prefix,
    lead_note_cost,
    lead_note_costs,
    page_view,
    price_page,
    turn_views,
)
from opticmem.costs import CostModel, ImageCost
from opticmem.costs import cost_model as make_cost_model
from opticmem.encoder.codec import Codec, Recollection
from opticmem.errors import (
    BudgetError,
    ConfigurationError,
    CorruptRecordError,
    InvalidTurnError,
    OpticMemError,
    PageConflictError,
    StoreError,
    StoreURLError,
)
from opticmem.facts import fact_keywords, facts_line
from opticmem.forks import renew_in_forked_child
from opticmem.lru import LRU
from opticmem.packing import Frontier, Packer
from opticmem.policy import OUT, DecayPolicy, PolicyName, decay_policy, tier_of
from opticmem.recall import Doc, Passage, RecallIndex, split_passages
from opticmem.recollectors import (
    PageRef,
    QueueRecollector,
    Recollector,
    ThreadRecollector,
    page_ref,
)
from opticmem.records import PageRecord, Turn
from opticmem.render import ORDER, RenderSettings, Tier
from opticmem.sessions import (
    DEFAULT_ROLES,
    MAX_TURN_CHARS,
    validate_session,
    validate_ts,
    validate_turn,
)
from opticmem.store import Store, write_in_thread
from opticmem.stores import open_store
from opticmem.tokens import TextCounter

if TYPE_CHECKING:
    from opticmem.recollect_queue import RedisRecollectQueue

log = logging.getLogger(__name__)

TurnInput = Mapping[str, Any] | tuple[str, str] | tuple[str, str, float]
"""A turn for :meth:`OpticalMemory.add_many`: ``{"role", "text", "ts"?, "meta"?}`` or a
``(role, text)`` / ``(role, text, ts)`` tuple."""

Recollect = Literal["lazy", "background", "queue"]

MEMORY_ROLES: tuple[str, ...] = ("user",)
"""Roles the message carrying the pages may have: those whose messages take images in every
chat API the messages are made for (OpenAI takes images only in user messages; Anthropic,
through LangChain, likewise)."""

P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class _Assembly:
    """Everything a context or a recall needs to know about a session right now."""

    session: str
    turn_count: int
    page_count: int
    pages: tuple[PageRecord, ...]  # candidate pages (newest policy window), oldest first
    levels: tuple[int, ...]  # final level per candidate page
    prices: tuple[PagePrice | None, ...]
    turns: tuple[ContextTurn, ...]  # kept turns
    dropped_turns: int
    cost: int
    demotions: int
    mark: Mark
    mark_changed: bool
    clock: float | None  # the age policy's clock to remember (None: nothing to remember)
    clock_changed: bool


class OpticalMemory:
    """Long-context memory with optical decay for one or many sessions.

    Args:
        store: a :class:`~opticmem.store.Store`, a store URL (``"sqlite:///chat.db"``,
            see :func:`~opticmem.stores.open_store`), or ``None`` for a new in-process store.
        budget_tokens: default context budget in the consumer's tokens.
        codec: a :class:`~opticmem.encoder.codec.Codec`, ``"bundled"`` (default; loaded on
            first need) or ``None`` (no model; see :mod:`opticmem.codecs`).
        cost_model: the consumer's prices: a preset name (``"deepseek-ocr"``,
            ``"deepseek-ocr-nominal"``, ``"openai"``, ``"anthropic"``), an image formula or
            a :class:`~opticmem.costs.CostModel`.
        text_counter: replaces the cost model's text counter (a ``TextCounter``, a
            tokenizer, or a callable ``str -> int``).
        policy: ``"rank"`` (default), ``"age"``, ``"pressure"`` or a
            :class:`~opticmem.policy.DecayPolicy`.
        verbatim_turns: the newest turns always kept verbatim (≥ 1; default 8). Memories
            that share a session should share it too: pages seal what falls out of the
            window of whichever memory packs, so a narrower one's pages take turns a wider
            one would show verbatim (logged once, as a warning, by the wider one).
        render_settings: page layout (default: the codec's own layout when a codec
            instance that declares one is given, else 104×52 cells on a 1280-pixel page).
            A session is read and written with the settings it was packed with: another
            memory's raises :class:`~opticmem.errors.CorruptRecordError` from ``context``.
        page_max_tokens: optional limit on a page's text tokens (on top of the grid): a page
            closes before the line that would pass it, but always holds at least one line.
        recollect: ``"lazy"``, ``"background"``, ``"queue"`` or a
            :class:`~opticmem.recollect_queue.RedisRecollectQueue` (see the module
            docstring). ``"queue"`` needs a Redis store and a codec (the workers' one).
        decode_max_tokens: cap on tokens the codec may produce per page (``None``: the
            codec's own default). Readings are cached per cap: memories with another cap
            read the pages again, and in queue mode the workers' readings are found only
            when their ``--max-tokens`` is this cap.
        keep_archive: ``False`` forgets each turn's raw text once it is wholly on a sealed
            page (true forgetting; the page and its transcript stay).
        max_turn_chars: longest turn accepted (default 1,000,000 characters).
        roles: accepted roles (default user, assistant, system, tool).
        memory_role: role of the message that carries the pages: ``"user"`` (default and
            only value), the one role every multimodal chat API accepts images in —
            OpenAI and Anthropic refuse them in system and assistant messages. Any other
            raises :class:`~opticmem.errors.ConfigurationError`.
        clock: returns Unix seconds; used for timestamps and the age policy.
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        budget_tokens: int = 8192,
        codec: CodecSpec = "bundled",
        cost_model: CostModel | ImageCost | str = "deepseek-ocr",
        text_counter: TextCounter | Any | None = None,
        policy: DecayPolicy | PolicyName = "rank",
        verbatim_turns: int = 8,
        render_settings: RenderSettings | None = None,
        page_max_tokens: int | None = None,
        recollect: Recollect | RedisRecollectQueue = "lazy",
        decode_max_tokens: int | None = None,
        keep_archive: bool = True,
        max_turn_chars: int = MAX_TURN_CHARS,
        roles: Collection[str] = DEFAULT_ROLES,
        memory_role: str = "user",
        clock: Callable[[], float] = time.time,
    ) -> None:
        budget_tokens = _check_budget(budget_tokens)
        check_count("verbatim_turns", verbatim_turns,
                     "the newest turn is always verbatim")
        if isinstance(recollect, str) and recollect not in ("lazy", "background", "queue"):
            raise ConfigurationError(
                f"recollect must be 'lazy', 'background', 'queue' or a RedisRecollectQueue, "
                f"not {recollect!r}")
        if not isinstance(recollect, str) and not hasattr(recollect, "unfinished"):
            raise ConfigurationError(
                f"recollect must be 'lazy', 'background', 'queue' or a RedisRecollectQueue, "
                f"not {type(recollect).__name__}")
        if codec is None and not (isinstance(recollect, str) and recollect != "queue"):
            raise ConfigurationError(
                "recollect='queue' needs a codec: the memory finds the workers' readings "
                "under the name of the codec it reads with (use the workers' codec)")
        check_count("max_turn_chars", max_turn_chars)
        if page_max_tokens is not None:
            check_count("page_max_tokens", page_max_tokens)
        if decode_max_tokens is not None:
            check_count("decode_max_tokens", decode_max_tokens)
        if render_settings is not None and not isinstance(render_settings, RenderSettings):
            # taken as given, it failed here with "'dict' object has no attribute 'key'"
            raise ConfigurationError(
                f"render_settings must be a RenderSettings or None, not "
                f"{type(render_settings).__name__}; e.g. RenderSettings(max_rows=26)")
        if isinstance(roles, str):
            raise ConfigurationError(
                f"roles must be a collection of role names, not the string {roles!r}")
        # Taken as given, an empty collection (or one of non-strings) made every add fail
        # with "unknown role", and roles=5 or clock=5 failed with a bare TypeError.
        role_names = tuple(roles) if isinstance(roles, Iterable) else ()
        if not role_names or any(not isinstance(r, str) or not r.strip() for r in role_names):
            raise ConfigurationError(
                f"roles must be a non-empty collection of role names (strings), got {roles!r}")
        if not callable(clock):
            raise ConfigurationError(
                f"clock must be a callable returning Unix seconds (like time.time), not "
                f"{type(clock).__name__}")
        if memory_role not in MEMORY_ROLES:
            # None, "system" or "assistant" made every context with a page one the chat
            # API refuses (OpenAI: HTTP 400), and only when a page was first sealed
            raise ConfigurationError(
                f"memory_role must be one of {', '.join(map(repr, MEMORY_ROLES))} — the "
                f"role every supported chat API takes images in (OpenAI and Anthropic "
                f"refuse them in system and assistant messages), not {memory_role!r}")
        if store is not None and not isinstance(store, (Store, str)):
            # Taken as a store, a path would fail at the first add with an AttributeError.
            raise StoreURLError(
                f"store must be a Store, a store URL or None, not {type(store).__name__} "
                f"{store!r}; for a SQLite file pass 'sqlite:///path.db' or SQLiteStore(path)")
        # Prices, policy and codec before the store: a bad one (an unknown name, a
        # tokenizer's name, codec=5) raised only once a store URL had been opened, leaving
        # a new, empty SQLite file behind or a Redis connection pool open.
        self.cost_model = make_cost_model(cost_model, text=text_counter)
        self.policy = decay_policy(policy)
        # The background thread holds the codec slot and the artefacts: their callbacks
        # hold the memory weakly, or a memory dropped unclosed would never be freed.
        self._codec = CodecSlot(codec, on_load=_weakly(self._check_codec_layout))
        self.store: Store = open_store(store) if isinstance(store, str) else (
            store if store is not None else _default_store()
        )
        self._owns_store = not isinstance(store, Store)
        self.budget_tokens = budget_tokens
        self.verbatim_turns = verbatim_turns
        self._window_warned = False
        """Whether :meth:`_check_window` has warned (it does once per memory)."""
        if render_settings is None and isinstance(codec, Codec):
            render_settings = codec.render_settings
        self.render_settings = render_settings or RenderSettings()
        self.page_max_tokens = page_max_tokens
        self.recollect_mode: Recollect = recollect if isinstance(recollect, str) else "queue"
        self.keep_archive = keep_archive
        self.max_turn_chars = max_turn_chars
        self.roles = frozenset(role_names)
        self.memory_role = memory_role
        self.clock = clock
        if isinstance(codec, Codec):
            self._check_codec_layout(codec)
        self._packer = Packer(self.render_settings, self.cost_model.text,
                              max_tokens=page_max_tokens)
        self._artefacts = Artefacts(self.store, self.render_settings, self._codec,
                                    decode_max_tokens=decode_max_tokens,
                                    on_recollected=_weakly(self._recollected))
        # grouped by session: dropping one session's entries looks at no other's
        self._pages: LRU[tuple[str, int], PageRecord] = LRU(4096, group=_first)
        self._refs: LRU[str, PageRef] = LRU(16_384)
        """Per session, the newest page in ``_pages`` (``()``: none) that :meth:`_check_cache`
        compares with the store before the cached pages are trusted."""
        self._prices: LRU[tuple[str, PageRecord], PagePrice] = LRU(4096, group=_page_session)
        self._indexes: LRU[str, RecallIndex] = LRU(64)
        self._dirty: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        renew_in_forked_child(self)
        self._worker: Recollector | None = None
        if recollect == "background":
            thread = ThreadRecollector(self._artefacts)
            thread.start()
            self._worker = thread
            # Dropped without close(): its thread ends after the batch in hand.
            weakref.finalize(self, thread.stop, wait=False)
        elif self.recollect_mode == "queue":
            self._worker = QueueRecollector(self._queue(recollect), self._codec,
                                            self.render_settings)

    def _queue(self, given: str | RedisRecollectQueue) -> RedisRecollectQueue:
        """The recollection queue: ``given``, or (for ``"queue"``) the store's tenant's."""
        from opticmem.recollect_queue import RedisRecollectQueue
        from opticmem.redis_store import RedisStore

        store = self.store
        if not isinstance(store, RedisStore):
            if self._owns_store:
                store.close()
            kind = type(store).__name__
            article = "an" if kind[:1] in "AEIOU" else "a"
            asked = "recollect='queue'" if isinstance(given, str) else "a recollection queue"
            raise ConfigurationError(
                f"{asked} needs a Redis store, where the workers find the pages and leave "
                f"their readings; this memory's store is {article} {kind}")
        if isinstance(given, str):
            return RedisRecollectQueue.for_store(store)
        if given.tenant != store.tenant:
            if self._owns_store:
                store.close()
            raise ConfigurationError(
                f"the recollection queue serves tenant {given.tenant!r} but the store holds "
                f"tenant {store.tenant!r}: its workers would not find these pages")
        return given

    def after_fork_in_child(self) -> None:
        """A fresh lock in a forked child, where one the parent's background thread (or any
        other) held at the fork would stay held for good. The recall bookkeeping it was
        changing may be half changed: then every index is dropped, to be built again."""
        if self._lock.locked():
            self._indexes = LRU(64)
            self._dirty = {}
        self._lock = threading.Lock()

    def _check_codec_layout(self, codec: Codec) -> None:
        wants = codec.render_settings
        if wants is not None and wants != self.render_settings:
            log.warning(
                "codec %s was trained on page layout %s but this memory renders %s; its "
                "readings of these pages may be poor", codec.name, wants.key(),
                self.render_settings.key(),
            )

    # ------------------------------------------------------------------ properties
    @property
    def codec_status(self) -> str:
        """Which codec the memory reads pages with, or why it has none."""
        return self._codec.status

    @property
    def codec(self) -> Codec | None:
        """The codec (loads the bundled one if needed); ``None`` when there is none."""
        return self._codec.get()

    # ------------------------------------------------------------------ writing
    def _validate(
        self, role: object, text: object, ts: object, meta: Mapping[str, Any] | None
    ) -> tuple[str, str, float, dict[str, Any]]:
        return validate_turn(role, text, self.clock() if ts is None else ts, meta,
                             roles=self.roles, max_chars=self.max_turn_chars)

    def add(
        self,
        session: str,
        role: str,
        text: str | bytes,
        *,
        ts: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Turn:
        """Append one turn (durable on return) and seal any page it completes.

        ``ts`` defaults to the clock; ``meta`` is a small JSON object kept with the turn
        (``name`` and ``tool_call_id`` are passed through to messages). Raises
        :class:`~opticmem.errors.InvalidSessionError`,
        :class:`~opticmem.errors.InvalidTurnError` or
        :class:`~opticmem.errors.TurnTooLargeError` — before anything is stored.

        >>> mem = OpticalMemory(codec=None)
        >>> mem.add("s", "user", "hello").seq
        0
        """
        session = validate_session(session)
        role_, text_, ts_, meta_ = self._validate(role, text, ts, meta)
        turn = self.store.append_turn(session, role_, text_, ts_, meta_)
        self._pack_quietly(session, turn.seq + 1)
        return turn

    def add_many(self, session: str, turns: Iterable[TurnInput]) -> list[Turn]:
        """Append several turns in one store round trip (bulk ingest), then pack once.

        Every turn is validated first: if any is invalid, none is stored. A turn of
        another shape (a 1- or 4-tuple, a string, ``None``) or ``turns`` that is not a
        collection of turns raises :class:`~opticmem.errors.InvalidTurnError` (naming the
        turn's index), as a bad role or text does.
        """
        session = validate_session(session)
        items: list[tuple[str, str, float, Mapping[str, Any] | None]] = []
        for i, item in enumerate(_turn_inputs(turns)):
            try:
                if isinstance(item, Mapping):
                    role, text = item.get("role"), item.get("text")
                    ts, meta = item.get("ts"), item.get("meta")
                elif isinstance(item, tuple) and len(item) in (2, 3):
                    role, text = item[0], item[1]
                    ts, meta = (item[2] if len(item) == 3 else None), None
                else:
                    # a bare TypeError, without the turn's index, used to come out here
                    got = (f"a tuple of {len(item)}" if isinstance(item, tuple)
                           else type(item).__name__)
                    raise InvalidTurnError(
                        f"expected a mapping {{'role', 'text', 'ts'?, 'meta'?}} or a "
                        f"(role, text[, ts]) tuple, got {got}")
                items.append(self._validate(role, text, ts, meta))
            except OpticMemError as exc:
                raise type(exc)(f"turn {i}: {exc}") from exc
        stored = self.store.append_turns(session, items)
        if stored:
            self._pack_quietly(session, stored[-1].seq + 1)
        return stored

    def _pack_quietly(self, session: str, turn_count: int) -> None:
        """Pack after an append; a store failure here is logged, not raised — the turn is
        already durable and the next call packs again."""
        try:
            self._pack(session, turn_count)
        except StoreError as exc:
            log.warning("session %r: packing deferred after a store error: %s", session, exc)

    def _check_cache(self, session: str) -> None:
        """Drop what this memory caches of ``session`` unless the store still holds it.

        Sealed pages never change, but a session can end and begin again under the same id
        — deleted by another process or another memory on the store, or expired by the
        store's TTL — and its new pages reuse the old page numbers. Trusting the cache
        then would show a deleted conversation and seal new pages from a stale frontier,
        leaving turns off every page. So the newest cached page is read back from the store
        (one page, once per call) and compared; any difference, or a page log now too short
        to hold it, drops the session's cached pages and recall index. A page records the
        digest of the pages before it (``PageRecord.prev``), so the newest one unchanged
        vouches for the older ones too: a session imported again with a turn redacted in
        place has the same newest page but for that digest. (A page count read before
        another thread sealed the cached page is no reason to drop anything.)
        """
        ref = self._refs.get(session)
        if ref is not None and not ref:
            return  # nothing of the session is cached
        if ref is not None:
            got = self.store.get_pages(session, ref[0], ref[0] + 1)
            if got and page_ref(got[0]) == ref:
                return
            log.info("session %r changed in the store (deleted or expired, then begun "
                     "again); dropping this memory's cached pages", session)
        self._drop_cached(session)

    def _drop_cached(self, session: str) -> None:
        """Forget every in-process cache entry of ``session`` (pages, prices, index)."""
        self._refs.put(session, ())  # first: a page another thread caches meanwhile is
        self._pages.discard_group(session)  # either dropped or checked
        self._prices.discard_group(session)
        self._indexes.discard(session)

    def _cache_page(self, rec: PageRecord) -> None:
        self._pages.put((rec.session, rec.page_no), rec)
        ref = self._refs.get(rec.session)
        if not ref or rec.page_no >= ref[0]:
            self._refs.put(rec.session, page_ref(rec))

    def _last_page(self, session: str, page_count: int) -> PageRecord | None:
        if page_count == 0:
            return None
        return self._read_pages(session, page_count - 1, page_count)[0]

    def _read_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        """Page records ``start..stop-1`` through the in-process cache (sealed pages never
        change; the cache is dropped when this memory deletes the session)."""
        out: list[PageRecord | None] = [self._pages.get((session, n)) for n in range(start, stop)]
        missing = [i for i, p in enumerate(out) if p is None]
        if missing:
            lo, hi = start + missing[0], start + missing[-1] + 1
            for rec in self.store.get_pages(session, lo, hi):
                self._cache_page(rec)
                out[rec.page_no - start] = rec
        return [p for p in out if p is not None]

    def _pack(
        self, session: str, turn_count: int, page_count: int | None = None,
        last: PageRecord | None = None, turns: Sequence[Turn] | None = None,
    ) -> list[PageRecord]:
        """Seal the complete pages that turns older than the verbatim window fill."""
        if page_count is None:
            page_count = self.store.page_count(session)
            self._check_cache(session)
            last = self._last_page(session, page_count)
        self._check_layout(last)
        self._check_window(last, turn_count)
        frontier = Frontier.after(last)
        stop = turn_count - self.verbatim_turns
        if stop <= frontier.seq:
            return []
        if turns is None:
            turns = self.store.get_turns(session, frontier.seq, stop)
        else:
            turns = [t for t in turns if t.seq < stop]
        new = self._packer.seal(session, page_count, frontier, turns, last=last)
        if not new:
            return []
        # Read first: what is read after it, if the store still holds this epoch when the
        # pages are added, was read from the life they are added to.
        epoch = self.store.session_epoch(session)
        if epoch == "" or self.store.turn_count(session) < turn_count:
            # The session was deleted (and maybe begun again) since ``turn_count`` was
            # known: counted from the old life, the window would seal the new life's
            # newest turns. Checked only when a page would seal, so an add costs no more.
            log.info("session %r: fewer turns than when packing began (deleted "
                     "meanwhile); nothing sealed", session)
            return []
        if epoch is not None and not self._still_holds(session, last, frontier.seq, stop, turns):
            log.info("session %r: its newest page or the turns sealed changed since they "
                     "were read (deleted and begun again meanwhile); nothing sealed", session)
            return []
        sealed: list[PageRecord] = []
        taken: int | None = None
        for rec in new:
            try:
                # not over a deleted session, nor over a life begun since the epoch was read
                ok = (self.store.add_sealed_page(rec) if epoch is None
                      else self.store.add_sealed_page(rec, epoch=epoch))
            except PageConflictError as exc:
                log.warning("session %r: page log moved underneath us: %s", session, exc)
                break
            if not ok:  # another writer sealed it first; its record is the one that counts
                taken = rec.page_no
                break
            self._cache_page(rec)
            sealed.append(rec)
        if taken is not None:
            self._pages.discard_group(session, lambda k: k[1] >= taken)
        if sealed:
            log.debug("session %r: sealed pages %d–%d", session, sealed[0].page_no,
                      sealed[-1].page_no)
            if not self.keep_archive:
                self.store.forget_turns(session, self._wholly_sealed(sealed[-1], turns))
            if self._worker is not None:
                self._worker.submit(session, [Job(p, Tier.LARGE) for p in
                                              self._read_ahead(sealed)])
        return sealed

    def _read_ahead(self, sealed: Sequence[PageRecord]) -> list[PageRecord]:
        """The pages just ``sealed`` (the newest of the session's page log) that the decay
        policy shows at Large now, which the background reader or queue reads ahead.

        A bulk import (``add_many`` of a long history) seals hundreds of pages at once,
        nearly all of them already past Large (or, by age, out of context): each was read
        at Large for nothing, on a CPU minutes of work. A context queues every page it
        shows at the tier it shows it, so those are read when they are shown."""
        newest = sealed[-1].page_no
        try:
            now = _check_now(self.clock())
            return [p for p in sealed
                    if self._policy_level(newest - p.page_no, now - p.last_ts) == 0]
        except OpticMemError:  # a clock or policy that fails a context fails it there
            return list(sealed)

    def _still_holds(
        self, session: str, last: PageRecord | None, start: int, stop: int,
        turns: Sequence[Turn],
    ) -> bool:
        """Whether the store holds, as the pages about to be added were sealed from, the
        session's newest page ``last`` and its turns ``start..stop-1`` (``turns``).

        The pages were sealed from reads that may predate a delete and a new life of the
        session: one grown as long would take them, and show text never said in it. Read
        after :meth:`~opticmem.store.Store.session_epoch`, these reads are of the life the
        epoch names, and the store adds the pages only while the session is in it: equal,
        the pages are what sealing that life gives (packing is deterministic). Costs two
        reads per seal, none per add.
        """
        if last is not None and self.store.get_pages(
                session, last.page_no, last.page_no + 1) != [last]:
            return False
        now = self.store.get_turns(session, start, stop)
        return [(t.seq, t.role, t.text, t.ts) for t in now] == [
            (t.seq, t.role, t.text, t.ts) for t in turns]

    def _check_layout(self, last: PageRecord | None) -> None:
        """Raise :class:`~opticmem.errors.CorruptRecordError` unless the session's newest
        page ``last`` was packed with this memory's render settings.

        Where the next page begins is a line of the layout that page was packed with:
        read in another layout (other columns, timestamps on) it names another place in
        the turn, and the turn's rest was silently left out of the context and off every
        page (or shown twice). The session must be opened with the settings it was
        written with, as drawing its pages needs anyway.
        """
        if last is not None and last.render_key != self._packer.render_key:
            raise CorruptRecordError(
                f"session {last.session[:200]!r} was packed with render settings "
                f"{last.render_key} (its page {last.page_no}), but this memory renders "
                f"{self._packer.render_key}: its next page would begin at the wrong place "
                f"in turn {last.last_seq}. Open the memory with the render_settings the "
                "session was written with."
            )

    def _check_window(self, last: PageRecord | None, turn_count: int) -> None:
        """Warn (once per memory) when the session's newest page ``last`` holds a turn of
        this memory's verbatim window: another memory on the store, with a narrower
        ``verbatim_turns``, sealed it, and this one can show that turn only on its page.
        Not an error: the context is whole, only less of it verbatim."""
        if (last is None or self._window_warned
                or last.last_seq < turn_count - self.verbatim_turns):
            return
        self._window_warned = True
        log.warning(
            "session %r: page %d holds turn %d, which is among this memory's %d verbatim "
            "turns: a memory with a narrower verbatim_turns sealed it. Memories sharing "
            "sessions should use one verbatim_turns (ingest and inspect: --verbatim-turns).",
            last.session[:200], last.page_no, last.last_seq, self.verbatim_turns)

    def _wholly_sealed(self, last: PageRecord, turns: Sequence[Turn]) -> int:
        """The first seq not wholly on sealed pages when ``last`` is the newest page.

        The turn ``last`` ends in is still needed (its rest is staging) unless the page
        holds its last line — then it too is wholly sealed, and true forgetting
        (``keep_archive=False``) must drop it now rather than when the next page seals,
        which may be never.
        """
        for t in turns:
            if t.seq == last.last_seq:
                if last.end_line >= len(self._packer.layout(t).lines):
                    return last.last_seq + 1
                break
        return last.last_seq

    # ------------------------------------------------------------------ assembling
    def _consumer_key(self, budget: int) -> str:
        blob = json.dumps([budget, self.cost_model.key, self.policy.key, self.verbatim_turns,
                           self._packer.render_key, self.page_max_tokens, self.memory_role])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _price(self, page: PageRecord) -> PagePrice:
        key = (self.cost_model.name, page)  # the whole record: page numbers are reused
        return self._prices.get_or_compute(key, lambda: price_page(page, self.cost_model))

    def _assemble(
        self, session: str, budget: int, now: float | None, *, pack: bool = True,
        retries: int = 8,
    ) -> _Assembly:
        model = self.cost_model
        now = _check_now(self.clock() if now is None else now)
        turn_count = self.store.turn_count(session)
        page_count = self.store.page_count(session)
        self._check_cache(session)
        window = min(self.policy.max_pages, page_count)
        pages = self._read_pages(session, page_count - window, page_count)
        last = pages[-1] if pages else self._last_page(session, page_count)
        if last is not None and turn_count <= last.last_seq:
            turn_count = self._check_turn_log(session, last)
        self._check_layout(last)
        self._check_window(last, turn_count)
        frontier = Frontier.after(last)
        turns = self.store.get_turns(session, frontier.seq, turn_count)
        if (retries > 0 and _lacks_turns_after(frontier.seq, turns, turn_count)
                and self.store.page_count(session) != page_count):
            # Another thread or process sealed a page since ``page_count`` was read and,
            # with keep_archive=False, forgot its turns: those turns are on a page this
            # context has not read, and shown as they stand it held neither — not even
            # the newest turns, when the page took them all. Read everything again.
            return self._assemble(session, budget, now, pack=pack, retries=retries - 1)
        staging = [t for t in turns if t.seq < turn_count - self.verbatim_turns]
        if pack and self._packer.may_seal(frontier, staging) and self._pack(
            session, turn_count, page_count, last, turns
        ):
            return self._assemble(session, budget, now, pack=False)

        # Pages: policy levels (monotone is enforced by the planner), prices, the mark.
        stored, seen = self._read_mark(session, budget)
        # Decay never runs backwards: the age policy's clock is the latest one this
        # consumer was shown a context at, so a clock stepped back (NTP, another process
        # with a slower clock, a smaller ``now``) cannot promote a page.
        now = now if seen is None else max(now, seen)
        options: list[PageOption] = []
        prices: list[PagePrice | None] = []
        remember = False
        for p in pages:
            rank = page_count - 1 - p.page_no
            level = self._policy_level(rank, now - p.last_ts)
            # Remember this clock only when it shows a page at a level the remembered one
            # (or, with none, a page of age 0) would not: a write per tier change at most.
            before = self._policy_level(rank, (p.last_ts if seen is None else seen) - p.last_ts)
            remember = remember or level != before
            price = self._price(p) if level < OUT else None
            prices.append(price)
            options.append(PageOption(p.page_no, level, price.costs if price else (0, 0, 0, 0)))

        # Turns after the last sealed page: staging, then the verbatim window.
        prev_page = last.page_no if last else -1
        items: list[tuple[Turn, str, bool, bool]] = []
        for r in self._packer.remainder(frontier, turns):
            text = continued_prefix(prev_page) + r.text if r.partial else r.text
            items.append((r.turn, text, r.turn.seq < turn_count - self.verbatim_turns, r.partial))
        views = turn_views(items, model)
        header = model.message_overhead + model.text_tokens(MEMORY_HEADER)
        # with no page shown, turns opening on a reply need the lead note (priced in)
        lead = lead_note_costs([v.role for v in views], model)
        result = plan(budget, options, [v.cost for v in views], page_header=header, mark=stored,
                      lead_costs=lead)
        if result.first_turn > 0 and (clipped := clip_turns(views, budget, model)) is not None:
            views = clipped  # a turn too long for the budget is clipped, not everything lost
            result = plan(budget, options, [v.cost for v in views], page_header=header,
                          mark=stored, lead_costs=lead)
        return _Assembly(
            session=session, turn_count=turn_count, page_count=page_count, pages=tuple(pages),
            levels=result.levels, prices=tuple(prices), turns=tuple(views[result.first_turn :]),
            dropped_turns=result.first_turn, cost=result.cost, demotions=result.demotions,
            mark=result.mark, mark_changed=result.mark > stored and result.demotions > 0,
            clock=now if remember else seen, clock_changed=remember,
        )

    def _policy_level(self, rank: int, age: float) -> int:
        """The decay policy's level for a page, as a plain ``int`` clamped to 0–4.

        A policy of the caller's own may compute levels with NumPy (``np.searchsorted``):
        taken as they came, such a level went into the stored decay mark, and every
        context under budget pressure then failed with a bare ``TypeError`` from ``json``.
        A level that is not a whole number raises
        :class:`~opticmem.errors.ConfigurationError`.
        """
        level = whole_number(self.policy.level(rank, age),
                              f"decay policy {self.policy.key!r}'s level (0 Large … 4 out) "
                              f"of the page of rank {rank}")
        return min(max(level, 0), OUT)

    def _check_turn_log(self, session: str, last: PageRecord) -> int:
        """The session's turn count, read again because the one read before was too short
        for its newest page ``last``; :class:`~opticmem.errors.CorruptRecordError` if it
        still is.

        A turn count read before the session was deleted and begun again can lag behind
        the new life's pages; a second read settles that. A turn log still shorter than
        its pages means it was lost while the pages were kept (a Redis eviction policy
        evicts keys one by one): new turns would then be numbered from 0 again, below the
        pages' frontier, and never be shown — an error beats a context that silently
        leaves out everything said since.
        """
        turn_count = self.store.turn_count(session)
        if turn_count > last.last_seq:
            return turn_count
        raise CorruptRecordError(
            f"session {session[:200]!r}: its pages hold turns up to seq {last.last_seq} but "
            f"its turn log holds only {turn_count} turns — the turn log was lost while the "
            "pages were kept (a Redis maxmemory-policy other than noeviction evicts keys "
            "one by one, or a key was deleted by hand). Delete the session "
            "(delete_session) to begin it again, and use maxmemory-policy noeviction."
        )

    def _mark_key(self, budget: int) -> str:
        """The session-state key of this consumer's decay mark and age clock."""
        return f"mark/{self._consumer_key(budget)}"

    @staticmethod
    def _parse_mark(raw: bytes | None) -> tuple[Mark, float | None]:
        """A stored decay mark and age clock (``None``: none remembered)."""
        state = json.loads(raw) if raw else {}
        return Mark(state.get("page_no", 0), state.get("level", 0)), state.get("now")

    def _read_mark(self, session: str, budget: int) -> tuple[Mark, float | None]:
        """The consumer's stored decay mark and age clock (``None``: none remembered)."""
        return self._parse_mark(self.store.get_state(session, self._mark_key(budget)))

    def _save_mark(self, asm: _Assembly, budget: int) -> None:
        """Store the consumer's decay mark and age clock if either moved forward.

        Two contexts of one session may be assembled at once — in threads of this process
        or in processes sharing the store — and the one that read the older history may
        finish last: written as it stands, its mark or clock would undo the other's, and
        a page the other one put out of context would come back. So the stored values are
        read again, raised, and swapped in only if they are still what was read
        (:meth:`~opticmem.store.Store.swap_state`, a compare-and-set); a context that
        loses the swap to another reads again and raises what that one wrote, until its
        swap wins or the stored values are already as high. They are only ever raised.

        Nor is anything written once the session no longer holds the newest page the
        context saw (deleted meanwhile, maybe begun again): the old conversation's mark
        would put the new one's first pages out of context for good. The store checks
        that page in the same step as the value (a delete between a check and the write
        would empty the session's state, and "nothing stored" would match again); a swap
        lost while the stored value stayed what was read was lost to that check.
        """
        if not (asm.mark_changed or asm.clock_changed) or not asm.pages:
            return  # (both change only when a page is in the policy's window)
        newest, key = asm.pages[-1], self._mark_key(budget)
        raw = self.store.get_state(asm.session, key)
        while True:
            stored, seen = self._parse_mark(raw)
            mark = max(stored, asm.mark) if asm.mark_changed else stored
            clocks = [c for c in (seen, asm.clock) if c is not None]
            clock = max(clocks) if clocks else None
            if (mark, clock) == (stored, seen):
                return
            state: dict[str, Any] = {"page_no": mark.page_no, "level": mark.level}
            if clock is not None:
                state["now"] = clock
            data = json.dumps(state).encode()
            if self.store.swap_state(asm.session, key, raw, data, page=newest):
                return
            again = self.store.get_state(asm.session, key)
            if again == raw:  # no other writer won: the session no longer holds the page
                log.info("session %r changed in the store while a context was assembled "
                         "(deleted, maybe begun again); its decay mark is not kept",
                         asm.session)
                return
            raw = again

    def context(
        self, session: str, *, budget_tokens: int | None = None, now: float | None = None
    ) -> Context:
        """The context for ``session``: pages at their tiers and verbatim turns, costing at
        most ``budget_tokens`` (default: the memory's) under the memory's cost model.

        ``now`` (Unix seconds; default the clock) matters only to the age policy, and never
        moves decay backwards: a ``now`` (or a clock reading) earlier than the latest one a
        context of this consumer showed a page's tier change at counts as that one. Raises
        :class:`~opticmem.errors.BudgetError` if even the newest turn does not fit, and
        :class:`~opticmem.errors.ConfigurationError` for a ``now`` (or clock reading) that
        is not finite Unix seconds within years 1–9999. An unknown session gives an empty
        context.

        >>> mem = OpticalMemory(codec=None, verbatim_turns=2)
        >>> for i in range(300):
        ...     _ = mem.add("s", "user", f"note {i}: the quarterly plan, line by line " * 4)
        >>> ctx = mem.context("s", budget_tokens=4000)
        >>> int(ctx.cost) <= 4000, ctx.pages[-1].tier.value, len(ctx.turns) >= 2
        (True, 'large', True)
        """
        return self._context(session, budget_tokens, now, write=True)

    def _context(
        self, session: str, budget_tokens: int | None, now: float | None, *, write: bool
    ) -> Context:
        """:meth:`context`; with ``write=False`` it changes nothing in the store: no page
        is sealed, no decay mark kept, nothing queued for reading back — what ``opticmem
        inspect`` shows. (Sealing with this memory's verbatim window would put turns
        that the session's own bots keep verbatim, under a wider window, onto pages.)"""
        session = validate_session(session)
        budget = self.budget_tokens if budget_tokens is None else _check_budget(budget_tokens)
        asm = self._assemble(session, budget, now, pack=write)
        if write:
            self._save_mark(asm, budget)
        model = self.cost_model
        views: list[ContextPage] = []
        for p, level, price in zip(asm.pages, asm.levels, asm.prices, strict=True):
            tier = tier_of(level)
            if tier is not None and price is not None:
                views.append(page_view(p, tier, price))
        images = sum(v.image_tokens for v in views)
        n_msgs = len(asm.turns) + (1 if views else 0)
        overhead = model.message_overhead * n_msgs
        if not views:  # the note's message, as the planner priced it
            overhead += lead_note_cost((t.role for t in asm.turns), model)
        staging = sum(t.cost - model.message_overhead for t in asm.turns if t.staging)
        verbatim = sum(t.cost - model.message_overhead for t in asm.turns if not t.staging)
        page_text = asm.cost - images - overhead - staging - verbatim
        cost = Cost(turns=verbatim, staging=staging, images=images, page_text=page_text,
                    overhead=overhead, budget=budget)
        if write and self._worker is not None:
            self._worker.submit(session, [Job(v.record, v.tier) for v in views
                                          if v.shown == "image"])
        return Context(
            session=session, pages=tuple(views), turns=asm.turns, cost=cost, model=model.name,
            archived_pages=asm.page_count - len(views), dropped_turns=asm.dropped_turns,
            demotions=asm.demotions, labels=self.render_settings.labels,
            memory_role=self.memory_role, _artefacts=self._artefacts,
            _image_cost=model.image,
        )

    # ------------------------------------------------------------------ recollection
    def _recollected(self, session: str, page_no: int) -> None:
        """Mark a page read back for the session's recall index — only when it has one: a
        new index reads every page, and a bot that never recalls must not keep the number
        of every page ever read, session after session, for the life of the process."""
        with self._lock:
            if self._indexes.get(session) is not None:
                self._dirty.setdefault(session, set()).add(page_no)

    def recollect(
        self,
        session: str,
        *,
        all_pages: bool = False,
        batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Read back (decode) every page in context that has no recollection at its tier
        yet — with ``all_pages``, also archived pages, at Tiny — in batches. Returns the
        number of pages decoded; ``progress(done, total)`` after each batch. Needs a codec.
        A ``batch_size`` that is not a whole number ≥ 1 raises
        :class:`~opticmem.errors.ConfigurationError` before anything is read."""
        session = validate_session(session)
        batch_size = whole_number(batch_size, "batch_size")
        check_count("batch_size", batch_size)
        jobs = self._context_jobs(session)
        if all_pages:
            asm_pages = {j.page.page_no for j in jobs}
            total = self.store.page_count(session)
            for lo in range(0, total, 256):
                for p in self.store.get_pages(session, lo, min(lo + 256, total)):
                    if p.page_no not in asm_pages:
                        jobs.append(Job(p, Tier.TINY))
        missing = [j for j, r in zip(jobs, self._artefacts.cached_recollections(session, jobs),
                                     strict=True) if r is None]
        if missing and self._codec.get() is None:
            from opticmem.errors import CodecUnavailableError

            raise CodecUnavailableError(f"cannot read pages back: {self.codec_status}")
        for lo in range(0, len(missing), batch_size):
            self._artefacts.recollections(session, missing[lo : lo + batch_size])
            if progress is not None:
                progress(min(lo + batch_size, len(missing)), len(missing))
        return len(missing)

    def _context_jobs(self, session: str) -> list[Job]:
        """The pages a context at the default budget shows, each at its tier."""
        asm = self._assemble(session, self.budget_tokens, None)
        return [Job(p, ORDER[lv]) for p, lv in zip(asm.pages, asm.levels, strict=True)
                if lv < OUT]

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for background or queued recollection to finish (``True``) or ``timeout``
        seconds (``False``). Returns at once in lazy mode, and after :meth:`close` (which
        drops the pages the thread had still to read; pages on a Redis queue stay there for
        the workers). In background mode, pages dropped because more than 4096 waited
        (``ThreadRecollector.MAX_PENDING``) are not waited for: they are read when needed.
        In queue mode, pages still being sent to the queue by other threads
        count as unfinished, and a Redis server that cannot be reached is polled again
        until the timeout: :class:`~opticmem.errors.StoreUnavailableError` if it still
        cannot be then (without a timeout: after 15 s). A ``timeout`` that is not a number
        of seconds (text, NaN) raises :class:`~opticmem.errors.ConfigurationError`."""
        timeout = _check_timeout(timeout)
        return self._worker.wait(timeout) if self._worker is not None else True

    # ------------------------------------------------------------------ recall
    def recall(
        self,
        session: str,
        query: str,
        *,
        k: int = 5,
        include_original: bool = False,
        decode: bool = True,
        budget_tokens: int | None = None,
    ) -> list[Passage]:
        """The ``k`` passages of ``session``'s pages that best match ``query``.

        Searches what the memory remembers (recollections at each page's tier, and the
        exact-facts sidecars, found by their values, the words around them and their
        kind; see :mod:`opticmem.recall`). With ``decode`` (default) the pages currently in
        context are read back first where needed. With ``include_original`` each passage
        carries the archived turns of its page (those not forgotten). An empty query, or
        a ``k`` below 1, gives no passages; a query that is not a ``str`` (``None``,
        ``bytes``) or a ``k`` that is not a whole number raises
        :class:`~opticmem.errors.ConfigurationError`.

        >>> mem = OpticalMemory(codec=None, verbatim_turns=2)
        >>> _ = mem.add("s", "user", "Ticket ABC-123 ships on 2026-03-04. " * 30)
        >>> for i in range(60):
        ...     _ = mem.add("s", "assistant", f"ok {i}, noted and filed " * 5)
        >>> [hit] = mem.recall("s", "when does the ticket ship?", k=1, include_original=True)
        >>> hit.source, hit.first_seq, "2026-03-04" in hit.text, hit.original[0].seq
        ('facts', 0, True, 0)
        """
        session = validate_session(session)
        budget = self.budget_tokens if budget_tokens is None else _check_budget(budget_tokens)
        k = whole_number(k, "k")
        if not isinstance(query, str):  # was "no passages": as if nothing matched
            hint = " (decode bytes first: query.decode('utf-8'))" if isinstance(
                query, (bytes, bytearray, memoryview)) else ""
            raise ConfigurationError(
                f"query must be a str, got {type(query).__name__}{hint}")
        if not query.strip() or k < 1:
            return []
        try:
            asm = self._assemble(session, budget, None, pack=False)
        except BudgetError:
            asm = None
        current: dict[int, int] = {}
        if asm is not None:
            current = {p.page_no: lv for p, lv in zip(asm.pages, asm.levels, strict=True)}
        codec = self._codec.get() if self._codec.configured else None
        if decode and codec is not None and asm is not None:
            jobs = [Job(p, ORDER[lv]) for p, lv in zip(asm.pages, asm.levels, strict=True)
                    if lv < OUT]
            self._artefacts.recollections(session, jobs)
        index = self._session_index(session)
        with index.lock:  # one update-and-search at a time: the index is plain dicts
            readings = self._artefacts.readings_name(codec.name) if codec is not None else None
            self._update_index(session, index, current, readings)
            found = [(doc, score, index.provenance[doc.page_no])
                     for doc, score in index.search(query, k)]
        passages = []
        for doc, score, (first_seq, last_seq, first_ts, last_ts) in found:
            original: tuple[Turn, ...] = ()
            if include_original:
                original = tuple(self.store.get_turns(session, first_seq, last_seq + 1))
            passages.append(Passage(
                session=session, page_no=doc.page_no, first_seq=first_seq, last_seq=last_seq,
                first_ts=first_ts, last_ts=last_ts, text=doc.text, source=doc.source,
                tier=doc.tier, confidence=doc.confidence, score=score, codec=doc.codec,
                original=original,
            ))
        return passages

    def _session_index(self, session: str) -> RecallIndex:
        """The session's recall index, made once: two threads recalling the session at
        once must share one index (and its lock), not each fill one of their own."""
        with self._lock:
            index = self._indexes.get(session)
            if index is None:
                index = RecallIndex()
                self._indexes.put(session, index)
                self._dirty.pop(session, None)  # a new index reads every page anyway
                # ...as will the next one of a session whose index this one pushed out of
                # the cache: its pages read since then are no longer worth remembering
                # (kept, they would pile up, a set per session ever recalled).
                for gone in [s for s in self._dirty if s not in self._indexes]:
                    del self._dirty[gone]
            return index

    def _update_index(
        self, session: str, index: RecallIndex, current: Mapping[int, int], codec: str | None
    ) -> None:
        """Bring the session's index up to date: new pages, pages in context (their tier
        may have changed) and pages read back since the last recall. The caller holds
        ``index.lock``."""
        total = self.store.page_count(session)
        if index.pages_seen > total:  # the session was deleted and begun again
            index.clear()
        provenance = index.provenance
        with self._lock:
            dirty = self._dirty.pop(session, set())
        todo = set(range(index.pages_seen, total)) | set(current) | dirty
        todo = {n for n in todo if n < total}
        for chunk in _runs(sorted(todo)):
            pages = self._read_pages(session, chunk[0], chunk[-1] + 1) if len(chunk) < 64 else (
                self.store.get_pages(session, chunk[0], chunk[-1] + 1))
            self._index_pages(session, index, pages, current, codec)
            for p in pages:
                provenance[p.page_no] = (p.first_seq, p.last_seq, p.first_ts, p.last_ts)
        index.pages_seen = total

    def _index_pages(
        self, session: str, index: RecallIndex, pages: Sequence[PageRecord],
        current: Mapping[int, int], codec: str | None,
    ) -> None:
        readings: Sequence[Recollection | None] = [None] * len(pages)
        if codec is not None:
            # The most decayed reading not beyond each page's current tier.
            readings = self._artefacts.newest_cached_readings(
                session, codec, pages,
                [ORDER[min(current.get(p.page_no, OUT), len(ORDER) - 1)] for p in pages])
        for p, rec in zip(pages, readings, strict=True):
            sig = (rec.tier.value, rec.codec) if rec is not None else ("facts",)
            if index.signature.get(p.page_no) == sig:
                continue
            docs = []
            if p.facts:
                docs.append(Doc(p.page_no, "facts", facts_line(p.facts), 1.0, None,
                                keywords=fact_keywords(p.facts, p.cues)))
            if rec is not None:
                docs.extend(Doc(p.page_no, "recollection", chunk, rec.confidence, rec.tier,
                                rec.codec) for chunk in split_passages(rec.text))
            index.set_page(p.page_no, docs)
            index.signature[p.page_no] = sig

    def original(self, passage: Passage) -> list[Turn]:
        """The way back: the archived turns of the page a passage came from (forgotten
        turns are absent). Anything but a :class:`~opticmem.recall.Passage` (such as the
        recall tool's artifact dict) raises ``TypeError``."""
        if not isinstance(passage, Passage):  # was an AttributeError on ``.session``
            raise TypeError(
                f"original() takes a Passage from recall(), got {type(passage).__name__}; "
                "for a passage dict use turns(session, first_seq, last_seq + 1)")
        return self.store.get_turns(passage.session, passage.first_seq, passage.last_seq + 1)

    # ------------------------------------------------------------------ archive access
    def turns(self, session: str, start: int = 0, stop: int | None = None) -> list[Turn]:
        """Archived turns ``start <= seq < stop`` (default: all); bounds that are not whole
        numbers raise :class:`~opticmem.errors.ConfigurationError`."""
        session = validate_session(session)
        start = whole_number(start, "start")
        end = self.store.turn_count(session) if stop is None else whole_number(
            stop, "stop")
        return self.store.get_turns(session, start, end)

    def pages(self, session: str, start: int = 0, stop: int | None = None) -> list[PageRecord]:
        """Sealed page records ``start <= page_no < stop`` (default: all); bounds that are
        not whole numbers raise :class:`~opticmem.errors.ConfigurationError`."""
        session = validate_session(session)
        start = whole_number(start, "start")
        end = self.store.page_count(session) if stop is None else whole_number(
            stop, "stop")
        return self.store.get_pages(session, start, end)

    def page_png(self, session: str, page_no: int, tier: Tier | str = Tier.LARGE) -> bytes:
        """PNG bytes of a sealed page at ``tier`` (rendered once, then cached as a blob).

        Raises :class:`~opticmem.errors.ConfigurationError` for an unknown tier name or a
        ``page_no`` that is not a whole number, and ``IndexError`` for a page the session
        does not have.
        """
        session = validate_session(session)
        page_no = whole_number(page_no, "page_no")
        try:
            tier = Tier.parse(tier)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._check_cache(session)
        pages = self._read_pages(session, page_no, page_no + 1) if page_no >= 0 else []
        if not pages:
            raise IndexError(f"session {session!r} has no page {page_no}")
        return self._artefacts.pngs(session, [Job(pages[0], tier)])[0]

    def sessions(self) -> list[str]:
        """Ids of the sessions in the store, sorted."""
        return sorted(self.store.sessions())

    def forget(self, session: str, before_seq: int) -> int:
        """True forgetting: drop the archived raw text of turns with ``seq < before_seq``.

        Sealed pages (with their transcripts, images and readings) stay; use
        :meth:`delete_session` to erase everything. Returns the number of turns dropped; a
        ``before_seq`` that is not a whole number raises
        :class:`~opticmem.errors.ConfigurationError` (a store would truncate ``2.5``).
        """
        session = validate_session(session)
        return self.store.forget_turns(session, whole_number(before_seq, "before_seq"))

    def delete_session(self, session: str) -> None:
        """Erase a session: turns, pages and every derived artefact."""
        session = validate_session(session)
        self.store.delete_session(session)
        self._drop_cached(session)
        with self._lock:
            self._dirty.pop(session, None)

    def close(self, timeout: float | None = None) -> None:
        """Stop the background worker and close the store if this memory opened it.

        Pages still queued for background reading are dropped (they are read lazily if
        the store outlives the memory); a batch being read right now is waited for, so
        the store is never closed under it — for up to ``timeout`` seconds (``None``: as
        long as it takes). A batch still being read then (a codec that hangs) raises
        :class:`TimeoutError` with the store left open; ``close`` again later closes it.
        Calls still running in other threads are not waited for: close the memory after
        them. (A memory dropped unclosed is freed, and its background thread ends after
        the batch in hand.)
        """
        timeout = _check_timeout(timeout)
        if timeout == math.inf:
            timeout = None  # Thread.join takes no infinity
        # the worker stays set: a thread packing now may still submit to it
        if self._worker is not None and not self._worker.stop(timeout):
            raise TimeoutError(
                f"the background reader is still reading a batch of pages after {timeout} s "
                "(a codec that hangs?): the store was left open, as closing it under the "
                "read could crash; call close() again to wait for it once more")
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> OpticalMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> OpticalMemory:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ async twins
    async def aadd(
        self, session: str, role: str, text: str | bytes, *, ts: float | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Turn:
        """:meth:`add` in a worker thread; cancelled, it waits for the write to end."""
        return await write_in_thread(self.add, session, role, text, ts=ts, meta=meta)

    async def aadd_many(self, session: str, turns: Iterable[TurnInput]) -> list[Turn]:
        """:meth:`add_many` in a worker thread; cancelled, it waits for the write to end."""
        items = list(_turn_inputs(turns))
        return await write_in_thread(self.add_many, session, items)

    async def acontext(
        self, session: str, *, budget_tokens: int | None = None, now: float | None = None
    ) -> Context:
        """:meth:`context` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.context, session, budget_tokens=budget_tokens,
                                       now=now)

    async def arecall(
        self, session: str, query: str, *, k: int = 5, include_original: bool = False,
        decode: bool = True, budget_tokens: int | None = None,
    ) -> list[Passage]:
        """:meth:`recall` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.recall, session, query, k=k,
                                       include_original=include_original, decode=decode,
                                       budget_tokens=budget_tokens)

    async def arecollect(
        self, session: str, *, all_pages: bool = False, batch_size: int = 16,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """:meth:`recollect` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.recollect, session, all_pages=all_pages,
                                       batch_size=batch_size, progress=progress)

    async def aoriginal(self, passage: Passage) -> list[Turn]:
        """:meth:`original` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.original, passage)

    async def aturns(self, session: str, start: int = 0, stop: int | None = None) -> list[Turn]:
        """:meth:`turns` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.turns, session, start, stop)

    async def apages(
        self, session: str, start: int = 0, stop: int | None = None
    ) -> list[PageRecord]:
        """:meth:`pages` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.pages, session, start, stop)

    async def apage_png(self, session: str, page_no: int, tier: Tier | str = Tier.LARGE) -> bytes:
        """:meth:`page_png` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.page_png, session, page_no, tier)

    async def asessions(self) -> list[str]:
        """:meth:`sessions` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.sessions)

    async def aforget(self, session: str, before_seq: int) -> int:
        """:meth:`forget` in a worker thread; cancelled, it waits for the write to end."""
        return await write_in_thread(self.forget, session, before_seq)

    async def adelete_session(self, session: str) -> None:
        """:meth:`delete_session` in a worker thread; cancelled, it waits for the write to end."""
        await write_in_thread(self.delete_session, session)

    async def aflush(self, timeout: float | None = None) -> bool:
        """:meth:`flush` in a worker thread, so an event loop never blocks on it."""
        return await asyncio.to_thread(self.flush, timeout)

    async def aclose(self, timeout: float | None = None) -> None:
        """:meth:`close` in a worker thread; cancelled, it waits for the write to end."""
        await write_in_thread(self.close, timeout)


def _weakly(method: Callable[P, None]) -> Callable[P, None]:
    """The bound ``method``, called only while its object lives (holding it weakly)."""
    ref = weakref.WeakMethod(method)

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        live = ref()
        if live is not None:
            live(*args, **kwargs)

    return call


def _check_budget(budget: object) -> int:
    """``budget`` as an ``int`` if it is a whole number of tokens ≥ 1 (any integer type,
    not ``bool``), else :class:`BudgetError`."""
    value = whole_number(budget, "budget_tokens", BudgetError)
    if value < 1:
        raise BudgetError(f"budget_tokens must be ≥ 1, got {value}")
    return value


def _check_now(now: object) -> float:
    """``now`` (an argument or the clock's reading) as Unix seconds, else
    :class:`ConfigurationError`: the age policy's clock is remembered and never runs
    backwards, so one reading in milliseconds would put every page out of the consumer's
    context for good."""
    try:
        return validate_ts(now)
    except InvalidTurnError as exc:
        raise ConfigurationError(f"now (the age policy's clock) must be Unix seconds: "
                                 f"{exc}") from None


def _check_timeout(timeout: object) -> float | None:
    """``timeout`` as seconds (``None``: no limit), else :class:`ConfigurationError`: a
    NaN deadline is never reached, so the wait would spin (or poll Redis) for ever, and
    text failed deep inside with a bare ``TypeError``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or math.isnan(
            float(timeout)):
        raise ConfigurationError(f"timeout must be a number of seconds or None, got {timeout!r}")
    return float(timeout)


def _turn_inputs(turns: object) -> Iterable[Any]:
    """``turns`` given to ``add_many``, if it is a collection of turns; else
    :class:`InvalidTurnError`. A string, a mapping (one turn, not a list of them) or
    bytes iterate as characters or keys, each then refused as a turn of the wrong shape;
    anything else not iterable failed with a bare TypeError."""
    if isinstance(turns, (str, bytes, bytearray, Mapping)) or not isinstance(turns, Iterable):
        one = " (for one turn use add, or a list of one)" if isinstance(turns, Mapping) else ""
        raise InvalidTurnError(
            f"turns must be a list (or other iterable) of turns, not "
            f"{type(turns).__name__}{one}")
    return turns


def _lacks_turns_after(first: int, turns: Sequence[Turn], turn_count: int) -> bool:
    """Whether ``turns`` (read for seqs ``first`` up to ``turn_count``) lack one after
    ``first`` — forgotten since the page count was read. (Turn ``first`` itself may be
    wholly on the newest page, and forgotten with it when the archive is not kept.)"""
    return sum(1 for t in turns if t.seq > first) < turn_count - first - 1


def _first(key: tuple[str, int]) -> str:
    """The session of a ``_pages`` key, its group."""
    return key[0]


def _page_session(key: tuple[str, PageRecord]) -> str:
    """The session of a ``_prices`` key, its group."""
    return key[1].session


def _default_store() -> Store:
    from opticmem.memory_store import InMemoryStore

    return InMemoryStore()


def _runs(nums: Sequence[int]) -> list[list[int]]:
    """Consecutive runs of sorted integers, each at most 256 long."""
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][-1] + 1 and len(runs[-1]) < 256:
            runs[-1].append(n)
        else:
            runs.append([n])
    return runs
