"""Recording an agent's messages into a memory session exactly once.

An agent's state (with a checkpointer) holds the whole conversation and grows by a few
messages per step; the memory must receive each message once, however many model calls,
runs, retries or restarts see it. :class:`Recorder` keeps, per session and thread, a
**cursor** in the store's session state (:meth:`~opticmem.store.Store.put_state`,
deleted with the session): the id of the last message it recorded (``{"id": ...}``), or
— written by :meth:`Recorder.pin` — the id of the first message **not** recorded
(``{"next": ...}``). The messages in the state after an ``id`` cursor's message, or from
a ``next`` cursor's message on, are the ones not yet recorded. The cursor holds a digest
of the id (ids are the user's to choose and may be long; state values stay small).

Two things can make the cursor wrong, and both are checked against the message ids the
turns carry (``meta["lc_id"]``, see :mod:`opticmem.integrations.langchain_messages`):

* a crash between appending turns and moving the cursor: the turns are there, the cursor
  lags. Messages after the cursor whose ids appear among the session's newest turns
  recorded from the same thread (``meta["lc_thread"]``, a digest of the thread id) are
  taken as recorded: ids are the user's to choose, and two threads of one session (a
  fixed ``session=``) may both have a message ``"1"``.
* a cursor that is not in the state at all (a run without a checkpointer, which holds
  only its own input; a state rewritten by another middleware): the same id check over
  the newest turns decides, and then the messages' roles and text: a run without a
  checkpointer handed the whole conversation again has fresh ids for it, and the
  leading messages whose turns are the session's newest ones are taken as recorded.

A model call that finds the cursor nowhere in the state, and records nothing, points it
at the first message not recorded instead (:meth:`Recorder.pin`): its id is stable for
the rest of the run, so the run's end records from there, where the roles-and-text check
above would take the run's own exchange, when it repeats the session's last one word for
word ("thanks" / "You're welcome!"), as recorded already.

The middleware hands the recorder the state's messages after its leading system messages
(the system prompt, never recorded), so indices and cursors are over that conversation.

Recording is in order, so "the memory holds message ``i``" implies it holds every message
before ``i``. LangGraph's message reducer gives every state message an id, a fresh one
each run for a message passed in without one; such messages are recognised again only by
their roles and text, when the cursor is not in the state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from opticmem.integrations.langchain_messages import message_id, message_turns
from opticmem.memory import OpticalMemory

try:
    from langchain_core.messages import BaseMessage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

log = logging.getLogger(__name__)

CURSOR_PREFIX = "langchain/cursor/"
"""Session-state key prefix of the recording cursors (one per thread)."""

TAIL_SLACK = 16
"""Extra newest turns read when checking message ids against the store."""


def _digest(message_id: str) -> str:
    return hashlib.sha256(message_id.encode()).hexdigest()[:32]


def _cursor(session: str, raw: bytes | None) -> tuple[str, int] | None:
    """The message-id digest a stored cursor holds, and the offset added to that message's
    index to count the messages recorded: 1 when the named message is recorded
    (``{"id": ...}``, the last one recorded), 0 when it is the first one not recorded
    (``{"next": ...}``, :meth:`Recorder.pin`). ``None`` for none, and for one that is not
    a cursor (a damaged or hand-written state value), which failed every model call of
    its thread with a bare ``JSONDecodeError`` or ``AttributeError``: without it the
    message ids and texts decide, as for a lost cursor, and the next record rewrites it."""
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:  # not JSON, or not UTF-8
        value = None
    for key, after in (("id", 1), ("next", 0)):
        cursor = value.get(key) if isinstance(value, dict) else None
        if isinstance(cursor, str):
            return cursor, after
    log.warning("session %r: a recording cursor is unreadable (%r); recovering from "
                "the message ids", session[:200], bytes(raw[:64]))
    return None


def _thread_digest(thread: str | None) -> str:
    # surrogatepass: a thread id is the user's to choose, and may hold a lone surrogate
    raw = (thread or "").encode("utf-8", "surrogatepass")
    return hashlib.sha256(raw).hexdigest()[:16]


def cursor_key(thread: str | None) -> str:
    """Session-state key of the cursor for ``thread`` (``None``: runs without a thread).

    >>> cursor_key("t-1")
    'langchain/cursor/46e9bc3476c92ea2'
    """
    return CURSOR_PREFIX + _thread_digest(thread)


@dataclass(frozen=True)
class Recorder:
    """Records LangChain messages into ``memory`` once each (see the module docstring)."""

    memory: OpticalMemory

    def recorded_prefix(
        self, session: str, thread: str | None, messages: Sequence[BaseMessage]
    ) -> int:
        """How many leading ``messages`` the session already holds."""
        return self.locate(session, thread, messages)[0]

    def locate(
        self, session: str, thread: str | None, messages: Sequence[BaseMessage]
    ) -> tuple[int, bool]:
        """How many leading ``messages`` the session already holds, and whether the
        thread's cursor names one of ``messages`` (else ids and texts decided)."""
        store = self.memory.store
        ids = [message_id(m) for m in messages]  # as the turns' ``lc_id`` holds them
        start, found = 0, False
        cursor = _cursor(session, store.get_state(session, cursor_key(thread)))
        if cursor is not None:
            digest, after = cursor
            for j in range(len(ids) - 1, -1, -1):
                mid = ids[j]
                if mid is not None and _digest(mid) == digest:
                    start, found = j + after, True
                    break
        if start == len(messages):
            return start, found
        n = store.turn_count(session)
        if n == 0:
            return start, found
        window = 2 * (len(messages) - start if found else len(messages)) + TAIL_SLACK
        # the ids this thread recorded (turns recorded before threads were tagged: any)
        tag = _thread_digest(thread)
        seen = {t.meta.get("lc_id") for t in self.memory.turns(session, max(0, n - window), n)
                if t.meta.get("lc_thread", tag) == tag}
        seen.discard(None)
        for j in range(start, len(messages)):
            if ids[j] is not None and ids[j] in seen:
                start = j + 1
        if not found:
            start = max(start, self._replayed(session, messages, n))
        return start, found

    def pin(
        self, session: str, thread: str | None, messages: Sequence[BaseMessage], done: int
    ) -> None:
        """Point the thread's cursor at ``messages[done]``, the first message not recorded
        (nothing when there is none, or it has no id): what a model call that found the
        cursor nowhere in ``messages`` knows. Without it, the run's end decided again by
        roles and text, and a run repeating the session's last exchange word for word
        (with fresh ids: no checkpointer) recorded none of it."""
        if done < len(messages) and (mid := message_id(messages[done])):
            self.memory.store.put_state(session, cursor_key(thread),
                                        json.dumps({"next": _digest(mid)}).encode())

    def _replayed(self, session: str, messages: Sequence[BaseMessage], n: int) -> int:
        """How many leading ``messages`` the session's newest turns already hold, told by
        their roles and text: ``k`` such that the turns ``messages[:k]`` are recorded as
        are the session's last ones (the largest such ``k``; ``0``: none).

        A run without a checkpointer that is handed the conversation again (an app that
        keeps its own list of ``{"role", "content"}`` dicts and passes it whole, as
        ``create_agent`` is used without one) gets fresh message ids from LangGraph on
        every run, so neither the cursor nor the ids recognise what the previous runs
        recorded, and every run recorded the whole conversation again (and the model was
        shown it as many times)."""
        per_message = [[(t["role"], t["text"]) for t in message_turns(m, self.memory)]
                       for m in messages]
        flat = [turn for turns in per_message for turn in turns]
        if not flat:
            return 0
        stored = [(t.role, t.text)
                  for t in self.memory.turns(session, max(0, n - len(flat)), n)]
        size = len(flat)
        for k in range(len(messages), 0, -1):
            if size and size <= len(stored) and stored[len(stored) - size:] == flat[:size]:
                return k
            size -= len(per_message[k - 1])
        return 0

    def record(
        self, session: str, thread: str | None, messages: Sequence[BaseMessage]
    ) -> int:
        """Append ``messages`` to the session (in order) and move the cursor past them.

        Returns the number of turns appended (a message may give none or several; see
        :func:`~opticmem.integrations.langchain_messages.message_turns`).
        """
        if not messages:
            return 0
        tag = _thread_digest(thread)
        turns = [{**t, "meta": {**t["meta"], "lc_thread": tag}}
                 for m in messages for t in message_turns(m, self.memory)]
        if turns:
            self.memory.add_many(session, turns)
        last = next((i for m in reversed(messages) if (i := message_id(m))), None)
        if last is not None:
            self.memory.store.put_state(session, cursor_key(thread),
                                        json.dumps({"id": _digest(last)}).encode())
        return len(turns)


__all__ = ["CURSOR_PREFIX", "Recorder", "cursor_key"]
