"""OpticalMemoryMiddleware in a real create_agent loop: exactly what the model is sent."""

from __future__ import annotations

import asyncio
import base64
import io
import random
import threading
from typing import Any

import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from opticmem import InMemoryStore, InvalidSessionError, OpticalMemory, message_tokens
from opticmem.context import LEAD_NOTE
from opticmem.integrations import (
    InFlightTooLargeError,
    ModelView,
    OpticalMemoryMiddleware,
    OpticalTokenCounter,
)
from opticmem.integrations.langchain_recording import Recorder, cursor_key
from opticmem.integrations.langchain_session import resolve_session
from opticmem.integrations.langchain_tools import make_recall_tool
from tests.integrations.fakes import (
    SYSTEM,
    CapturingChatModel,
    capturing,
    image_tiers,
    user_text,
)

BUDGET = 2400
RANKS = ["tiny", "small", "base", "large"]
REPLY0 = "Noted #0: understood, I have written that down with its reference."


def make_agent(memory: OpticalMemory, model: CapturingChatModel, *, tools: list[Any] | None = None,
               **kwargs: Any) -> tuple[Any, list[ModelView]]:
    views: list[ModelView] = []
    middleware = OpticalMemoryMiddleware(memory, on_view=views.append, **kwargs)
    agent = create_agent(model, tools=tools or [], system_prompt=SYSTEM, middleware=[middleware],
                         checkpointer=InMemorySaver())
    return agent, views


def run(agent: Any, text: str | list[Any], thread: str, mode: str) -> dict[str, Any]:
    payload = {"messages": [HumanMessage(content=text)]}
    config = {"configurable": {"thread_id": thread}}
    if mode == "async":
        return asyncio.run(agent.ainvoke(payload, config))
    return agent.invoke(payload, config)


def as_dicts(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """What was sent, as plain dicts ``message_tokens`` prices (text and PNG blocks only)."""
    return [{"role": m.type, "content": m.content} for m in messages]


@pytest.fixture
def memory() -> OpticalMemory:
    return OpticalMemory(codec=None, budget_tokens=BUDGET, verbatim_turns=4)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_model_sees_budgeted_optical_context(memory: OpticalMemory, mode: str) -> None:
    model = capturing()
    agent, views = make_agent(memory, model)
    sent_users: list[str] = []
    n_runs = 40
    for i in range(n_runs):
        sent_users.append(user_text(i))
        run(agent, sent_users[-1], "t1", mode)

    assert len(model.calls) == n_runs == len(views)
    model_cost = memory.cost_model
    tiers_seen: set[str] = set()
    for i, (call, view) in enumerate(zip(model.calls, views, strict=True)):
        # The system prompt first, exactly as given.
        assert isinstance(call[0], SystemMessage) and call[0].content == SYSTEM
        assert not any(isinstance(m, SystemMessage) for m in call[1:])
        # Never over budget, priced independently with the memory's own cost model.
        assert message_tokens(as_dicts(call), model_cost) <= BUDGET
        assert OpticalTokenCounter(memory)(call) == view.tokens <= BUDGET
        # The in-flight user turn last and verbatim; the previous exchange verbatim before it.
        assert isinstance(call[-1], HumanMessage) and call[-1].content == sent_users[i]
        if i > 0:
            assert isinstance(call[-2], AIMessage)
            assert str(call[-2].content).startswith(f"Noted #{i - 1}:")
            assert isinstance(call[-3], HumanMessage) and call[-3].content == sent_users[i - 1]
        # Pages: well-formed PNG blocks of the captioned tier, older pages never sharper.
        tiers = image_tiers(call)
        assert [RANKS.index(t) for t in tiers] == sorted(RANKS.index(t) for t in tiers)
        shown = view.pages_per_tier()
        assert sorted(tiers) == sorted(t for t in RANKS for _ in range(shown[t]))
        tiers_seen.update(tiers)
    assert {"large", "base"} <= tiers_seen, tiers_seen  # decay actually happened
    assert views[-1].context is not None and views[-1].context.pages

    # The agent's state is untouched: the checkpointer holds the full history, verbatim.
    state = agent.get_state({"configurable": {"thread_id": "t1"}}).values["messages"]
    assert [m.content for m in state if isinstance(m, HumanMessage)] == sent_users
    assert len(state) == 2 * n_runs
    # Each message was recorded once, in order.
    turns = memory.turns("t1")
    assert [(t.role, t.text) for t in turns] == [
        ("user" if isinstance(m, HumanMessage) else "assistant", m.content) for m in state]
    assert [t.meta["lc_id"] for t in turns] == [m.id for m in state]


def test_two_threads_are_kept_apart(memory: OpticalMemory) -> None:
    model = capturing()
    agent, views = make_agent(memory, model)
    for i in range(12):
        run(agent, user_text(i, tag="[red] "), "red", "sync")
        run(agent, user_text(i, tag="[blue] "), "blue", "sync")
    for call, view in zip(model.calls, views, strict=True):
        other = "[blue]" if view.session == "red" else "[red]"
        assert not any(other in str(m.content) for m in call)
    assert {v.session for v in views} == {"red", "blue"}
    assert len(memory.turns("red")) == len(memory.turns("blue")) == 24
    assert all("[red]" in t.text for t in memory.turns("red") if t.role == "user")


def _weather_script() -> Any:
    """One tool call, then an answer; repeated for every run."""
    i = 0
    while True:
        yield AIMessage(content="", tool_calls=[{
            "name": "get_weather", "args": {"city": f"Paris{i}"}, "id": f"call_{i}",
            "type": "tool_call"}])
        yield AIMessage(content=f"It is sunny in Paris{i}.")
        i += 1


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Weather for {city}: sunny, 21 C."


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_chain_in_flight_and_recorded_once(memory: OpticalMemory, mode: str) -> None:
    model = capturing(_weather_script())
    agent, _ = make_agent(memory, model, tools=[get_weather])
    for i in range(3):
        run(agent, f"What's the weather in Paris{i}?", "w", mode)
    assert len(model.calls) == 6
    # The second call of a run sees its whole in-flight chain verbatim and structured.
    second = model.calls[3]
    human, call, result = second[-3:]
    assert isinstance(human, HumanMessage) and human.content == "What's the weather in Paris1?"
    assert isinstance(call, AIMessage) and call.tool_calls[0]["id"] == "call_1"
    assert isinstance(result, ToolMessage) and result.tool_call_id == "call_1"
    # Earlier runs' chains come from the memory as text (no orphan ToolMessage).
    assert not any(isinstance(m, ToolMessage) for m in second[:-3])
    history = [str(m.content) for m in second[1:-3]]
    assert '[tool call · get_weather · id call_0] {"city": "Paris0"}' in history
    assert "[Tool result · get_weather · call call_0]\nWeather for Paris0: sunny, 21 C." in history
    # Recorded exactly once across model calls and runs: 4 turns per run.
    turns = memory.turns("w")
    assert [t.role for t in turns] == ["user", "assistant", "tool", "assistant"] * 3
    assert turns[2].meta["tool_call_id"] == "call_0" and turns[2].meta["name"] == "get_weather"
    assert turns[1].meta["tool_calls"] == [{"id": "call_0", "name": "get_weather"}]
    assert len({t.meta["lc_id"] for t in turns}) == len(turns)


def test_in_flight_over_budget_raises_and_loses_nothing(memory: OpticalMemory) -> None:
    model = capturing()
    agent, _ = make_agent(memory, model)
    run(agent, "hello", "big", "sync")
    huge = "word " * 5000  # ~5000 tokens, over the 2400 budget on its own
    with pytest.raises(InFlightTooLargeError) as err:
        run(agent, huge, "big", "sync")
    assert err.value.needed > err.value.budget == BUDGET
    assert len(model.calls) == 1  # the model was never sent the over-budget request
    state = agent.get_state({"configurable": {"thread_id": "big"}}).values["messages"]
    assert state[-1].content == huge  # the agent's state kept it
    # The next run records the interrupted one's message and goes on (its own fits).
    run(agent, "shorter, please", "big", "sync")
    texts = [t.text for t in memory.turns("big")]
    assert texts == ["hello", REPLY0, huge, "shorter, please",
                     "Noted #1: understood, I have written that down with its reference."]
    # The huge turn is now the newest history turn and cannot fit: no history this call.
    assert [m.content for m in model.calls[-1]] == [SYSTEM, "shorter, please"]


def test_reserve_tokens_and_budget_override() -> None:
    memory = OpticalMemory(codec=None, budget_tokens=50_000, verbatim_turns=4)
    model = capturing()
    agent, views = make_agent(memory, model, budget_tokens=2000, reserve_tokens=500)
    for i in range(25):
        run(agent, user_text(i), "r", "sync")
    counter = OpticalTokenCounter(memory)
    assert all(counter(call) <= 1500 for call in model.calls)
    assert all(v.budget == 2000 for v in views)
    assert max(counter(call) for call in model.calls) > 1200  # the room was used


def test_history_dropped_when_room_cannot_hold_newest_turn() -> None:
    memory = OpticalMemory(codec=None, budget_tokens=400, verbatim_turns=4)
    model = capturing()
    agent, views = make_agent(memory, model)
    run(agent, "hello", "d", "sync")
    newest = OpticalTokenCounter(memory).message(AIMessage(REPLY0))  # the newest recorded turn
    run(agent, "y " * 375, "d", "sync")  # in-flight leaves less room than that turn needs
    room = 400 - views[-1].system_tokens - views[-1].in_flight_tokens
    assert 0 <= room < newest
    assert views[-1].history == 0 and views[-1].context is None
    assert OpticalTokenCounter(memory)(model.calls[-1]) <= 400


def test_bad_input_is_handled_and_nothing_is_lost(memory: OpticalMemory) -> None:
    png = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(png, format="PNG")
    b64 = base64.b64encode(png.getvalue()).decode()
    blocks = [{"type": "text", "text": "What is in this picture?"},
              {"type": "image", "base64": b64, "mime_type": "image/png"},
              {"type": "text", "text": "Ticket XY-9."}]
    script = iter([AIMessage(content=""), AIMessage(content="A white box."),
                   *[f"ok {i}" for i in range(5)]])
    model = capturing(script)  # type: ignore[arg-type]
    memory_small = OpticalMemory(codec=None, budget_tokens=BUDGET, verbatim_turns=4,
                                 max_turn_chars=500)
    agent, _ = make_agent(memory_small, model)
    run(agent, blocks, "bad", "sync")               # blocks in; an empty answer out
    assert model.calls[0][-1].content == blocks     # in flight: the original blocks
    run(agent, "And now?", "bad", "sync")
    huge = "".join(f"line {i} of a long paste\n" for i in range(100))  # > max_turn_chars
    run(agent, huge, "bad", "sync")
    turns = memory_small.turns("bad")
    # The image became a marker; the empty answer was skipped; the paste was split.
    assert turns[0].text == ("What is in this picture?\n[image/png attachment, not archived]\n"
                             "Ticket XY-9.")
    assert [t.role for t in turns[:3]] == ["user", "user", "assistant"]
    parts = [t for t in turns if "part" in t.meta]
    assert "".join(t.text for t in parts) == huge and len(parts) == -(-len(huge) // 500)
    # The empty answer and the blocks are still in the agent's state.
    state = agent.get_state({"configurable": {"thread_id": "bad"}}).values["messages"]
    assert state[0].content == blocks and state[1].content == ""
    # Shown later as history, as text with the marker.
    assert any("[image/png attachment, not archived]" in str(m.content) for m in model.calls[-1])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_lone_surrogates_in_ids_and_names_do_not_jam_the_thread(
    memory: OpticalMemory, mode: str
) -> None:
    # A name cut mid-emoji by a UTF-16 client ("Ann \ud83d"), or such an id, made the
    # memory refuse the message's metadata: every later run recorded it again and failed.
    model = capturing()
    agent, _ = make_agent(memory, model, session="s")  # the thread id is no session id
    config = {"configurable": {"thread_id": "t\udc80"}}
    for i in range(3):
        payload = {"messages": [HumanMessage(f"hello {i}", name="Ann \ud83d", id=f"m{i}\ud800")]}
        if mode == "async":
            asyncio.run(agent.ainvoke(payload, config))
        else:
            agent.invoke(payload, config)
    turns = memory.turns("s")
    assert [t.text for t in turns if t.role == "user"] == ["hello 0", "hello 1", "hello 2"]
    assert len(turns) == 6  # each message recorded once
    assert turns[0].meta["name"] == "Ann \ufffd" and turns[0].meta["lc_id"] == "m0\ufffd"


def test_session_override_fixed_and_callable(memory: OpticalMemory) -> None:
    model = capturing()
    agent, views = make_agent(memory, model, session="alice")
    run(agent, "first thread", "t-a", "sync")
    run(agent, "second thread", "t-b", "sync")
    assert [t.text for t in memory.turns("alice") if t.role == "user"] == [
        "first thread", "second thread"]
    assert [v.session for v in views] == ["alice", "alice"]

    def pick(config: Any) -> str:
        return "user:" + str(config["configurable"]["user"])

    agent2, views2 = make_agent(memory, capturing(), session=pick)
    agent2.invoke({"messages": [HumanMessage("hi")]},
                  {"configurable": {"thread_id": "x", "user": "bob"}})
    assert views2[0].session == "user:bob" and memory.turns("user:bob")[0].text == "hi"


def test_no_thread_and_no_session_is_a_clear_error(memory: OpticalMemory) -> None:
    agent = create_agent(capturing(), tools=[], middleware=[OpticalMemoryMiddleware(memory)])
    with pytest.raises(InvalidSessionError, match="thread id"):
        agent.invoke({"messages": [HumanMessage("hi")]})
    # Without a checkpointer but with a fixed session, the memory is the history.
    model = capturing()
    agent = create_agent(model, tools=[], middleware=[OpticalMemoryMiddleware(memory, session="s")])
    agent.invoke({"messages": [HumanMessage("one")]})
    agent.invoke({"messages": [HumanMessage("two")]})
    assert [m.content for m in model.calls[1]] == ["one", REPLY0, "two"]
    assert [t.text for t in memory.turns("s")][::2] == ["one", "two"]


def test_recorder_recovers_a_lost_or_stale_cursor(memory: OpticalMemory) -> None:
    recorder = Recorder(memory)
    msgs: list[BaseMessage] = [HumanMessage(f"m{i}", id=f"id{i}") for i in range(6)]
    assert recorder.record("s", "t", msgs[:4]) == 4
    assert recorder.recorded_prefix("s", "t", msgs) == 4
    # A crash after appending but before moving the cursor: the ids decide.
    memory.add("s", "user", "m4", meta={"lc_id": "id4"})
    assert recorder.recorded_prefix("s", "t", msgs) == 5
    # A cursor that points nowhere in the state (state rewritten): the ids decide.
    memory.store.put_state("s", cursor_key("t"), b'{"id": "feedface"}')
    assert recorder.recorded_prefix("s", "t", msgs) == 5
    # Another thread on the same session has its own cursor.
    assert recorder.recorded_prefix("s", "other", [HumanMessage("new", id="n1")]) == 0


@pytest.mark.parametrize("raw", [b"not json", b"\xff\xfe", b"[1]", b'"x"', b"null",
                                 b'{"id": 5}'])
def test_an_unreadable_cursor_is_recovered_from_the_ids(
    memory: OpticalMemory, raw: bytes
) -> None:
    # a damaged cursor failed every model call of its thread with a bare JSONDecodeError
    # or AttributeError; the ids decide instead, as for a lost cursor
    recorder = Recorder(memory)
    msgs: list[BaseMessage] = [HumanMessage(f"m{i}", id=f"id{i}") for i in range(3)]
    recorder.record("s", "t", msgs[:2])
    memory.store.put_state("s", cursor_key("t"), raw)
    assert recorder.recorded_prefix("s", "t", msgs) == 2
    recorder.record("s", "t", msgs[2:])  # rewrites the cursor
    assert recorder.recorded_prefix("s", "t", msgs) == 3
    assert [t.text for t in memory.turns("s")] == ["m0", "m1", "m2"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_threads_of_one_session_may_reuse_message_ids(memory: OpticalMemory, mode: str) -> None:
    # Ids are the user's to choose: a second thread's message "1" was taken as recorded
    # because the first thread's message "1" was among the session's newest turns, and
    # was never stored (each message is to reach the memory exactly once).
    agent, _ = make_agent(memory, capturing(), session="alice")
    for thread, text in [("t1", "hello from t1"), ("t2", "something else in t2")]:
        payload = {"messages": [HumanMessage(text, id="1")]}
        config = {"configurable": {"thread_id": thread}}
        if mode == "async":
            asyncio.run(agent.ainvoke(payload, config))
        else:
            agent.invoke(payload, config)
    assert [t.text for t in memory.turns("alice") if t.role == "user"] == [
        "hello from t1", "something else in t2"]
    assert len(memory.turns("alice")) == 4
    recorder = Recorder(memory)
    assert recorder.recorded_prefix("alice", "t3", [HumanMessage("new", id="1")]) == 0
    # a thread's own crash recovery still goes by its ids (its cursor lost here)
    memory.store.put_state("alice", cursor_key("t2"), b'{"id": "feedface"}')
    assert recorder.recorded_prefix("alice", "t2", [HumanMessage("x", id="1")]) == 1


def test_memory_without_tool_role_is_refused() -> None:
    with pytest.raises(ValueError, match="tool"):
        OpticalMemoryMiddleware(OpticalMemory(codec=None, roles=("user", "assistant", "system")))


def test_bad_budget_arguments(memory: OpticalMemory) -> None:
    with pytest.raises(ValueError, match="reserve_tokens"):
        OpticalMemoryMiddleware(memory, reserve_tokens=BUDGET)
    with pytest.raises(ValueError, match="reserve_tokens"):
        OpticalMemoryMiddleware(memory, budget_tokens=100, reserve_tokens=-1)
    with pytest.raises(ValueError, match="budget_tokens"):
        OpticalMemoryMiddleware(memory, budget_tokens=0)


@pytest.mark.parametrize("options", [
    {"budget_tokens": 2400.0}, {"budget_tokens": float("nan")}, {"budget_tokens": True},
    {"budget_tokens": "2400"}, {"reserve_tokens": 10.5}, {"reserve_tokens": "0"},
])
def test_budget_options_that_are_not_whole_numbers_are_refused(
    memory: OpticalMemory, options: dict[str, Any]
) -> None:
    # budget_tokens=2400.0 (from a config file) was taken, and every model call then saw
    # no history: the memory refused the fractional room planned for it
    with pytest.raises(ValueError, match=f"{next(iter(options))} must be a whole number"):
        OpticalMemoryMiddleware(memory, **options)


@pytest.mark.parametrize("session", [5, b"alice", ["alice"], "", "a\ud800"])
def test_a_session_option_of_no_kind_it_takes_is_refused_where_it_is_given(
    memory: OpticalMemory, session: Any
) -> None:
    # session=5 was kept, and every model call then failed with a bare TypeError
    # ("'int' object is not callable"); an empty id only at the first model call
    with pytest.raises(InvalidSessionError, match="session"):
        OpticalMemoryMiddleware(memory, session=session)
    with pytest.raises(InvalidSessionError, match="session"):
        make_recall_tool(memory, session=session)
    with pytest.raises(InvalidSessionError, match="session"):
        resolve_session(session, {"configurable": {"thread_id": "t"}})


def test_history_is_shown_whenever_the_room_holds_the_newest_turn_with_its_heading() -> None:
    # Short tool results cost less than their "[Tool result · NAME · call ID]" headings;
    # planning for less by the headings' cost went below what the newest turn alone
    # costs, and the model silently saw no history at all (150 tokens: none, 100: some).
    memory = OpticalMemory(codec=None)
    recorder = Recorder(memory)
    for i in range(3):
        recorder.record("ops", None, [HumanMessage(f"check item {i}", id=f"h{i}")])
        for j in range(3):
            call = f"call_Zq8vN3xR5tY7uI9oP1aS2d{i}{j}"
            recorder.record("ops", None, [
                AIMessage("", tool_calls=[{"name": "get_status", "args": {}, "id": call}]),
                ToolMessage("ok", tool_call_id=call, name="get_status")])
    counter = OpticalTokenCounter(memory)
    newest = counter([HumanMessage("[Tool result · get_status · call "
                                   "call_Zq8vN3xR5tY7uI9oP1aS2d22]\nok")])
    for budget in range(newest, 400, 10):
        view = OpticalMemoryMiddleware(memory, budget_tokens=budget).assemble(
            "ops", None, None, [])
        assert view.history > 0, budget
        assert view.tokens <= budget
        assert view.messages[-1].content == "[Tool result · get_status · call " \
            "call_Zq8vN3xR5tY7uI9oP1aS2d22]\nok"


def test_history_is_shown_when_the_room_holds_the_newest_turn_between_budget_steps() -> None:
    # The history's budget is rounded down to 1/64 of the whole budget (128 of 8192); a
    # room that held the newest turn but rounded down below it showed no history at all,
    # and a room under one step (rounded to 0) never showed any.
    memory = OpticalMemory(codec=None, budget_tokens=8192)
    text = " ".join(f"word{i}" for i in range(400))
    Recorder(memory).record("s", None, [HumanMessage(text, id="h1")])
    newest = OpticalTokenCounter(memory).message(HumanMessage(text))
    for room in range(newest, newest + 128, 9):
        view = OpticalMemoryMiddleware(memory, reserve_tokens=8192 - room).assemble(
            "s", None, None, [])
        assert view.history == 1, room
        assert view.tokens <= room
    Recorder(memory).record("t", None, [HumanMessage("hello", id="h2")])
    view = OpticalMemoryMiddleware(memory, reserve_tokens=8192 - 50).assemble("t", None, None, [])
    assert [m.content for m in view.messages] == ["hello"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_error_result_for_a_recorded_invalid_tool_call_is_not_sent_as_a_tool_message(
    mode: str,
) -> None:
    # A run that ends on an invalid tool call is recorded; on the next run create_agent
    # answers that call with an error ToolMessage, in flight. Its call is in the history
    # only as text, and a ToolMessage answering no tool call is rejected by chat APIs.
    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "12C"

    memory = OpticalMemory(codec=None)
    bad = AIMessage("", invalid_tool_calls=[{"type": "invalid_tool_call", "name": "weather",
                                             "args": '{"city": "Seo', "id": "call_9",
                                             "error": "truncated"}])
    model = capturing(iter([bad, "It is 12C.", "Anything else?"]))
    agent, _ = make_agent(memory, model, tools=[weather])
    run(agent, "Weather in Seoul?", "w", mode)
    run(agent, "Well?", "w", mode)
    sent = model.calls[-1]
    assert not any(isinstance(m, ToolMessage) for m in sent)
    assert any(m.content == "[Tool result · weather · call call_9]\nTool call weather with id "
               "call_9 could not be executed - arguments were malformed or truncated."
               for m in sent)
    run(agent, "Thanks.", "w", mode)
    assert [t.role for t in memory.turns("w")] == [
        "user", "assistant", "tool", "user", "assistant", "user", "assistant"]


PERSONA = "You are Ada, the ops assistant of ACME. Always cite the work order number."


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_leading_system_message_in_the_input_is_the_system_prompt(
    memory: OpticalMemory, mode: str,
) -> None:
    # Users often pass the system prompt as the input's first message. It was recorded as
    # a ``system`` turn, shown back as "[System message]" history and decayed into page
    # images like old chat; it is the system prompt: sent as text on every call, after
    # create_agent's own ``system_prompt`` (as create_agent sends both), never recorded.
    model = capturing()
    agent, views = make_agent(memory, model)
    config = {"configurable": {"thread_id": "p"}}
    first = {"messages": [SystemMessage(PERSONA), HumanMessage(user_text(0))]}
    if mode == "async":
        asyncio.run(agent.ainvoke(first, config))
    else:
        agent.invoke(first, config)
    for i in range(1, 30):  # the checkpointer keeps the SystemMessage first in the state
        run(agent, user_text(i), "p", mode)
    counter = OpticalTokenCounter(memory)
    for call, view in zip(model.calls, views, strict=True):
        assert [m.content for m in call[:2]] == [SYSTEM, PERSONA]
        assert all(isinstance(m, SystemMessage) for m in call[:2])
        assert not any(isinstance(m, SystemMessage) for m in call[2:])
        assert not any("[System message]" in str(m.content) for m in call)
        assert view.system_messages == (SystemMessage(PERSONA, id=view.system_messages[0].id),)
        assert view.system_tokens == counter([SystemMessage(SYSTEM), SystemMessage(PERSONA)])
        assert counter(call) == view.tokens <= BUDGET
    assert {"large", "base"} <= set(image_tiers(model.calls[-1]))  # old chat did decay
    state = agent.get_state(config).values["messages"]
    assert isinstance(state[0], SystemMessage)
    turns = memory.turns("p")
    assert [t.meta["lc_id"] for t in turns] == [m.id for m in state[1:]]
    assert "system" not in {t.role for t in turns}


def test_leading_system_message_without_checkpointer_or_system_prompt(
    memory: OpticalMemory,
) -> None:
    # Without a checkpointer the input (system message included) is the whole state on
    # every run: the system prompt is sent each time and still never recorded.
    model = capturing()
    agent = create_agent(model, tools=[], middleware=[OpticalMemoryMiddleware(memory,
                                                                              session="s")])
    for text in ("one", "two"):
        agent.invoke({"messages": [SystemMessage(PERSONA), HumanMessage(text)]})
    assert [(type(m), m.content) for m in model.calls[1]] == [
        (SystemMessage, PERSONA), (HumanMessage, "one"), (AIMessage, REPLY0),
        (HumanMessage, "two")]
    assert [t.role for t in memory.turns("s")] == ["user", "assistant"] * 2


def test_system_message_mid_conversation_is_still_a_recorded_turn(memory: OpticalMemory) -> None:
    model = capturing()
    agent, _ = make_agent(memory, model)
    config = {"configurable": {"thread_id": "m"}}
    agent.invoke({"messages": [SystemMessage(PERSONA), HumanMessage("hi")]}, config)
    agent.invoke({"messages": [SystemMessage("The user is now on the premium plan."),
                               HumanMessage("what plan am I on?")]}, config)
    run(agent, "thanks", "m", "sync")
    assert [t.role for t in memory.turns("m")] == [
        "user", "assistant", "system", "user", "assistant", "user", "assistant"]
    assert "[System message]\nThe user is now on the premium plan." in [
        m.content for m in model.calls[-1]]
    assert [m.content for m in model.calls[-1][:2]] == [SYSTEM, PERSONA]


def test_leading_system_message_is_priced_and_never_cut(memory: OpticalMemory) -> None:
    model = capturing()
    agent, _ = make_agent(memory, model)
    with pytest.raises(InFlightTooLargeError) as err:
        agent.invoke({"messages": [SystemMessage("rule " * 3000), HumanMessage("hi")]},
                     {"configurable": {"thread_id": "big"}})
    assert err.value.needed > BUDGET and not model.calls


def test_a_refusal_is_recorded_and_shown_back(memory: OpticalMemory) -> None:
    # langchain-openai returns a refusal as an empty AIMessage with the text in
    # additional_kwargs["refusal"]: the assistant's turn vanished from the archive.
    refusal = AIMessage("", additional_kwargs={"refusal": "I can't help with that."})
    model = capturing(iter([refusal, "It is a policy matter."]))
    agent, _ = make_agent(memory, model)
    run(agent, "How do I pick this lock?", "r", "sync")
    run(agent, "Why not?", "r", "sync")
    assert [(t.role, t.text) for t in memory.turns("r")] == [
        ("user", "How do I pick this lock?"), ("assistant", "I can't help with that."),
        ("user", "Why not?"), ("assistant", "It is a policy matter.")]
    assert [(type(m), m.content) for m in model.calls[-1][1:]] == [
        (HumanMessage, "How do I pick this lock?"), (AIMessage, "I can't help with that."),
        (HumanMessage, "Why not?")]


def test_a_photo_in_a_format_pillow_cannot_read_does_not_fail_the_run(
        memory: OpticalMemory) -> None:
    # A HEIC photo (an iPhone's; Gemini takes it) made the counter raise "cannot read the
    # size of an image block", so every such run failed before the model was called.
    heic = base64.b64encode(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
                            + bytes(64)).decode()
    photo = [{"type": "text", "text": "What is in this photo?"},
             {"type": "image", "base64": heic, "mime_type": "image/heic"}]
    model = capturing()
    agent, views = make_agent(memory, model)
    run(agent, photo, "p", "sync")
    assert model.calls[0][-1].content == photo  # sent as it came
    counter = OpticalTokenCounter(memory)
    assert views[0].in_flight_tokens == (
        counter([HumanMessage(photo[:1])]) + counter.unknown_image_tokens)
    assert memory.turns("p")[0].text == (
        "What is in this photo?\n[image/heic attachment, not archived]")


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_photo_as_an_image_url_string_is_priced_and_recorded_as_an_image(
        memory: OpticalMemory, mode: str) -> None:
    # ``{"type": "image_url", "image_url": "data:..."}`` (the URL string itself, the form
    # ChatGoogleGenerativeAI takes) reaches LangChain's content_blocks as a non_standard
    # block: the counter priced its base64 as text (~170,000 tokens for an 800x600
    # photo), so the run failed with InFlightTooLargeError, and the archive said
    # "[image_url block]".
    pixels = random.Random(0).randbytes(800 * 600 * 3)
    jpeg = io.BytesIO()
    Image.frombytes("RGB", (800, 600), pixels).save(jpeg, format="JPEG", quality=85)
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg.getvalue()).decode()
    photo = [{"type": "text", "text": "What is in this photo?"},
             {"type": "image_url", "image_url": url}]
    model = capturing()
    agent, views = make_agent(memory, model)
    run(agent, photo, "g", mode)
    assert model.calls[0][-1].content == photo  # sent as it came
    counter = OpticalTokenCounter(memory)
    assert views[0].in_flight_tokens == (
        counter([HumanMessage(photo[:1])]) + counter.image_tokens(800, 600))
    assert memory.turns("g")[0].text == (
        "What is in this photo?\n[image/jpeg attachment, not archived]")


def test_a_timed_out_async_recording_is_over_before_the_next_run_records() -> None:
    """``aafter_agent`` recorded in ``asyncio.to_thread``: an agent run timed out while it
    recorded left that thread running, and the next run, finding nothing recorded yet,
    recorded the same messages again (every turn of the run stored twice). The recording
    is now over before the cancellation reaches the caller."""
    gate = threading.Event()

    class SlowStore(InMemoryStore):
        def append_turns(self, session: str, items: Any) -> Any:
            assert gate.wait(30)
            return super().append_turns(session, items)

    memory = OpticalMemory(SlowStore(), codec=None, budget_tokens=BUDGET)
    middleware = OpticalMemoryMiddleware(memory, session="s")
    first = [HumanMessage("hi", id="h1"), AIMessage("hello", id="a1")]
    second = [*first, HumanMessage("again", id="h2"), AIMessage("yes", id="a2")]

    async def go() -> None:
        threading.Timer(0.2, gate.set).start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(middleware.aafter_agent({"messages": first}, None), 0.01)
        await middleware.aafter_agent({"messages": second}, None)  # type: ignore[arg-type]

    asyncio.run(go())
    assert [t.text for t in memory.turns("s")] == ["hi", "hello", "again", "yes"]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_without_a_checkpointer_a_conversation_passed_whole_is_recorded_once(
        memory: OpticalMemory, mode: str) -> None:
    """An app with no checkpointer keeps its own list of message dicts and passes it whole
    to every run, as ``create_agent`` is used without one. LangGraph gives those messages
    fresh ids on every run, so the cursor and the ids recognised none of them: each run
    recorded the whole conversation again, and the model was shown it as many times."""
    model = capturing()
    views: list[ModelView] = []
    agent = create_agent(model, system_prompt=SYSTEM, middleware=[
        OpticalMemoryMiddleware(memory, session="app", on_view=views.append)])
    history: list[dict[str, str]] = []
    asked = ["서울 회의는 ORD-1001 건입니다.", "東京の件は？", "ما هو الموعد؟", "ok 👍", "ok 👍"]
    for text in asked:
        history.append({"role": "user", "content": text})
        payload = {"messages": history}
        out = (asyncio.run(agent.ainvoke(payload)) if mode == "async"
               else agent.invoke(payload))
        history.append({"role": "assistant", "content": out["messages"][-1].content})
    assert [(t.role, t.text) for t in memory.turns("app")] == [
        (m["role"], m["content"]) for m in history]
    last = model.calls[-1][1:]  # after the system prompt: each message once, in order
    assert [m.content for m in last] == [m["content"] for m in history[:-1]]


def test_without_a_checkpointer_a_new_message_alone_is_recorded_even_when_it_repeats(
        memory: OpticalMemory) -> None:
    """Runs handed only their new message (the other way to run without a checkpointer)
    record it, even when the user says the same thing again."""
    agent = create_agent(capturing(), middleware=[OpticalMemoryMiddleware(memory, session="app")])
    for text in ["ok", "ok", "ok"]:
        agent.invoke({"messages": [{"role": "user", "content": text}]})
    assert [t.role for t in memory.turns("app")] == ["user", "assistant"] * 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_without_a_checkpointer_an_exchange_repeated_word_for_word_is_recorded(
        memory: OpticalMemory, mode: str) -> None:
    """A run handed only its new message, whose exchange repeats the session's last one
    word for word ("thanks" / "You're welcome!"), was taken at its end, by roles and
    text, for the last exchange passed again: none of it was recorded, and the model's
    later history lacked it. Within a tool run, the run's own tool call and result were
    taken as recorded the same way and left out of what the model was sent."""
    def welcome() -> AIMessage:
        return AIMessage("You're welcome!")

    def call() -> AIMessage:
        return AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "서울"},
                                          "id": "w1"}])

    model = capturing(iter([welcome(), welcome(), call(), welcome(), call(), welcome()]))
    views: list[ModelView] = []
    agent = create_agent(model, tools=[get_weather], middleware=[
        OpticalMemoryMiddleware(memory, session="app", on_view=views.append)])
    for text in ["thanks", "thanks", "weather?", "weather?"]:
        payload = {"messages": [{"role": "user", "content": text}]}
        if mode == "async":
            asyncio.run(agent.ainvoke(payload))
        else:
            agent.invoke(payload)
    exchange = [("user", "thanks"), ("assistant", "You're welcome!")]
    tool_run = [("user", "weather?"),
                ("assistant", '[tool call · get_weather · id w1] {"city": "서울"}'),
                ("tool", get_weather.invoke({"city": "서울"})),
                ("assistant", "You're welcome!")]
    assert [(t.role, t.text) for t in memory.turns("app")] == [*exchange * 2, *tool_run * 2]
    # the last run's second model call was sent its own call and result, as messages
    assert [type(m).__name__ for m in views[-1].in_flight] == [
        "HumanMessage", "AIMessage", "ToolMessage"]


# --------------------------------------------------------------------------- user first
# Anthropic and Bedrock Converse refuse a conversation that opens (after the system
# prompt) with the assistant: "A conversation must start with a user message".

LONG_PROMPT = "Draft the Titan launch plan, milestone by milestone, with owners. " * 12


def opening(call: list[BaseMessage]) -> BaseMessage:
    return next(m for m in call if not isinstance(m, SystemMessage))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_history_that_keeps_a_reply_but_not_its_prompt_opens_with_a_user_note(
        memory: OpticalMemory, mode: str) -> None:
    model = capturing()
    roomy, _ = make_agent(memory, model, session="s")
    run(roomy, LONG_PROMPT, "a", mode)  # recorded: [prompt, REPLY0]
    counter = OpticalTokenCounter(memory)
    # a budget for the system prompt, the reply, its note and the question (and the
    # history's rounding to a step), not for the prompt
    budget = counter([SystemMessage(SYSTEM), HumanMessage(LEAD_NOTE), AIMessage(REPLY0),
                      HumanMessage("Why?")]) + 8
    assert counter([HumanMessage(LONG_PROMPT)]) > budget
    tight, views = make_agent(memory, model, session="s", budget_tokens=budget)
    run(tight, "Why?", "b", mode)
    sent = model.calls[-1]
    assert [type(m).__name__ for m in sent] == ["SystemMessage", "HumanMessage", "AIMessage",
                                                "HumanMessage"]
    assert [m.content for m in sent[1:]] == [LEAD_NOTE, REPLY0, "Why?"]
    assert counter(sent) <= budget and views[-1].tokens <= budget
    assert views[-1].history == 2 and views[-1].context is not None
    assert views[-1].context.lead_note == 0


def test_a_run_that_opens_with_a_reply_and_no_history_is_sent_a_user_note_first(
        memory: OpticalMemory) -> None:
    # a run handed only an assistant's message (a greeting an app shows first), with
    # nothing recorded yet: no history, and the in-flight part opens with the reply
    model = capturing()
    agent, views = make_agent(memory, model)
    agent.invoke({"messages": [AIMessage("Hi! I plan projects.")]},
                 {"configurable": {"thread_id": "g"}})
    sent = model.calls[-1]
    assert [type(m).__name__ for m in sent] == ["SystemMessage", "HumanMessage", "AIMessage"]
    assert sent[1].content == LEAD_NOTE
    assert views[-1].history == 1 and views[-1].tokens <= BUDGET
    assert OpticalTokenCounter(memory)(sent) == views[-1].tokens
    # the in-flight part is never cut: no room for its note is an in-flight error
    counter = OpticalTokenCounter(memory)
    greeting = [AIMessage("Hi! I plan projects.")]
    short = counter(greeting) + counter([HumanMessage(LEAD_NOTE)]) - 1
    with pytest.raises(InFlightTooLargeError, match="need a user note"):
        OpticalMemoryMiddleware(memory, budget_tokens=short).assemble("empty", None, None,
                                                                       greeting)
    view = OpticalMemoryMiddleware(memory, budget_tokens=short + 1).assemble(
        "empty", None, None, greeting)
    assert [m.content for m in view.messages] == [LEAD_NOTE, "Hi! I plan projects."]
    assert view.tokens == short + 1


def test_user_first_history_is_sent_as_before(memory: OpticalMemory) -> None:
    model = capturing()
    agent, views = make_agent(memory, model)
    for i in range(12):
        run(agent, user_text(i), "u", "sync")
    for call, view in zip(model.calls, views, strict=True):
        assert isinstance(opening(call), HumanMessage)
        assert LEAD_NOTE not in [m.content for m in call]
        assert view.context is None or view.context.lead_note is None
    assert views[-1].context is not None and views[-1].context.pages  # pages open it


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_an_anthropic_tool_call_is_priced_and_recorded_once(mode: str) -> None:
    # langchain-anthropic's AIMessage holds each tool call twice: a tool_use content block
    # and an entry of tool_calls. Without the provider in response_metadata (an older
    # checkpoint's message, a scripted one) the in-flight price counted the call twice,
    # which refused (InFlightTooLargeError) or cut history for a run that fit.
    call = {"name": "get_weather", "args": {"city": "Seoul"}, "id": "toolu_01",
            "type": "tool_call"}
    asks = AIMessage(content=[{"type": "text", "text": "Let me check."},
                              {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                               "input": {"city": "Seoul"}}], tool_calls=[call])
    memory = OpticalMemory(codec=None, budget_tokens=BUDGET)
    counter = OpticalTokenCounter(memory)
    model = capturing(iter([asks, AIMessage("Sunny in Seoul.")]))
    agent, views = make_agent(memory, model, tools=[get_weather])
    run(agent, "Weather in Seoul?", "anthropic", mode)
    human, sent_call, result = views[1].in_flight
    assert sent_call.content == asks.content  # sent as the model gave it
    once = AIMessage(content=[{"type": "text", "text": "Let me check."}], tool_calls=[call])
    assert views[1].in_flight_tokens == counter([human, once, result])
    # A budget that holds the run's messages with the call priced once is enough.
    tight = views[1].system_tokens + views[1].in_flight_tokens
    memory2 = OpticalMemory(codec=None, budget_tokens=tight)
    agent2, views2 = make_agent(memory2, capturing(iter([asks, AIMessage("Sunny.")])),
                                tools=[get_weather])
    run(agent2, "Weather in Seoul?", "anthropic", mode)
    assert views2[1].tokens <= tight
    # Recorded once too: the text line, and the call in the turn's metadata.
    turns = memory.turns("anthropic")
    assert [t.role for t in turns] == ["user", "assistant", "tool", "assistant"]
    assert turns[1].text == ('Let me check.\n'
                             '[tool call · get_weather · id toolu_01] {"city": "Seoul"}')
    assert turns[1].meta["tool_calls"] == [{"id": "toolu_01", "name": "get_weather"}]
