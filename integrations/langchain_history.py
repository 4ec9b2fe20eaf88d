"""``OpticalChatMessageHistory``: a compatibility shim for LangChain's legacy history API.

LangChain deprecated this surface: ``BaseChatMessageHistory`` since langchain-core 1.6.4
and ``RunnableWithMessageHistory`` since 1.3.3 (both to be removed in 2.0). New code
should use :class:`~opticmem.integrations.langchain_middleware.OpticalMemoryMiddleware`
with ``langchain.agents.create_agent``, which keeps the full history in the agent's state
and shows the model the optical context without rewriting anything. This shim exists
for code that still runs chains under ``RunnableWithMessageHistory``::

    chain = RunnableWithMessageHistory(
        prompt | model,
        lambda session_id: OpticalChatMessageHistory(memory, session_id),
        input_messages_key="question", history_messages_key="history")

It fills the abstract surface exactly (``messages``, ``add_messages``, ``clear`` and
the async twins ``aget_messages``, ``aadd_messages``, ``aclear``):

* ``messages`` is **not** the raw transcript: it is the session's budgeted context
  (:meth:`~opticmem.OpticalMemory.context`) as LangChain messages — a ``HumanMessage``
  holding the older pages as image blocks with captions and exact facts, then the recent
  turns as text — costing at most ``budget_tokens`` under the memory's cost model, the
  headings of tool and system turns included. It opens with a ``HumanMessage``: with no
  page shown and a reply as the oldest turn kept (the newest turn is often the last
  reply), a short note (:data:`~opticmem.context.LEAD_NOTE`, within the budget) comes
  before it, since Anthropic and Bedrock refuse a conversation that opens with the
  assistant. The budget covers the history only; the
  prompt and the new input come on top. The raw turns stay in the archive
  (:meth:`~opticmem.OpticalMemory.turns`). When even the newest stored turn (a long
  reply, say) is over the budget, the history is empty for that call and a warning is
  logged, as the middleware does: raising would stop the chain for the session for good,
  since that turn stays the newest until the next one is added through the chain.
* ``add_messages`` appends turns by the rules of
  :func:`~opticmem.integrations.langchain_messages.message_turns` (tool calls as text,
  attachments as markers, empty messages skipped, huge ones split).
* a tool loop does not fit this surface: a stored tool call comes back as text, so a
  ``ToolMessage`` passed as the next input would answer no call (OpenAI rejects that),
  and handing the call back structured would break the chain whose next input is a
  human message instead (a call left unanswered) — the history cannot see which input
  comes next. Agents that call tools belong on the middleware.
* ``clear`` erases the session (:meth:`~opticmem.OpticalMemory.delete_session`): turns,
  pages and every derived artefact — the store has no "empty but keep" operation, and
  a cleared history must not come back through recall.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

from opticmem.context import Context
from opticmem.errors import BudgetError, InvalidTurnError
from opticmem.integrations.langchain_messages import context_messages, message_turns
from opticmem.integrations.langchain_tokens import OpticalTokenCounter
from opticmem.integrations.turn_text import newest_turn_tokens
from opticmem.memory import OpticalMemory, TurnInput, _check_budget
from opticmem.sessions import validate_session

try:
    from langchain_core.chat_history import BaseChatMessageHistory
    from langchain_core.messages import BaseMessage
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

log = logging.getLogger(__name__)


class OpticalChatMessageHistory(BaseChatMessageHistory):
    """A session of an :class:`~opticmem.OpticalMemory` as a ``BaseChatMessageHistory``
    (deprecated LangChain surface; see the module docstring and prefer the middleware).

    Args:
        memory: the memory (several histories may share it, one per session).
        session: the session id (``RunnableWithMessageHistory``'s ``session_id``).
        budget_tokens: budget of :attr:`messages` (default: the memory's); a whole number
            ≥ 1, else :class:`~opticmem.errors.BudgetError` here.

    >>> from opticmem import OpticalMemory
    >>> from langchain_core.messages import AIMessage, HumanMessage
    >>> history = OpticalChatMessageHistory(OpticalMemory(codec=None), "alice")
    >>> history.add_messages([HumanMessage("Let's plan Titan."), AIMessage("Milestones?")])
    >>> [m.content for m in history.messages]
    ["Let's plan Titan.", 'Milestones?']
    """

    def __init__(
        self, memory: OpticalMemory, session: str, *, budget_tokens: int | None = None
    ) -> None:
        super().__init__()
        self.memory = memory
        self.session = validate_session(session)
        # a whole number ≥ 1, checked here: a 0, NaN, bool or str budget was kept and only
        # refused when ``messages`` was first read, far from the code that passed it
        self.budget_tokens = None if budget_tokens is None else _check_budget(budget_tokens)
        self._counter = OpticalTokenCounter(memory)

    def _next_target(self, ctx: Context, messages: list[BaseMessage]) -> int | None:
        """``None`` when ``messages`` (``ctx`` shown) fit the budget, else the smaller budget
        to plan the context for: showing ``tool`` and ``system`` turns adds a heading to
        each, which the context's own price does not include. Never less than the newest
        turn alone costs (:func:`newest_turn_tokens`): planned for that, the context is
        that turn, and over the budget even then, nothing fits."""
        budget = self.memory.budget_tokens if self.budget_tokens is None else self.budget_tokens
        cost = self._counter(messages)
        if cost <= budget:
            return None
        target, floor = ctx.cost.budget, newest_turn_tokens(ctx, self.memory.cost_model)
        if target <= floor:
            raise BudgetError(f"session {self.session!r}: a budget of {budget} tokens cannot "
                              f"hold the newest turn shown as a message ({cost} tokens)",
                              needed=cost)
        return max(target - (cost - budget), floor)

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's budgeted context as LangChain messages (see the module docstring)."""
        target: int | None = self.budget_tokens
        try:
            while True:
                ctx = self.memory.context(self.session, budget_tokens=target)
                messages = context_messages(ctx.messages())
                target = self._next_target(ctx, messages)
                if target is None:
                    return messages
        except BudgetError as exc:
            return self._none_fit(exc)

    async def aget_messages(self) -> list[BaseMessage]:
        target: int | None = self.budget_tokens
        try:
            while True:
                ctx = await self.memory.acontext(self.session, budget_tokens=target)
                messages = context_messages(await ctx.amessages())
                target = self._next_target(ctx, messages)
                if target is None:
                    return messages
        except BudgetError as exc:
            return self._none_fit(exc)

    def _none_fit(self, exc: BudgetError) -> list[BaseMessage]:
        """No history when the newest turn alone is over the budget (``exc`` says by how
        much); any other :class:`BudgetError` is raised."""
        if exc.needed is None:
            raise exc
        log.warning("session %r: the newest stored turn costs %d tokens, over the history's "
                    "budget; this call shows no history (raise budget_tokens to show it)",
                    self.session, exc.needed)
        return []

    def _turns(self, messages: Sequence[BaseMessage]) -> list[TurnInput]:
        """The turns ``messages`` are recorded as; raises
        :class:`~opticmem.errors.InvalidTurnError`, before anything is stored, when
        ``messages`` is not a sequence of LangChain messages — a bare string, a dict or one
        message (a pydantic model, which iterates as its fields) failed with a bare
        ``AttributeError`` or ``TypeError`` from deep inside."""
        if isinstance(messages, (str, bytes, Mapping, BaseMessage)) or not isinstance(
                messages, Iterable):
            raise InvalidTurnError(f"add_messages takes a list of LangChain messages, got "
                                   f"{type(messages).__name__}")
        messages = list(messages)  # a generator is read once, here
        for i, m in enumerate(messages):
            if not isinstance(m, BaseMessage):
                raise InvalidTurnError(f"message {i}: expected a LangChain message "
                                       f"(HumanMessage, AIMessage…), got {type(m).__name__}")
        return [t for m in messages for t in message_turns(m, self.memory)]

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` as turns, in order (one store round trip)."""
        turns = self._turns(messages)
        if turns:
            self.memory.add_many(self.session, turns)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        turns = self._turns(messages)
        if turns:
            await self.memory.aadd_many(self.session, turns)

    def clear(self) -> None:
        """Erase the session: turns, pages and derived artefacts."""
        self.memory.delete_session(self.session)

    async def aclear(self) -> None:
        await self.memory.adelete_session(self.session)


__all__ = ["OpticalChatMessageHistory"]
