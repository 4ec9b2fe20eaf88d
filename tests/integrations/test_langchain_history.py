"""OpticalChatMessageHistory under RunnableWithMessageHistory (the deprecated surface)."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from opticmem import BudgetError, InvalidTurnError, OpticalMemory
from opticmem.context import LEAD_NOTE
from opticmem.integrations import OpticalChatMessageHistory, OpticalTokenCounter
from tests.integrations.fakes import SYSTEM, CapturingChatModel, capturing, image_tiers, user_text

HISTORY_BUDGET = 2000


def _chain(memory: OpticalMemory, model: CapturingChatModel) -> RunnableWithMessageHistory:
    prompt = ChatPromptTemplate.from_messages(
        [("system", SYSTEM), MessagesPlaceholder("history"), ("human", "{question}")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RunnableWithMessageHistory is deprecated (1.3.3)
        return RunnableWithMessageHistory(
            prompt | model,
            lambda session_id: OpticalChatMessageHistory(memory, session_id,
                                                         budget_tokens=HISTORY_BUDGET),
            input_messages_key="question", history_messages_key="history")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_runnable_with_message_history(mode: str) -> None:
    memory = OpticalMemory(codec=None, budget_tokens=8000, verbatim_turns=4)
    model = capturing()
    chain = _chain(memory, model)
    config: Any = {"configurable": {"session_id": "u1"}}
    questions = [user_text(i) for i in range(30)]
    for q in questions:
        if mode == "async":
            asyncio.run(chain.ainvoke({"question": q}, config))
        else:
            chain.invoke({"question": q}, config)

    counter = OpticalTokenCounter(memory)
    for i, call in enumerate(model.calls):
        assert isinstance(call[0], SystemMessage) and call[0].content == SYSTEM
        assert isinstance(call[-1], HumanMessage) and call[-1].content == questions[i]
        assert counter(call[1:-1]) <= HISTORY_BUDGET  # the history part keeps its budget
        image_tiers(call)  # every page image well-formed
        if i > 0:  # the previous exchange verbatim, just before the question
            assert call[-3].content == questions[i - 1]
            assert isinstance(call[-2], AIMessage)
    assert len(image_tiers(model.calls[-1])) >= 2
    turns = memory.turns("u1")
    assert [t.text for t in turns if t.role == "user"] == questions
    assert [t.role for t in turns] == ["user", "assistant"] * len(questions)


def test_messages_add_and_clear_sync_and_async() -> None:
    memory = OpticalMemory(codec=None)
    history = OpticalChatMessageHistory(memory, "h")
    history.add_messages([
        HumanMessage("Ship ABC-123?"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": {"id": "ABC-123"}, "id": "c1",
                                   "type": "tool_call"}]),
        ToolMessage("due 2026-03-04", tool_call_id="c1", name="lookup"),
        AIMessage(""),  # nothing to archive: skipped
    ])
    shown = history.messages
    assert [type(m).__name__ for m in shown] == ["HumanMessage", "AIMessage", "HumanMessage"]
    assert shown[1].content == '[tool call · lookup · id c1] {"id": "ABC-123"}'
    assert shown[2].content == "[Tool result · lookup · call c1]\ndue 2026-03-04"
    assert asyncio.run(history.aget_messages()) == shown
    asyncio.run(history.aadd_messages([HumanMessage("Thanks")]))
    assert history.messages[-1].content == "Thanks" and len(memory.turns("h")) == 4

    history.clear()
    assert history.messages == [] and memory.turns("h") == [] and "h" not in memory.sessions()
    history.add_messages([HumanMessage("again")])
    asyncio.run(history.aclear())
    assert asyncio.run(history.aget_messages()) == [] and memory.turns("h") == []


def test_docstring_names_the_deprecation_and_the_replacement() -> None:
    doc = OpticalChatMessageHistory.__doc__ or ""
    module_doc = __import__(OpticalChatMessageHistory.__module__, fromlist=["_"]).__doc__ or ""
    assert "deprecated" in doc.lower()
    assert "1.6.4" in module_doc and "1.3.3" in module_doc
    assert "OpticalMemoryMiddleware" in module_doc


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_messages_stay_within_the_budget_with_tool_and_system_turns(mode: str) -> None:
    # Tool and system turns are shown as headed HumanMessages; the headings used to come
    # on top of the budget (a 60-token history cost 97).
    memory = OpticalMemory(codec=None, verbatim_turns=32)
    history = OpticalChatMessageHistory(memory, "ops")
    for i in range(6):
        history.add_messages([
            HumanMessage(f"check host {i}"),
            AIMessage("", tool_calls=[{"name": "ping", "args": {"host": i}, "id": f"c{i}"}]),
            ToolMessage(f"host {i} up", tool_call_id=f"c{i}", name="ping"),
            SystemMessage("Operator: stay brief.")])
    counter = OpticalTokenCounter(memory)
    full = counter(history.messages)
    for budget in (full, full - 1, 60, 30):
        limited = OpticalChatMessageHistory(memory, "ops", budget_tokens=budget)
        shown = limited.messages if mode == "sync" else asyncio.run(limited.aget_messages())
        assert 0 < counter(shown) <= budget, budget
        assert "Operator: stay brief." in str(shown[-1].content)  # the newest turn kept
    assert len(OpticalChatMessageHistory(memory, "ops", budget_tokens=full).messages) == 24


def tool_heavy(memory: OpticalMemory, session: str) -> None:
    """Recent turns that are mostly short tool results: their headings cost more than
    their text."""
    history = OpticalChatMessageHistory(memory, session)
    for i in range(3):
        history.add_messages([HumanMessage(f"check item {i}")])
        for j in range(3):
            call = f"call_Zq8vN3xR5tY7uI9oP1aS2d{i}{j}"
            history.add_messages([
                AIMessage("", tool_calls=[{"name": "get_status", "args": {}, "id": call}]),
                ToolMessage("ok", tool_call_id=call, name="get_status")])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_any_budget_that_holds_the_newest_turn_shows_it_when_headings_outweigh_turns(
        mode: str) -> None:
    # Planning for less by the headings' cost went below what the newest turn alone costs:
    # 60 tokens showed the newest turn, 80 raised BudgetError for it.
    memory = OpticalMemory(codec=None)
    tool_heavy(memory, "ops")
    counter = OpticalTokenCounter(memory)
    newest = counter(OpticalChatMessageHistory(memory, "ops", budget_tokens=60).messages)
    for budget in range(newest, 400, 10):
        limited = OpticalChatMessageHistory(memory, "ops", budget_tokens=budget)
        messages = limited.messages if mode == "sync" else asyncio.run(limited.aget_messages())
        assert 0 < counter(messages) <= budget, budget
        assert str(messages[-1].content).startswith("[Tool result · get_status · call "), budget
    limited = OpticalChatMessageHistory(memory, "ops", budget_tokens=newest - 1)
    assert limited.messages == []  # the newest turn alone is over: no history, logged


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_newest_turn_over_the_budget_shows_no_history_instead_of_raising(
        mode: str, caplog: pytest.LogCaptureFixture) -> None:
    """A reply longer than the history's budget stays the newest turn until the chain adds
    the next one, which it cannot do while reading the history raises: the session was
    stuck. Now that call shows no history (as the middleware does) and says so."""
    memory = OpticalMemory(codec=None)
    history = OpticalChatMessageHistory(memory, "u1", budget_tokens=300)
    history.add_messages([HumanMessage("question"), AIMessage("long answer " * 400)])
    with caplog.at_level("WARNING", logger="opticmem.integrations.langchain_history"):
        shown = history.messages if mode == "sync" else asyncio.run(history.aget_messages())
    assert shown == []
    assert "shows no history" in caplog.text and "'u1'" in caplog.text
    history.add_messages([HumanMessage("next question"), AIMessage("short")])  # not stuck
    shown = history.messages if mode == "sync" else asyncio.run(history.aget_messages())
    assert [m.content for m in shown][-2:] == ["next question", "short"]
    assert len(memory.turns("u1")) == 4


@pytest.mark.parametrize("budget", [0, -5, float("nan"), 2.5, True, "100"])
def test_an_invalid_budget_is_refused_at_construction(budget: Any) -> None:
    # it was kept, and only refused when ``messages`` was first read
    memory = OpticalMemory(codec=None)
    with pytest.raises(BudgetError, match="budget_tokens"):
        OpticalChatMessageHistory(memory, "alice", budget_tokens=budget)
    history = OpticalChatMessageHistory(memory, "alice", budget_tokens=100)
    assert history.budget_tokens == 100


@pytest.mark.parametrize("bad", [None, "hello", HumanMessage("hi"),
                                 {"role": "user", "content": "x"},
                                 [HumanMessage("kept?"), "plain text"], [{"role": "user"}], [5]])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_add_messages_refuses_what_is_not_a_list_of_messages_and_stores_nothing(
        bad: Any, mode: str) -> None:
    """A string, a dict, one message (a pydantic model iterates as its fields) or a list
    holding anything but messages failed with a bare AttributeError or TypeError; it is an
    InvalidTurnError naming what was passed, and what the session held stays as it was."""
    memory = OpticalMemory(codec=None)
    history = OpticalChatMessageHistory(memory, "u1")
    history.add_messages([HumanMessage("first"), AIMessage("reply")])
    with pytest.raises(InvalidTurnError, match="LangChain message"):
        if mode == "async":
            asyncio.run(history.aadd_messages(bad))
        else:
            history.add_messages(bad)
    assert [t.text for t in memory.turns("u1")] == ["first", "reply"]


def test_add_messages_takes_any_iterable_of_messages() -> None:
    memory = OpticalMemory(codec=None)
    history = OpticalChatMessageHistory(memory, "u1")
    history.add_messages(m for m in [HumanMessage("a"), AIMessage("b")])
    history.add_messages((HumanMessage("c"),))
    assert [t.text for t in memory.turns("u1")] == ["a", "b", "c"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_history_that_keeps_a_reply_but_not_its_prompt_opens_with_a_user_note(
        mode: str) -> None:
    # RunnableWithMessageHistory reads the history before adding the new question, so its
    # newest turn is the last reply: under a tight budget that was all it held, and the
    # prompt sent to the model opened (after the system message) with the assistant,
    # which Anthropic and Bedrock Converse refuse
    memory = OpticalMemory(codec=None)
    reply = "Milestones: design freeze on March 4, beta on March 18."
    full = OpticalChatMessageHistory(memory, "u1")
    full.add_messages([HumanMessage("Draft the Titan launch plan, milestone by milestone. " * 12),
                       AIMessage(reply)])
    counter = OpticalTokenCounter(memory)
    budget = counter([HumanMessage(LEAD_NOTE), AIMessage(reply)])
    limited = OpticalChatMessageHistory(memory, "u1", budget_tokens=budget)
    shown = limited.messages if mode == "sync" else asyncio.run(limited.aget_messages())
    assert [(type(m).__name__, m.content) for m in shown] == [
        ("HumanMessage", LEAD_NOTE), ("AIMessage", reply)]
    assert counter(shown) <= budget
    shown = full.messages  # the whole budget: as before, the prompt first and no note
    assert isinstance(shown[0], HumanMessage) and shown[0].content != LEAD_NOTE
    assert [type(m).__name__ for m in shown] == ["HumanMessage", "AIMessage"]
    # one token short of the note and the reply: the reply alone cannot be shown, and the
    # history is empty (logged), not a conversation opening with the assistant
    tight = OpticalChatMessageHistory(memory, "u1", budget_tokens=budget - 1)
    assert tight.messages == []
