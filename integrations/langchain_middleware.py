"""``OpticalMemoryMiddleware``: optical-decay memory for ``langchain.agents.create_agent``.

>>> from opticmem import OpticalMemory
>>> from langchain.agents import create_agent
>>> from langgraph.checkpoint.memory import InMemorySaver
>>> memory = OpticalMemory(budget_tokens=8192, codec=None)
>>> agent = create_agent(model, tools=[make_recall_tool(memory)],
...                      middleware=[OpticalMemoryMiddleware(memory)],
...                      checkpointer=InMemorySaver())                # doctest: +SKIP
>>> agent.invoke({"messages": [{"role": "user", "content": "hi"}]},
...              {"configurable": {"thread_id": "alice-1"}})        # doctest: +SKIP

**What the model is sent** (in ``wrap_model_call``, through ``request.override(messages=
...)``; the agent's state is never rewritten, so the checkpointer and any UI keep the
whole conversation):

1. the system prompt, as text and untouched on every call: ``request.system_message``
   (``create_agent(system_prompt=...)``), then the system message(s) the agent's messages
   start with — a prompt passed in the input, ``{"messages": [SystemMessage(...),
   HumanMessage(...)]}``, which a checkpointer keeps first in the state. Both are sent as
   ``create_agent`` sends them without the middleware: ``system_message`` first, then the
   state's own, as separate system messages;
2. the memory's context of everything already recorded — pages at their tiers as v1
   image blocks (``{"type": "image", "base64": ..., "mime_type": "image/png"}``), each
   after a caption naming its turns, times and tier and followed by its exact-facts line;
   then the recent turns as text (see :mod:`~opticmem.integrations.langchain_messages`
   for how roles are shown). It opens with a user message: when no page is shown and
   the oldest turn kept is a reply, a short note (:data:`~opticmem.context.LEAD_NOTE`,
   priced in the budget) comes before it — Anthropic and Bedrock refuse a conversation
   that opens with the assistant. So does a run's in-flight part when no history is
   shown and it opens with an ``AIMessage``;
3. the run's in-flight messages verbatim: the latest user message and the tool-call /
   tool-result chain after it (and any message not yet recorded, in its place). A tool
   result whose call is only in the history, as text, is headed like a recorded one
   (:func:`~opticmem.integrations.langchain_messages.orphan_tool_results_headed`).

**What is recorded, and when.** Never the system prompt: the state's leading system
messages are set aside before anything below, so a checkpointed thread, whose state
starts with them on every run, never records them (a system message after any other
message is a turn: recorded, and shown back headed ``[System message]``). Before each
model call, state messages *older* than the latest user message that the memory does
not hold yet are recorded (normally none; after a crash or the first use on an existing
thread, the backlog). When the run ends
(``after_agent``), the rest — the user message, the assistant's tool calls (as text
lines in the assistant turn), the tool results (role ``tool``) and the final answer — is
recorded. So within one run the memory context stays the same from call to call (stable
for prompt caches) unless the run's own growing messages leave it less room, and each
message reaches the memory exactly once, across model calls, runs and restarts (see
:mod:`~opticmem.integrations.langchain_recording`). A run
interrupted before its end (an error, a human-in-the-loop pause) is recorded by the next
one.

**Budget.** Everything sent — system prompt, memory context, in-flight messages — costs at
most ``budget_tokens`` (default: the memory's) minus ``reserve_tokens`` (keep room for
tool schemas and the reply), priced with the memory's cost model
(:class:`~opticmem.integrations.langchain_tokens.OpticalTokenCounter`). The memory context
gets what the system prompt and the in-flight messages leave (rounded down to 1/64 of
the budget, so the memory's decay marks stay few and stable). If that room cannot hold
even the newest recorded turn, the model sees no history for that call (logged). If the
system prompt and in-flight messages alone exceed the budget, the call raises
:class:`InFlightTooLargeError` (a :class:`~opticmem.errors.BudgetError`) before the model
is called: the run's own messages are never cut, and sending more than the budget would
break the promise.

**Sessions.** One memory session per LangGraph thread by default
(``config["configurable"]["thread_id"]``); ``session=`` fixes one id or computes it from
the config (:mod:`~opticmem.integrations.langchain_session`).

Sync (``invoke``/``stream``) and async (``ainvoke``/``astream``) runs behave the same;
the async hooks run the store and rendering work in a worker thread, as the memory's own
async twins do. A run cancelled (or timed out) while a hook records waits for that
recording to end, so the next run never records the same messages beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from opticmem.arguments import whole_number
from opticmem.context import LEAD_NOTE, Context
from opticmem.errors import BudgetError
from opticmem.integrations.langchain_messages import (
    REQUIRED_ROLES,
    context_messages,
    leading_system,
    orphan_tool_results_headed,
)
from opticmem.integrations.langchain_recording import Recorder
from opticmem.integrations.langchain_session import (
    SessionSpec,
    check_session_spec,
    current_config,
    resolve_session,
    thread_id,
)
from opticmem.integrations.langchain_tokens import OpticalTokenCounter
from opticmem.integrations.turn_text import newest_turn_tokens
from opticmem.memory import OpticalMemory, _check_budget
from opticmem.render import ORDER
from opticmem.store import write_in_thread

try:
    from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
    from langchain_core.messages import (
        AIMessage,
        AnyMessage,
        BaseMessage,
        HumanMessage,
        SystemMessage,
    )
    from langchain_core.tools import BaseTool
    from langgraph.runtime import Runtime
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

log = logging.getLogger(__name__)

BUDGET_STEPS = 64
"""The memory context's budget is rounded down to a multiple of ``budget // BUDGET_STEPS``."""

PLANS = 4
"""How often the history is planned at most for one model call; the last plan is for the
newest turn alone."""


class InFlightTooLargeError(BudgetError):
    """The system prompt and the run's in-flight messages alone exceed the budget.

    Raised before the model is called. ``needed`` is what they cost, ``budget`` what was
    available (the budget minus ``reserve_tokens``).
    """

    def __init__(self, message: str, *, needed: int, budget: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.budget = budget


@dataclass(frozen=True)
class ModelView:
    """What one model call was shown, and what it cost (passed to ``on_view``)."""

    session: str
    thread_id: str | None
    system_message: SystemMessage | None
    messages: tuple[BaseMessage, ...]
    """Everything sent besides the system prompt (``system_message`` and
    ``system_messages``): history first, then in-flight."""
    history: int
    """How many leading ``messages`` came from the memory (with no context shown, the
    :data:`~opticmem.context.LEAD_NOTE` message before in-flight messages that open with
    a reply counts as history)."""
    budget: int
    system_tokens: int
    history_tokens: int
    in_flight_tokens: int
    context: Context | None = field(repr=False)
    """The memory context behind the history (``None``: no history shown)."""
    system_messages: tuple[SystemMessage, ...] = ()
    """The system prompt passed as the leading system message(s) of the agent's messages:
    sent after ``system_message`` and before ``messages``, priced in ``system_tokens``."""

    @property
    def tokens(self) -> int:
        """Total cost of what the model was sent (system prompt included)."""
        return self.system_tokens + self.history_tokens + self.in_flight_tokens

    @property
    def in_flight(self) -> tuple[BaseMessage, ...]:
        return self.messages[self.history :]

    @property
    def sent(self) -> list[BaseMessage]:
        """The messages handed on to the model call, in order: ``system_messages``, then
        ``messages`` (``create_agent`` puts ``system_message`` in front of them)."""
        return [*self.system_messages, *self.messages]

    def pages_per_tier(self) -> dict[str, int]:
        """Pages shown at each tier (``out``: archived, not shown)."""
        if self.context is None:
            return {**{t.value: 0 for t in ORDER}, "out": 0}
        return self.context.pages_per_tier()


class OpticalMemoryMiddleware(AgentMiddleware):
    """Agent middleware that records the conversation into an
    :class:`~opticmem.OpticalMemory` and shows the model its budgeted optical context.

    See the module docstring for what is sent, recorded and budgeted.

    Args:
        memory: the memory (any store; ``codec=None`` works — pages are images either way).
        session: ``None`` (the thread id), a fixed session id, or ``config -> str``.
        budget_tokens: total tokens per model call (default: ``memory.budget_tokens``).
        reserve_tokens: tokens kept free of messages (tool schemas, the reply).
        recall_tool: also register a recall tool for this memory (``make_recall_tool``)
            with the agent.
        on_view: called with a :class:`ModelView` before every model call.
    """

    def __init__(
        self,
        memory: OpticalMemory,
        *,
        session: SessionSpec = None,
        budget_tokens: int | None = None,
        reserve_tokens: int = 0,
        recall_tool: bool = False,
        on_view: Callable[[ModelView], None] | None = None,
    ) -> None:
        super().__init__()
        missing = [r for r in REQUIRED_ROLES if r not in memory.roles]
        if missing:
            raise ValueError(f"the memory must accept the roles {', '.join(missing)} to record "
                             "an agent's messages (OpticalMemory(roles=...))")
        # Whole numbers, checked here: a budget or reserve of 2400.0 passed, and every model
        # call then saw no history (the memory refused the fractional room it planned for).
        if budget_tokens is not None:
            budget_tokens = _check_budget(budget_tokens)
        reserve_tokens = whole_number(reserve_tokens, "reserve_tokens")
        budget = budget_tokens or memory.budget_tokens
        if not 0 <= reserve_tokens < budget:
            raise ValueError(f"reserve_tokens must be ≥ 0 and below the budget ({budget}), got "
                             f"{reserve_tokens}")
        self.memory = memory
        # checked here: 5 (or an empty id) failed only at the first model call
        self.session = check_session_spec(session)
        self.budget_tokens = budget_tokens
        self.reserve_tokens = reserve_tokens
        self.on_view = on_view
        self.counter = OpticalTokenCounter(memory)
        self.recorder = Recorder(memory)
        tools: list[BaseTool] = []
        if recall_tool:
            from opticmem.integrations.langchain_tools import make_recall_tool

            tools.append(make_recall_tool(memory, session=session))
        self.tools = tools

    # ------------------------------------------------------------------ scope
    def _scope(self, runtime: Runtime[Any] | None) -> tuple[str, str | None]:
        info = getattr(runtime, "execution_info", None)
        config = current_config(getattr(info, "thread_id", None))
        return resolve_session(self.session, config), thread_id(config)

    # ------------------------------------------------------------------ recording
    @staticmethod
    def _conversation(state_messages: Sequence[BaseMessage]) -> Sequence[BaseMessage]:
        """The state's messages after its leading system messages (the system prompt,
        :func:`leading_system`), which are sent on every call and never recorded."""
        return state_messages[len(leading_system(state_messages)):]

    def _catch_up(
        self, session: str, thread: str | None, conversation: Sequence[BaseMessage]
    ) -> int:
        """Record what precedes the latest user message and is not recorded yet; return
        how many leading ``conversation`` messages the memory now holds."""
        done, located = self.recorder.locate(session, thread, conversation)
        last_user = max((i for i, m in enumerate(conversation)
                         if isinstance(m, HumanMessage)), default=-1)
        if last_user > done:
            self.recorder.record(session, thread, conversation[done:last_user])
            done = last_user
        elif not located:  # the run's end records from here (Recorder.pin)
            self.recorder.pin(session, thread, conversation, done)
        return done

    def _record_rest(
        self, session: str, thread: str | None, state_messages: Sequence[BaseMessage]
    ) -> int:
        conversation = self._conversation(state_messages)
        done = self.recorder.recorded_prefix(session, thread, conversation)
        return self.recorder.record(session, thread, conversation[done:])

    # ------------------------------------------------------------------ the view
    def view(self, request: ModelRequest[Any], session: str, thread: str | None) -> ModelView:
        """Record the backlog and build what the model is shown for ``request``."""
        conversation = self._conversation(list(request.state.get("messages", [])))
        done = self._catch_up(session, thread, conversation)
        recorded = {m.id for m in conversation[:done] if m.id}
        prompt = leading_system(request.messages)
        in_flight = [m for m in request.messages[len(prompt):]
                     if not (m.id and m.id in recorded)]
        return self.assemble(session, thread, request.system_message,
                             orphan_tool_results_headed(in_flight), system_messages=prompt)

    def assemble(
        self, session: str, thread: str | None, system_message: SystemMessage | None,
        in_flight: Sequence[BaseMessage], *, system_messages: Sequence[SystemMessage] = (),
    ) -> ModelView:
        """History from the memory in the room the system prompt (``system_message``,
        then ``system_messages``) and ``in_flight`` leave."""
        budget = self.budget_tokens or self.memory.budget_tokens
        available = budget - self.reserve_tokens
        system_tokens = self.counter([*([system_message] if system_message else []),
                                      *system_messages])
        in_flight_tokens = self.counter(in_flight)
        room = available - system_tokens - in_flight_tokens
        if room < 0:
            needed = system_tokens + in_flight_tokens
            raise InFlightTooLargeError(
                f"session {session!r}: the system prompt and the run's in-flight messages cost "
                f"{needed} tokens, over the {available} available (budget {budget} - reserve "
                f"{self.reserve_tokens}); they are never cut — raise budget_tokens or shorten "
                "the tool results", needed=needed, budget=available)
        history, ctx, history_tokens = self._history(session, budget, room)
        if not history and in_flight and isinstance(in_flight[0], AIMessage):
            # no history shown and the run's own messages open with a reply (a run with
            # no user message of its own): the lead note, as a context would open with it
            note: list[BaseMessage] = [HumanMessage(content=LEAD_NOTE)]
            history_tokens = self.counter(note)
            if history_tokens > room:
                needed = system_tokens + in_flight_tokens + history_tokens
                raise InFlightTooLargeError(
                    f"session {session!r}: the system prompt and the run's in-flight "
                    f"messages, which open with an assistant's message and so need a user "
                    f"note before them, cost {needed} tokens, over the {available} "
                    f"available (budget {budget} - reserve {self.reserve_tokens})",
                    needed=needed, budget=available)
            history = note
        return ModelView(
            session=session, thread_id=thread, system_message=system_message,
            messages=(*history, *in_flight), history=len(history), budget=budget,
            system_tokens=system_tokens, history_tokens=history_tokens,
            in_flight_tokens=in_flight_tokens, context=ctx,
            system_messages=tuple(system_messages),
        )

    def _history(
        self, session: str, budget: int, room: int
    ) -> tuple[list[BaseMessage], Context | None, int]:
        """The memory context as LangChain messages costing at most ``room``.

        The context is planned for ``room`` rounded down to a step (for the newest turn
        alone when that rounds below it); the messages are priced
        again because showing tool and system turns adds a short heading to each. Over
        by that much, the context is planned again for less — never for less than the
        newest turn alone costs (:func:`newest_turn_tokens`), and for just that on the
        last try: only when that turn, headed, is over ``room`` is no history shown.
        """
        step = max(1, budget // BUDGET_STEPS)
        target = room - room % step or room  # a room under one step is planned as is
        for attempt in range(1, PLANS + 1):
            if target < 1:
                break
            try:
                ctx = self.memory.context(session, budget_tokens=target)
            except BudgetError as exc:
                # rounded down to a step, ``target`` may be below the newest turn while
                # ``room`` holds it: plan for that turn alone (``needed``) instead
                if exc.needed is None or not target < exc.needed <= room:
                    break
                target = exc.needed
                continue
            messages = context_messages(ctx.messages())
            cost = self.counter(messages)
            if cost <= room:
                return messages, ctx, cost
            floor = newest_turn_tokens(ctx, self.memory.cost_model)
            if target <= floor:
                break
            target -= cost - room
            target -= target % step
            if target < floor or attempt == PLANS - 1:  # the next plan is the last
                target = floor
        log.warning("session %r: %d tokens left for history cannot hold the newest recorded "
                    "turn; this model call sees no history", session, room)
        return [], None, 0

    # ------------------------------------------------------------------ hooks
    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any] | AIMessage:
        """Show the model the budgeted optical context instead of the full history."""
        session, thread = self._scope(request.runtime)
        view = self.view(request, session, thread)
        if self.on_view is not None:
            self.on_view(view)
        messages = cast("list[AnyMessage]", view.sent)
        return handler(request.override(messages=messages))

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResponse[Any] | AIMessage:
        """Async twin of :meth:`wrap_model_call`."""
        session, thread = self._scope(request.runtime)
        # records the backlog: a write, over before a cancellation reaches the caller
        view = await write_in_thread(self.view, request, session, thread)
        if self.on_view is not None:
            self.on_view(view)
        messages = cast("list[AnyMessage]", view.sent)
        return await handler(request.override(messages=messages))

    def after_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Record the run's messages (the user turn, tool calls and results, the answer)."""
        session, thread = self._scope(runtime)
        self._record_rest(session, thread, list(state.get("messages", [])))
        return None

    async def aafter_agent(self, state: Any, runtime: Runtime[Any]) -> dict[str, Any] | None:
        """Async twin of :meth:`after_agent`."""
        session, thread = self._scope(runtime)
        await write_in_thread(self._record_rest, session, thread,
                              list(state.get("messages", [])))
        return None


__all__ = ["BUDGET_STEPS", "InFlightTooLargeError", "ModelView", "OpticalMemoryMiddleware"]
