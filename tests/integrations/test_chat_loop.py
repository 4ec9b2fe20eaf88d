"""``with_memory``: what the wrapped chat function receives, what gets recorded, and when."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import warnings
from collections.abc import Coroutine
from typing import Any

import pydantic
import pytest

from opticmem import BudgetError, InvalidTurnError, OpticalMemory, RenderSettings, message_tokens
from opticmem.context import LEAD_NOTE, MEMORY_HEADER
from opticmem.integrations import AsyncMemoryChat, MemoryChat, with_memory
from opticmem.integrations.chat_loop import Message, UnsupportedReplyError, reply_text
from tests.doctests import check_doctests
from tests.memory.sample import turns as sample_turns

SYSTEM = "You are a careful planning assistant. Never invent ticket numbers."


def memory(budget: int = 1500, **kw: Any) -> OpticalMemory:
    """A memory that pages quickly: small pages, two verbatim turns, no codec."""
    kw.setdefault("render_settings", RenderSettings(max_rows=6))
    return OpticalMemory(budget_tokens=budget, codec=None, verbatim_turns=2, **kw)


class Recorder:
    """A chat function that keeps every message list it was sent and answers in turn."""

    def __init__(self) -> None:
        self.sent: list[list[Message]] = []

    def __call__(self, messages: list[Message]) -> str:
        self.sent.append(messages)
        return f"reply {len(self.sent)}"


def test_records_user_then_reply_and_sends_the_system_prompt_verbatim() -> None:
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="alice", system=SYSTEM)
    assert isinstance(chat, MemoryChat)
    assert chat("Plan Titan for March.") == "reply 1"
    assert chat("And Orion?") == "reply 2"
    assert model.sent[1] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Plan Titan for March."},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "And Orion?"},
    ]
    assert [(t.role, t.text) for t in mem.turns("alice")] == [
        ("user", "Plan Titan for March."), ("assistant", "reply 1"),
        ("user", "And Orion?"), ("assistant", "reply 2")]  # the system prompt is not stored


def test_what_chat_fn_receives_never_exceeds_the_budget() -> None:
    budget = 1500
    mem = memory(budget)
    model = Recorder()
    chat = with_memory(model, mem, session="team", system=SYSTEM)
    for t in sample_turns(80)[::2]:
        chat(str(t["text"]))
    costs = [message_tokens(sent, mem.cost_model) for sent in model.sent]
    assert max(costs) <= budget
    assert max(costs) > budget // 2  # the budget is used, not just respected
    last = model.sent[-1]
    assert last[0] == {"role": "system", "content": SYSTEM}
    parts = [p for m in last if isinstance(m["content"], list) for p in m["content"]]
    assert any(p["type"] == "image_url" for p in parts)  # older turns arrive as pages
    assert mem.context("team").pages  # and the memory paged them


def test_a_per_call_budget_and_a_large_system_prompt_still_fit() -> None:
    mem = memory(4000)
    model = Recorder()
    big_system = "Rules: " + "always cite the ticket and the date; " * 60
    chat = with_memory(model, mem, session="s", system=big_system, budget_tokens=3000)
    for t in sample_turns(40):
        chat(str(t["text"]), budget_tokens=1200 if len(model.sent) % 2 else None)
    for i, sent in enumerate(model.sent):
        assert message_tokens(sent, mem.cost_model) <= (1200 if i % 2 else 3000)
        assert sent[0]["content"] == big_system


def test_a_system_prompt_over_the_budget_is_refused_before_anything_is_stored() -> None:
    mem = memory(200)
    chat = with_memory(Recorder(), mem, session="s", system="word " * 400)
    with pytest.raises(BudgetError, match="system prompt"):
        chat("hello")
    assert mem.turns("s") == []


def test_a_budget_too_small_for_the_newest_turn_names_the_whole_budget_that_fits() -> None:
    """The figure to raise budget_tokens to counts the system prompt too: the memory's
    own error named only the context's share, so raising to it failed again. Sync and
    async name the same figure, and that budget then works."""
    system = "You answer in one short sentence and never use lists. " * 3
    turn = "please summarise the quarterly plan for me, line by line " * 4
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s", system=system)
    with pytest.raises(BudgetError, match="system prompt") as small:
        chat(turn, budget_tokens=60)
    needed = small.value.needed
    assert needed is not None and needed > 60
    assert f"at least {needed}" in str(small.value)
    # recording comes first: the error says so, and a caller who catches it need not resend
    assert "the 1 turn(s) of this call are stored, nothing was sent" in str(small.value)
    assert [t.text for t in mem.turns("s")] == [turn]
    assert needed >= message_tokens([{"role": "system", "content": system}], mem.cost_model)

    async def aecho(messages: list[Message]) -> str:
        return "ok"

    achat = with_memory(aecho, memory(), session="s", system=system)
    with pytest.raises(BudgetError) as asmall:
        asyncio.run(achat(turn, budget_tokens=60))
    assert asmall.value.needed == needed
    chat(turn, budget_tokens=needed)  # the named budget holds the call


def test_a_failing_model_keeps_the_user_turn_and_a_retry_answers_it() -> None:
    mem = memory()
    calls: list[list[Message]] = []

    def flaky(messages: list[Message]) -> str:
        calls.append(messages)
        if len(calls) == 1:
            raise ConnectionError("model endpoint down")
        return "sorry for the wait"

    chat = with_memory(flaky, mem, session="s")
    with pytest.raises(ConnectionError):
        chat("What is due in March?")
    assert [(t.role, t.text) for t in mem.turns("s")] == [("user", "What is due in March?")]
    assert chat() == "sorry for the wait"  # no new message: answer what is there
    assert calls[1] == [{"role": "user", "content": "What is due in March?"}]
    assert [t.role for t in mem.turns("s")] == ["user", "assistant"]


class PydanticMessage(pydantic.BaseModel):
    role: str
    content: str


@pytest.mark.parametrize("reply", [
    "plain text",
    {"role": "assistant", "content": "plain text"},
    {"content": [{"type": "text", "text": "plain"}, {"type": "text", "text": "text"}]},
    {"id": "cmpl-1", "choices": [{"index": 0, "message": {"role": "assistant",
                                                          "content": "plain text"}}]},
    PydanticMessage(role="assistant", content="plain text"),
], ids=["str", "message", "text-parts", "completion", "pydantic"])
def test_accepted_reply_shapes_are_returned_unchanged_and_recorded(reply: object) -> None:
    mem = memory()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("hi") is reply
    assert mem.turns("s")[-1].role == "assistant"
    assert mem.turns("s")[-1].text.replace("\n", " ") == "plain text"


@pytest.mark.parametrize("reply", [
    None,
    42,
    {"role": "user", "content": "not an answer"},
    {"role": "assistant", "content": None, "tool_calls": "call c1"},
    {"choices": []},
    {"content": [{"type": "hologram", "hologram": {"url": "data:,"}}]},
], ids=["none", "int", "user-role", "tool-calls", "no-choices", "unknown-part"])
def test_other_replies_raise_a_typed_error_after_the_user_turn_is_kept(reply: object) -> None:
    mem = memory()
    chat = with_memory(lambda messages: reply, mem, session="s")
    with pytest.raises(UnsupportedReplyError, match="chat_fn returned") as info:
        chat("hi")
    assert isinstance(info.value, TypeError)
    assert [t.role for t in mem.turns("s")] == ["user"]


@pytest.mark.parametrize("reply", [
    {"role": "assistant", "content": None, "refusal": "I can't help with that."},
    {"choices": [{"message": {"role": "assistant", "content": None,
                              "refusal": "I can't help with that."}}]},
    {"role": "assistant", "content": [{"type": "refusal",
                                       "refusal": "I can't help with that."}]},
], ids=["message", "completion", "refusal-part"])
def test_a_refusal_is_returned_and_recorded_as_its_text(reply: object) -> None:
    # an OpenAI model that declines sends content None and a refusal: it was refused
    # (UnsupportedReplyError), and so was the same message passed back as history
    mem = memory()
    model = Recorder()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("hi") is reply
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", "hi"), ("assistant", "I can't help with that.")]
    assert reply_text(reply) == "I can't help with that."
    with_memory(model, mem, session="t")([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "refusal": "No."},
        {"role": "user", "content": "Why not?"}])
    assert model.sent[0] == [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "No."},
                             {"role": "user", "content": "Why not?"}]


def test_an_empty_reply_is_returned_but_not_recorded() -> None:
    mem = memory()
    chat = with_memory(lambda messages: "  ", mem, session="s")
    assert chat("hi") == "  "
    assert [t.role for t in mem.turns("s")] == ["user"]


@pytest.mark.parametrize("reply", [
    {"role": "assistant", "content": None},
    {"id": "cmpl-1", "choices": [{"index": 0, "finish_reason": "content_filter", "message": {
        "role": "assistant", "content": None, "refusal": None, "tool_calls": None,
        "function_call": None, "audio": None}}]},
], ids=["message", "completion"])
def test_an_empty_reply_with_content_none_is_returned_but_not_recorded(reply: object) -> None:
    # Azure's content filter and OpenAI-compatible servers answer nothing with content
    # None: it raised UnsupportedReplyError (the reply lost) where content "" was returned
    mem = memory()
    model = Recorder()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("hi") is reply
    assert reply_text(reply) == ""
    assert [t.role for t in mem.turns("s")] == ["user"]
    # passed back as history, such a message is not recorded, as one with content "" is
    with_memory(model, mem, session="t")([
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": None},
        {"role": "user", "content": "Hello?"}])
    assert [(t.role, t.text) for t in mem.turns("t")][:2] == [("user", "hi"), ("user", "Hello?")]
    with pytest.raises(InvalidTurnError, match="only text"):  # a user's is still refused
        chat({"role": "user", "content": None})


def test_one_wrapper_serves_many_sessions() -> None:
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem)
    with pytest.raises(ValueError, match="no session"):
        chat("who am I?")
    chat("I am Ann", session="ann")
    chat("I am Bob", session="bob")
    chat("Who am I?", session="ann")
    assert [m["content"] for m in model.sent[-1]] == ["I am Ann", "reply 1", "Who am I?"]
    assert [t.text for t in mem.turns("bob")] == ["I am Bob", "reply 2"]
    assert mem.sessions() == ["ann", "bob"]


def test_message_lists_system_messages_and_bad_input() -> None:
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="s", system="default system")
    chat([{"role": "system", "content": [{"type": "text", "text": "call system"}]},
          {"role": "user", "content": "first", "name": "ann"},
          {"role": "user", "content": [{"type": "text", "text": "second"}]}])
    assert model.sent[0] == [
        {"role": "system", "content": [{"type": "text", "text": "call system"}]},
        {"role": "user", "content": "first", "name": "ann"},
        {"role": "user", "content": "second"}]
    assert mem.turns("s")[0].meta == {"name": "ann"}
    unknown = {"type": "wizard_block", "spell": "42"}
    with pytest.raises(InvalidTurnError, match="only text"):
        chat([{"role": "user", "content": "ok"}, {"role": "user", "content": [unknown]}])
    with pytest.raises(InvalidTurnError, match="role"):
        chat({"role": "wizard", "content": "abracadabra"})
    with pytest.raises(InvalidTurnError, match="expected"):
        chat(42)
    assert len(mem.turns("s")) == 3  # nothing of a refused call was stored


ATTACHMENTS: list[dict[str, Any]] = [
    {"type": "text", "text": "What is on these?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-1", "filename": "plan.pdf"}},
    {"type": "file", "file": {"file_data": "data:application/pdf;base64,AAAA",
                              "filename": "plan.pdf"}},
    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                 "data": "AAAA"}},
]


def test_attachments_are_stored_as_the_markers_the_langchain_integration_writes() -> None:
    # a user message with an image (or audio, or a file) raised InvalidTurnError: a chat
    # loop with attachments could not run at all
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="s")
    assert chat({"role": "user", "content": ATTACHMENTS}) == "reply 1"
    expected = "\n".join([
        "What is on these?", "[image/png attachment, not archived]",
        "[image attachment, not archived]", "[audio/wav attachment, not archived]",
        "[file attachment, not archived]", "[application/pdf attachment, not archived]",
        "[image/jpeg attachment, not archived]"])
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", expected), ("assistant", "reply 1")]
    assert model.sent[0] == [{"role": "user", "content": expected}]
    messages = pytest.importorskip("opticmem.integrations.langchain_messages")
    from langchain_core.messages import HumanMessage

    assert messages.message_text(HumanMessage(content=ATTACHMENTS)) == expected


def test_langchain_format_sends_standard_image_blocks() -> None:
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="team", format="langchain")
    for t in sample_turns(40)[::2]:
        chat(str(t["text"]))
    blocks = [p for m in model.sent[-1] if isinstance(m["content"], list) for p in m["content"]]
    assert any(b["type"] == "image" and b["mime_type"] == "image/png" for b in blocks)
    assert not any(b["type"] == "image_url" for b in blocks)


def test_async_chat_functions_get_the_async_wrapper() -> None:
    budget = 1500
    mem = memory(budget)
    sent: list[list[Message]] = []

    async def model(messages: list[Message]) -> dict[str, str]:
        sent.append(messages)
        await asyncio.sleep(0)
        return {"role": "assistant", "content": f"noted ({len(messages)} messages)"}

    chat = with_memory(model, mem, system=SYSTEM)
    assert isinstance(chat, AsyncMemoryChat)

    async def session(name: str) -> None:
        for t in sample_turns(40)[::2]:
            await chat(f"{name}: {t['text']}", session=name)

    async def main() -> None:
        await asyncio.gather(*(session(f"user-{i}") for i in range(4)))

    asyncio.run(main())
    assert max(message_tokens(m, mem.cost_model) for m in sent) <= budget
    for i in range(4):
        turns = mem.turns(f"user-{i}")
        assert len(turns) == 40 and [t.role for t in turns[:2]] == ["user", "assistant"]
        assert all(t.text.startswith(f"user-{i}:") for t in turns[::2])
    assert mem.context("user-0").pages


def test_callable_objects_and_partials_are_recognised_as_async() -> None:
    class Client:
        async def __call__(self, messages: list[Message], temperature: float = 0.0) -> str:
            return f"t={temperature}"

    mem = memory()
    for fn in (Client(), functools.partial(Client().__call__, temperature=0.5)):
        chat = with_memory(fn, mem, session="s")
        assert isinstance(chat, AsyncMemoryChat)
    assert asyncio.run(chat("hi")) == "t=0.5"


def test_a_sync_function_returning_a_coroutine_is_refused_cleanly() -> None:
    mem = memory()

    async def answer() -> str:
        return "late"

    def sneaky(messages: list[Message]) -> Coroutine[Any, Any, str]:
        return answer()

    chat = with_memory(sneaky, mem, session="s")
    assert isinstance(chat, MemoryChat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(UnsupportedReplyError, match="async def"):
            chat("hi")


def test_reply_text_reads_the_openai_sdk_shape_through_model_dump() -> None:
    class Completion(pydantic.BaseModel):
        choices: list[dict[str, Any]]

    done = Completion(choices=[{"message": {"role": "assistant", "content": "ok"}}])
    assert reply_text(done) == "ok"


def test_docstring_examples() -> None:
    check_doctests("opticmem.integrations.chat_loop", min_examples=5)


TOOL_CHAIN: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Seoul?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Seoul"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "weather", "content": "12°C, rain"},
]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_chains_are_archived_whole_and_sent_without_orphan_tool_messages(
        mode: str) -> None:
    # OpenAI answers HTTP 400 to a "tool" message that follows no assistant tool_calls;
    # the tool calls themselves used to be dropped (content None was refused outright).
    budget = 400
    mem = memory(budget)
    mem.add("s", "system", "Operator note: the user prefers Celsius.")
    sent: list[list[Message]] = []

    def model(messages: list[Message]) -> str:
        sent.append(messages)
        return "12°C and rain in Seoul."

    async def amodel(messages: list[Message]) -> str:
        return model(messages)

    if mode == "sync":
        with_memory(model, mem, session="s", system=SYSTEM)(TOOL_CHAIN)
    else:
        asyncio.run(with_memory(amodel, mem, session="s", system=SYSTEM)(TOOL_CHAIN))
    turns = mem.turns("s")
    assert [(t.role, t.text) for t in turns[1:]] == [
        ("user", "Weather in Seoul?"),
        ("assistant", '[tool call · weather · id call_1] {"city": "Seoul"}'),
        ("tool", "12°C, rain"),
        ("assistant", "12°C and rain in Seoul."),
    ]
    assert turns[2].meta == {"tool_calls": [{"id": "call_1", "name": "weather"}]}
    assert sent[0] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "[System message]\nOperator note: the user prefers Celsius."},
        {"role": "user", "content": "Weather in Seoul?"},
        {"role": "assistant", "content": '[tool call · weather · id call_1] {"city": "Seoul"}'},
        {"role": "user", "content": "[Tool result · weather · call call_1]\n12°C, rain"},
    ]
    # the headings are paid for inside the budget, as tight as it is
    tight = message_tokens(sent[0], mem.cost_model)
    chat = with_memory(model, mem, session="s", system=SYSTEM)
    chat(budget_tokens=tight - 1)
    assert message_tokens(sent[-1], mem.cost_model) <= tight - 1
    assert not any(m["role"] == "tool" for m in sent[-1])


@pytest.mark.parametrize("shape", ["message", "completion"])
def test_a_reply_that_calls_tools_is_recorded_and_the_loop_goes_on(shape: str) -> None:
    # a chat_fn with tools bound (as the docs suggest) answering with tool_calls raised
    # UnsupportedReplyError: the reply was lost and the agent's loop could not go on
    mem = memory(budget=400)
    call = TOOL_CHAIN[1]
    replies: list[object] = [call if shape == "message" else {"choices": [{"message": call}]},
                             "12°C and rain in Seoul."]
    sent: list[list[Message]] = []

    def model(messages: list[Message]) -> object:
        sent.append(messages)
        return replies[len(sent) - 1]

    chat = with_memory(model, mem, session="s")
    assert chat("Weather in Seoul?") is replies[0]
    assert chat({"role": "tool", "tool_call_id": "call_1", "name": "weather",
                 "content": "12°C, rain"}) == "12°C and rain in Seoul."
    turns = mem.turns("s")
    assert [(t.role, t.text) for t in turns] == [
        ("user", "Weather in Seoul?"),
        ("assistant", '[tool call · weather · id call_1] {"city": "Seoul"}'),
        ("tool", "12°C, rain"),
        ("assistant", "12°C and rain in Seoul."),
    ]
    assert turns[1].meta == {"tool_calls": [{"id": "call_1", "name": "weather"}]}
    assert sent[1] == [
        {"role": "user", "content": "Weather in Seoul?"},
        {"role": "assistant", "content": '[tool call · weather · id call_1] {"city": "Seoul"}'},
        {"role": "user", "content": "[Tool result · weather · call call_1]\n12°C, rain"},
    ]


def test_legacy_function_calls_and_function_results_are_recorded_as_tool_calls() -> None:
    # OpenAI's legacy functions API: an assistant function_call (content None) and a
    # "function" result message; both were refused with InvalidTurnError
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="s")
    chat([{"role": "user", "content": "Weather in Seoul?"},
          {"role": "assistant", "content": None,
           "function_call": {"name": "weather", "arguments": '{"city": "Seoul"}'}},
          {"role": "function", "name": "weather", "content": "12°C, rain"}])
    turns = mem.turns("s")
    assert [(t.role, t.text) for t in turns] == [
        ("user", "Weather in Seoul?"),
        ("assistant", '[tool call · weather] {"city": "Seoul"}'),
        ("tool", "12°C, rain"),
        ("assistant", "reply 1"),
    ]
    assert turns[1].meta == {"tool_calls": [{"id": None, "name": "weather"}]}
    assert model.sent[0][2] == {"role": "user", "content": "[Tool result · weather]\n12°C, rain"}
    reply = {"role": "assistant", "content": None,
             "function_call": {"name": "weather", "arguments": "{}"}}
    with_memory(lambda messages: reply, mem, session="t")("And Busan?")
    assert [t.text for t in mem.turns("t")] == ["And Busan?", "[tool call · weather] {}"]


def test_a_spoken_reply_is_recorded_as_its_transcript() -> None:
    # an audio-output model answers with content None and the audio (with a transcript);
    # the reply was refused (UnsupportedReplyError), and so was the message passed back
    # with the audio's id only (InvalidTurnError)
    mem = memory()
    reply = {"choices": [{"message": {"role": "assistant", "content": None, "audio": {
        "id": "audio_1", "data": "UklGRg==", "expires_at": 1, "transcript": "Hello there!"}}}]}
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("Say hello") is reply
    assert [t.text for t in mem.turns("s")] == ["Say hello", "Hello there!"]
    model = Recorder()
    with_memory(model, mem, session="t")([
        {"role": "user", "content": "Say hello"},
        {"role": "assistant", "content": None, "audio": {"id": "audio_1"}},
        {"role": "user", "content": "Again"}])
    assert model.sent[0][1] == {"role": "assistant",
                                "content": "[audio attachment, not archived]"}


def test_a_reply_the_archive_cannot_hold_as_given_is_stored_and_returned() -> None:
    mem = memory(max_turn_chars=50)
    for reply, stored in [("broken \ud83d emoji", ["broken \ufffd emoji"]),
                          ("y" * 120, ["y" * 50, "y" * 50, "y" * 20])]:
        chat = with_memory(lambda messages, r=reply: r, mem, session="s")
        assert chat("hi") == reply  # the model's answer reaches the caller unchanged
        n = len(stored)
        assert [t.text for t in mem.turns("s")[-n:]] == stored
        assert all(t.role == "assistant" for t in mem.turns("s")[-n:])
    assert mem.turns("s")[1].meta["repaired"]
    assert [t.meta["part"] for t in mem.turns("s")[-3:]] == [[1, 3], [2, 3], [3, 3]]



@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_budget_too_small_for_the_newest_tool_results_heading_names_the_budget_that_fits(
        mode: str) -> None:
    # The newest turn fits the context's budget bare, but not with its "[Tool result ·
    # NAME · call ID]" heading: planning for less went below 1 and the error named a
    # negative budget_tokens the caller never passed, with no figure to raise it to.
    mem = memory()
    result = {"role": "tool", "name": "lookup_customer_record",
              "tool_call_id": "call_Zq8vN3xR5tY7uI9oP1aS2dF4", "content": "ok"}
    model = Recorder()

    async def amodel(messages: list[Message]) -> str:
        return model(messages)

    chat = with_memory(model if mode == "sync" else amodel, mem, session="s")

    def call(**kw: Any) -> Any:
        out = chat(**kw)
        return asyncio.run(out) if mode == "async" else out

    mem.add("s", "tool", "ok", meta={k: result[k] for k in ("name", "tool_call_id")})
    heading = message_tokens([{"role": "user", "content": "[Tool result · "
                               "lookup_customer_record · call call_Zq8vN3xR5tY7uI9oP1aS2dF4]"
                               "\nok"}], mem.cost_model)
    bare = message_tokens([{"role": "tool", "content": "ok"}], mem.cost_model)
    assert bare < heading // 3
    for budget in (heading // 3, heading - 1):
        with pytest.raises(BudgetError, match="newest turn") as small:
            call(budget_tokens=budget)
        assert small.value.needed == heading
    assert f"at least {heading}" in str(small.value)
    call(budget_tokens=heading)  # the named budget holds the call
    assert message_tokens(model.sent[-1], mem.cost_model) <= heading
    for _ in range(4):  # their headings together cost more than the whole budget
        mem.add("s", "tool", "ok", meta={k: result[k] for k in ("name", "tool_call_id")})
    mem.add("s", "user", "and the others?")
    call(budget_tokens=heading)
    assert message_tokens(model.sent[-1], mem.cost_model) <= heading
    assert model.sent[-1][-1] == {"role": "user", "content": "and the others?"}

@pytest.mark.parametrize("bad", [0, -5])
def test_a_per_call_budget_below_one_is_refused_not_ignored(bad: int) -> None:
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    with pytest.raises(BudgetError, match="budget_tokens must be"):
        chat("hi", budget_tokens=bad)
    assert mem.turns("s") == []


# A budget that is not a whole number passed the ``< 1`` check, and the memory refused it
# only once the user's turn was stored: the rejected call still recorded the message.
@pytest.mark.parametrize("bad", [100.5, float("nan"), float("inf"), True, "8192"])
@pytest.mark.parametrize("where", ["call", "wrapper"])
def test_a_budget_that_is_not_a_whole_number_is_refused_before_anything_is_stored(
    bad: object, where: str
) -> None:
    mem = memory()
    for chat_fn in (Recorder(), _async_echo):
        with pytest.raises(BudgetError, match="budget_tokens must be a whole number"):
            if where == "wrapper":
                with_memory(chat_fn, mem, session="s", budget_tokens=bad)  # type: ignore[call-overload]
            else:
                chat = with_memory(chat_fn, mem, session="s")
                reply = chat("hi", budget_tokens=bad)  # type: ignore[arg-type]
                if asyncio.iscoroutine(reply):
                    asyncio.run(reply)
        assert mem.turns("s") == []


async def _async_echo(messages: list[Message]) -> str:
    return "ok"


def test_turn_text_docstring_examples() -> None:
    check_doctests("opticmem.integrations.turn_text", min_examples=8)


def test_tool_results_the_archive_cannot_hold_as_given_are_stored_not_refused() -> None:
    # A tool's result (or an earlier model reply passed back in) already happened: like
    # the model's reply, and as the LangChain integration does, it is repaired and split
    # rather than refused. A fetched web page over max_turn_chars used to raise
    # TurnTooLargeError and jam the agent loop on every retry.
    mem = memory(max_turn_chars=60)
    chat = with_memory(Recorder(), mem, session="s")
    page = "w" * 130
    chat([*TOOL_CHAIN[:2], {"role": "tool", "tool_call_id": "call_1", "name": "fetch",
                            "content": page},
          {"role": "tool", "tool_call_id": "call_2", "content": "bad \udc80 byte"}])
    turns = mem.turns("s")
    assert [(t.role, t.text) for t in turns[2:6]] == [
        ("tool", "w" * 60), ("tool", "w" * 60), ("tool", "w" * 10), ("tool", "bad \ufffd byte")]
    assert [t.meta["part"] for t in turns[2:5]] == [[1, 3], [2, 3], [3, 3]]
    assert all(t.meta["tool_call_id"] == "call_1" for t in turns[2:5])
    assert turns[5].meta["repaired"] and turns[5].meta["tool_call_id"] == "call_2"
    with pytest.raises(InvalidTurnError, match="limit is 60"):
        chat("u" * 61)  # the user's own new message is still checked, not rewritten
    assert len(mem.turns("s")) == len(turns)


def test_lone_surrogates_in_tool_call_ids_and_names_are_repaired_not_refused() -> None:
    # they were kept as metadata unrepaired: the reply was lost with an InvalidTurnError
    # after the model had answered, and the tool result answering it was refused
    mem = memory()
    reply = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c\ud800", "type": "function", "function": {"name": "wx\udfff", "arguments": "{}"}}]}
    answers: list[object] = [reply, "12C it is"]
    chat = with_memory(lambda messages: answers.pop(0), mem, session="s")
    assert chat("weather?") is reply
    chat({"role": "tool", "tool_call_id": "c\ud800", "name": "wx\udfff", "content": "12C"})
    turns = mem.turns("s")
    assert [t.role for t in turns] == ["user", "assistant", "tool", "assistant"]
    assert turns[1].meta["tool_calls"] == [{"id": "c\ufffd", "name": "wx\ufffd"}]
    assert turns[2].meta["tool_call_id"] == "c\ufffd" and turns[2].meta["name"] == "wx\ufffd"


def test_a_tool_that_printed_nothing_is_not_recorded_and_does_not_jam_the_loop() -> None:
    # OpenAI takes a tool message with empty content; the archive keeps no empty turn, and
    # refusing it raised InvalidTurnError on every call of the agent's loop, which sends
    # the same tool message again each time.
    mem = memory()
    rec = Recorder()
    chat = with_memory(rec, mem, session="s")
    quiet = {"role": "tool", "tool_call_id": "call_1", "name": "weather", "content": ""}
    assert chat([*TOOL_CHAIN[:2], quiet]) == "reply 1"
    assert [t.role for t in mem.turns("s")] == ["user", "assistant", "assistant"]
    assert "[tool call · weather · id call_1]" in mem.turns("s")[1].text
    with pytest.raises(InvalidTurnError, match="empty"):
        chat(" ")  # the user's own empty message is still refused


def test_a_chat_fn_that_edits_what_it_is_sent_cannot_change_the_system_prompt() -> None:
    # Adapters often rewrite messages in place (string content to parts, a date appended
    # to the system prompt); the wrapper's own system message used to be sent by
    # reference, so each call's edit stayed in the prompt of every later call.
    def adapter(messages: list[Message]) -> str:
        for m in messages:
            m["content"] = [{"type": "text", "text": f"{m['content']} (edited)"}]
        messages[0]["content"][-1]["cache_control"] = {"type": "ephemeral"}
        return "ok"

    for system in (SYSTEM, {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}):
        chat = with_memory(adapter, memory(), session="s", system=system)
        model = Recorder()
        chat("first")
        chat.chat_fn = model
        chat("second")
        assert model.sent[0][0] == chat.system == (
            {"role": "system", "content": system} if isinstance(system, str) else system)
    assert system == {"role": "system", "content": [{"type": "text", "text": SYSTEM}]}


def test_developer_messages_are_the_calls_instructions_like_system_messages() -> None:
    # OpenAI's newer models take their instructions as role "developer" (the system
    # message's successor, which LangChain also reads as a system message); it used to be
    # recorded as a turn and refused as an unknown role.
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="s", system="default system")
    developer = {"role": "developer", "content": "Answer in French."}
    chat([developer, {"role": "user", "content": "hello"}])
    assert model.sent[0] == [developer, {"role": "user", "content": "hello"}]
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", "hello"), ("assistant", "reply 1")]


@pytest.mark.parametrize(("blocks", "extra", "text"), [
    ([{"type": "reasoning", "reasoning": "Let me think."},
      {"type": "text", "text": "Titan ships in March."}], {}, "Titan ships in March."),
    ([{"type": "thinking", "thinking": "hmm", "signature": "x"},
      {"type": "text", "text": "Checking."},
      {"type": "tool_use", "id": "t1", "name": "wx", "input": {"city": "Seoul"}}],
     {"tool_calls": [{"name": "wx", "args": {"city": "Seoul"}, "id": "t1"}]},
     'Checking.\n[tool call · wx · id t1] {"city": "Seoul"}'),
    ("", {"additional_kwargs": {"refusal": "I can't help with that."}},
     "I can't help with that."),
    # a tool_use block with no tool_calls (an Anthropic-form message built from a dict):
    # its only copy of the call, which was dropped as a duplicate
    ([{"type": "text", "text": "Checking."},
      {"type": "tool_use", "id": "t1", "name": "wx", "input": {"city": "Seoul"}}], {},
     'Checking.\n[tool call · wx · id t1] {"city": "Seoul"}'),
], ids=["reasoning", "anthropic-thinking-tool-use", "openai-refusal", "tool-use-only"])
def test_a_langchain_reply_is_recorded_as_the_langchain_integration_records_it(
    blocks: Any, extra: dict[str, Any], text: str
) -> None:
    # format="langchain" hands chat_fn messages a LangChain model takes; its AIMessage,
    # read through model_dump(), was refused when it held a reasoning, thinking or
    # tool_use block (the answer lost), and its refusal was not recorded
    from langchain_core.messages import AIMessage

    answer = AIMessage(blocks, **extra)
    mem = memory()
    chat = with_memory(lambda messages: answer, mem, session="s", format="langchain")
    assert chat("When does Titan ship?") is answer
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", "When does Titan ship?"), ("assistant", text)]


def test_a_custom_tool_call_is_recorded_with_its_name_and_input() -> None:
    # OpenAI's custom tools answer {"type": "custom", "custom": {"name", "input"}}; read
    # as a function call, the call was archived as "[tool call · ? · id call_1] {}"
    reply = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "custom",
         "custom": {"name": "run_sql", "input": "SELECT * FROM titan"}}]}
    mem = memory()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("Query Titan.") is reply
    [_, turn] = mem.turns("s")
    assert turn.text == "[tool call · run_sql · id call_1] SELECT * FROM titan"
    assert turn.meta == {"tool_calls": [{"id": "call_1", "name": "run_sql"}]}


def test_an_anthropic_message_reply_with_thinking_and_tool_use_is_recorded() -> None:
    # An Anthropic Message (read through model_dump()) with a thinking or tool_use block
    # was refused with UnsupportedReplyError after the model answered: the answer lost.
    reply = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "tool_use",
             "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"},
                         {"type": "text", "text": "Checking.", "citations": None},
                         {"type": "tool_use", "id": "tu1", "name": "wx",
                          "input": {"city": "서울"}}]}
    mem = memory()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("Weather in Seoul?") is reply
    [_, turn] = mem.turns("s")
    assert turn.text == 'Checking.\n[tool call · wx · id tu1] {"city": "서울"}'
    assert turn.meta == {"tool_calls": [{"id": "tu1", "name": "wx"}]}
    assert reply_text({**reply, "content": reply["content"][:1]}) == ""
    with pytest.raises(InvalidTurnError, match="only text"):  # a user's is still refused
        chat({"role": "user", "content": reply["content"]})


# --------------------------------------------------------------------------- user first
# Anthropic and Bedrock Converse refuse a conversation that opens (after the system
# prompt) with the assistant; a budget that left a prompt out but kept its reply sent one.

LONG_PROMPT = "Draft the Titan launch plan, milestone by milestone, with owners. " * 12


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_budget_that_leaves_a_prompt_out_still_sends_a_user_message_first(mode: str) -> None:
    mem = memory(4000)
    model = Recorder()

    async def arecorder(messages: list[Message]) -> str:
        return model(messages)

    chat = with_memory(model if mode == "sync" else arecorder, mem, session="s", system=SYSTEM)

    def call(text: str, **kw: Any) -> object:
        out = chat(text, **kw)
        return asyncio.run(out) if mode == "async" else out  # type: ignore[arg-type]

    call(LONG_PROMPT)
    expected = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": LEAD_NOTE},
                {"role": "assistant", "content": "reply 1"}, {"role": "user", "content": "Why?"}]
    budget = message_tokens(expected, mem.cost_model)  # the reply and the note, no prompt
    call("Why?", budget_tokens=budget)
    assert model.sent[-1] == expected
    assert message_tokens(model.sent[-1], mem.cost_model) <= budget
    call("And then?")  # the whole budget: the prompt is back (on a page), no note
    sent = model.sent[-1]
    assert sent[1]["role"] == "user" and mem.context("s").pages
    assert LEAD_NOTE not in [m["content"] for m in sent]


def test_a_retry_after_a_reply_names_a_budget_that_holds_the_reply_and_its_note() -> None:
    # called with no new message, the newest turn is the reply: shown alone it needs the
    # note, and the budget named must hold both (as the memory's planner prices them)
    mem = memory(4000)
    model = Recorder()
    chat = with_memory(model, mem, session="s", system=SYSTEM)
    chat(LONG_PROMPT)
    alone = message_tokens([{"role": "system", "content": SYSTEM},
                            {"role": "assistant", "content": "reply 1"}], mem.cost_model)
    with pytest.raises(BudgetError, match="system prompt") as small:
        chat(None, budget_tokens=alone)
    needed = small.value.needed
    assert needed is not None and needed > alone
    chat(None, budget_tokens=needed)
    assert [m["role"] for m in model.sent[-1]] == ["system", "user", "assistant"]
    assert model.sent[-1][1]["content"] == LEAD_NOTE
    assert message_tokens(model.sent[-1], mem.cost_model) <= needed


# merge_runs: Bedrock's Converse refuses two messages of one role in a row. What chat_fn
# is sent — the system prompt(s), the pages' message, turns, tool results and system
# turns shown as user messages — often has such runs.

@pytest.mark.parametrize("mode", ["sync", "async"])
def test_merge_runs_sends_an_alternating_list_within_the_budget(mode: str) -> None:
    budget = 1500
    mem = memory(budget)
    plain, merged = Recorder(), Recorder()

    async def amerged(messages: list[Message]) -> str:
        return merged(messages)

    chats = [with_memory(plain, mem, session="s", system=SYSTEM),
             with_memory(merged if mode == "sync" else amerged, mem, session="t",
                         system=SYSTEM, merge_runs=True)]
    assert chats[1].merge_runs and not chats[0].merge_runs

    def call(i: int, message: Any) -> None:
        out = chats[i](message)
        if inspect.isawaitable(out):
            asyncio.run(out)  # type: ignore[arg-type]

    mem.add_many("s", [("system", "Operator note: the user prefers Celsius."),
                       ("user", "Before we start: I'm Ann.")])
    mem.add_many("t", [("system", "Operator note: the user prefers Celsius."),
                       ("user", "Before we start: I'm Ann.")])
    for t in sample_turns(60)[::2]:
        for i in (0, 1):  # the same conversation, with and without merge_runs
            call(i, str(t["text"]))
    two_calls = [  # parallel tool calls: their results, shown as user messages, merge
        {"role": "user", "content": "Weather in Seoul and Busan?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{c}", "type": "function",
             "function": {"name": "weather", "arguments": f'{{"city": "{c}"}}'}}
            for c in ("Seoul", "Busan")]},
        {"role": "tool", "tool_call_id": "call_Seoul", "name": "weather", "content": "12°C"},
        {"role": "tool", "tool_call_id": "call_Busan", "name": "weather", "content": "15°C"},
    ]
    for i in (0, 1):
        call(i, [{"role": "system", "content": SYSTEM}, {"role": "system", "content": "Be brief."},
                 *two_calls])
    assert mem.context("t").pages  # older turns arrive as pages
    for sent, unmerged in zip(merged.sent, plain.sent, strict=True):
        roles = [m["role"] for m in sent]
        assert all(a != b for a, b in itertools.pairwise(roles)), roles
        assert roles[0] == "system" and roles[1] == "user"
        assert message_tokens(sent, mem.cost_model) <= budget
        # what the unmerged call sent, block for block; one overhead less per merge
        assert [b for m in sent for b in _as_blocks(m["content"])] == [
            b for m in unmerged for b in _as_blocks(m["content"])]
        saved = (len(unmerged) - len(sent)) * mem.cost_model.message_overhead
        assert message_tokens(sent, mem.cost_model) == (
            message_tokens(unmerged, mem.cost_model) - saved)
    last = merged.sent[-1]
    assert last[0] == {"role": "system", "content": [{"type": "text", "text": SYSTEM},
                                                     {"type": "text", "text": "Be brief."}]}
    assert last[-1] == {"role": "user", "content": [
        {"type": "text", "text": "[Tool result · weather · call call_Seoul]\n12°C"},
        {"type": "text", "text": "[Tool result · weather · call call_Busan]\n15°C"}]}
    # a pages' message then a user's turn: one user message, the pages' blocks first
    header = {"type": "text", "text": MEMORY_HEADER}
    runs = [k for k, sent in enumerate(plain.sent) if isinstance(sent[1]["content"], list)
            and sent[1]["content"][0] == header and sent[2]["role"] == "user"]
    assert any(b["type"] == "image_url" for k in runs for b in plain.sent[k][1]["content"])
    for k in runs:
        pages, turn = plain.sent[k][1]["content"], plain.sent[k][2]["content"]
        assert merged.sent[k][1]["content"][: len(pages) + 1] == [
            *pages, {"type": "text", "text": turn}]


def _as_blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def test_merge_runs_is_off_by_default_and_leaves_named_messages_alone() -> None:
    mem = memory()
    model = Recorder()
    assert not with_memory(model, mem, session="s").merge_runs
    named = {"role": "system", "content": "Be brief.", "name": "ops"}
    chat = with_memory(model, mem, session="s", system=named, merge_runs=True)
    chat([{"role": "user", "content": "hi", "name": "ann"}, {"role": "user", "content": "yo"}])
    # a message with a name of its own is never merged: alternation is then the caller's
    assert model.sent[-1] == [named, {"role": "user", "content": "hi", "name": "ann"},
                              {"role": "user", "content": "yo"}]


def test_opaque_provider_blobs_are_never_archived() -> None:
    # An Anthropic web search result's encrypted_content (opaque base64, KBs per result)
    # was written into the turn text by both integrations: on the pages, in recall, priced
    # as text. Its url, title and page_age are what the archive keeps; so are the texts
    # beside thinking signatures, redacted thinking, citations' encrypted_index and an
    # OpenAI reasoning item's encrypted_content, none of which is archived either.
    blob = "E" * 5000
    content = [
        {"type": "thinking", "thinking": "Search first.", "signature": "S" * 400},
        {"type": "redacted_thinking", "data": "R" * 400},
        {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "Titan"}},
        {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [
            {"type": "web_search_result", "url": "https://t.example", "title": "Titan",
             "page_age": "2 days ago", "encrypted_content": blob}]},
        {"type": "text", "text": "Launch in March.", "citations": [
            {"type": "web_search_result_location", "url": "https://t.example",
             "title": "Titan", "cited_text": "March", "encrypted_index": "I" * 400}]}]
    want = ('[server_tool_call: {"query":"Titan"}]\n'
            '[server_tool_result: [{"page_age":"2 days ago","title":"Titan",'
            '"type":"web_search_result","url":"https://t.example"}]]\nLaunch in March.')
    reply = {"type": "message", "role": "assistant", "content": content}
    mem = memory()
    with_memory(lambda messages: reply, mem, session="s")("Titan?")
    assert mem.turns("s")[-1].text == want
    responses = {"object": "response", "output": [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": blob},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "ok", "annotations": []}]}]}
    assert reply_text(responses) == "ok"
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from opticmem.integrations.langchain_messages import message_text

    for meta in ({"model_provider": "anthropic"}, {}):  # translated, or non_standard blocks
        assert message_text(AIMessage(content=content, response_metadata=meta)) == want
    # langchain-openai's form of the same reply: a reasoning block, then text
    lc = [{"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": blob},
          {"type": "text", "text": "ok"}]
    assert message_text(AIMessage(content=lc, response_metadata={"model_provider": "openai"})
                        ) == message_text(AIMessage(content=lc)) == "ok"


def test_an_anthropic_message_reply_with_server_tool_blocks_is_recorded() -> None:
    # An Anthropic Message that used a server-side tool (web search, code execution, MCP)
    # holds server_tool_use and *_tool_result blocks; they were refused with
    # UnsupportedReplyError after the model answered: the answer lost.
    reply = {"id": "msg_1", "type": "message", "role": "assistant", "stop_reason": "end_turn",
             "content": [
                 {"type": "server_tool_use", "id": "s1", "name": "web_search",
                  "input": {"query": "서울 날씨"}},
                 {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [
                     {"type": "web_search_result", "url": "https://wx.example/seoul",
                      "title": "서울", "encrypted_content": "e1"}]},
                 {"type": "text", "text": "맑아요, 12°C.", "citations": None},
                 {"type": "mcp_tool_use", "id": "m1", "name": "lookup", "server_name": "kb",
                  "input": {"id": "ORD-7"}},
                 {"type": "mcp_tool_result", "tool_use_id": "m1", "is_error": False,
                  "content": [{"type": "text", "text": "shipped"}]}]}
    mem = memory()
    chat = with_memory(lambda messages: reply, mem, session="s")
    assert chat("Weather in Seoul?") is reply
    [_, turn] = mem.turns("s")
    assert turn.text.splitlines() == [
        '[server_tool_call: {"query":"서울 날씨"}]',
        '[server_tool_result: [{"title":"서울",'
        '"type":"web_search_result","url":"https://wx.example/seoul"}]]',
        "맑아요, 12°C.",
        '[server_tool_call: {"id":"ORD-7"}]',
        '[server_tool_result: [{"text":"shipped","type":"text"}]]']
    # the LangChain integration archives the same message the same way
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from opticmem.integrations.langchain_messages import message_text

    lc = AIMessage(content=reply["content"], response_metadata={"model_provider": "anthropic"})
    assert message_text(lc) == turn.text
    with pytest.raises(InvalidTurnError, match="only text"):  # a user's is still refused
        chat({"role": "user", "content": reply["content"][:2]})


def test_a_turn_of_a_role_of_the_memorys_own_is_sent_as_a_headed_user_message() -> None:
    """A memory made with a role of its own (``roles=``, a ``"critic"``) sent that turn
    as ``{"role": "critic"}``, which every chat API rejects: it goes as a user message
    headed ``[critic]``, as the LangChain integration shows it, within the budget."""
    mem = memory(budget=400, roles=("user", "assistant", "critic"))
    mem.add("s", "user", "Write me a poem about tides.")
    mem.add("s", "assistant", "Roses are red, the sea is blue.")
    mem.add("s", "critic", "Too short, and not about tides.", meta={"name": "ed"})
    model = Recorder()
    chat = with_memory(model, mem, session="s", budget_tokens=400)
    chat("Try again.")
    sent = model.sent[-1]
    assert {m["role"] for m in sent} <= {"user", "assistant"}
    assert {"role": "user", "content": "[critic]\nToo short, and not about tides.",
            "name": "ed"} in sent
    assert message_tokens(sent, mem.cost_model) <= 400


def test_an_anthropic_tool_loop_goes_through_the_wrapper() -> None:
    """The Messages API answers a ``tool_use`` with a user message of ``tool_result``
    blocks: refused as "only text", a hand-written Anthropic tool loop could not use the
    wrapper. Each block is a tool turn (an error one marked as LangChain marks it), the
    rest of the message a user turn after them; all sent back as text, as recorded tool
    results are."""
    mem = memory()
    replies = iter([
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "서울"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "?"}}]},
        "Seoul is at 12C; the other city was not found."])
    model = Recorder()
    chat = with_memory(lambda messages: (model(messages), next(replies))[1], mem, session="s")
    chat("Weather in 서울 and somewhere?")
    assert chat({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1",
         "content": [{"type": "text", "text": "12C, clear"}]},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "unknown city",
         "is_error": True},
        {"type": "text", "text": "Also, keep it short."}]}).startswith("Seoul")
    turns = mem.turns("s")
    assert [(t.role, t.text, t.meta) for t in turns[2:5]] == [
        ("tool", "12C, clear", {"tool_call_id": "toolu_1"}),
        ("tool", "unknown city", {"tool_call_id": "toolu_2", "status": "error"}),
        ("user", "Also, keep it short.", {})]
    assert model.sent[-1][-3:] == [
        {"role": "user", "content": "[Tool result · call toolu_1]\n12C, clear"},
        {"role": "user", "content": "[Tool result · call toolu_2]\nunknown city"},
        {"role": "user", "content": "Also, keep it short."}]
    with pytest.raises(InvalidTurnError, match="only text"):  # a result no text can hold
        chat({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9",
                                            "content": [{"type": "wizard_block"}]}]})
    assert len(mem.turns("s")) == 6  # nothing of the refused call was stored


def test_responses_text_parts_and_search_results_are_recorded_as_their_text() -> None:
    # A Responses-style message ({"type": "input_text"} parts) was refused as "only
    # text" although its input_image parts were accepted, and so was an Anthropic
    # search_result block (a user's or a tool's), which the LangChain integration
    # archives as its text.
    mem = memory()
    model = Recorder()
    chat = with_memory(model, mem, session="s")
    chat({"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is in this photo?"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBO"}]})
    chat([{"role": "assistant", "content": [
              {"type": "output_text", "text": "A cat.", "annotations": []}]},
          {"role": "user", "content": [
              {"type": "text", "text": "Sources?"},
              {"type": "search_result", "source": "wiki", "title": "Cats",
               "content": [{"type": "text", "text": "Cats purr."}]}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                        "content": [{"type": "search_result",
                                                     "source": "kb", "title": "Titan",
                                                     "content": [{"type": "text",
                                                                  "text": "Ships in March."}]}]}]}])
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", "What is in this photo?\n[image/png attachment, not archived]"),
        ("assistant", "reply 1"),
        ("assistant", "A cat."),
        ("user", "Sources?\nCats purr."),
        ("tool", "Ships in March."),
        ("assistant", "reply 2")]
    # the LangChain integration archives the same parts the same way
    pytest.importorskip("langchain_core")
    from langchain_core.messages import HumanMessage

    from opticmem.integrations.langchain_messages import message_text

    assert message_text(HumanMessage(content=[
        {"type": "text", "text": "Sources?"},
        {"type": "search_result", "source": "wiki", "title": "Cats",
         "content": [{"type": "text", "text": "Cats purr."}]}])) == "Sources?\nCats purr."


def _responses_reply(*output: dict[str, Any]) -> dict[str, Any]:
    """A Responses API ``Response`` as ``model_dump()`` gives it (the fields read here)."""
    return {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5",
            "output": list(output)}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_responses_api_tool_loop_goes_through_the_wrapper(mode: str) -> None:
    """A Responses tool loop passes back ``function_call_output`` items (no ``role``):
    refused as "only text content … got None", and its ``Response`` reply refused with
    UnsupportedReplyError after the model answered. Calls are recorded as the
    chat-completions ones are, results as tool turns, reasoning left out."""
    mem = memory()
    replies = iter([
        _responses_reply(
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "weather",
             "arguments": '{"city":"서울"}', "status": "completed"}),
        _responses_reply({"type": "message", "id": "msg_1", "role": "assistant",
                          "status": "completed", "content": [
                              {"type": "output_text", "text": "12C in 서울.",
                               "annotations": []}]})])
    sent: list[list[Message]] = []

    def chat_fn(messages: list[Message]) -> dict[str, Any]:
        sent.append(messages)
        return next(replies)

    async def achat_fn(messages: list[Message]) -> dict[str, Any]:
        return chat_fn(messages)

    def call(chat: Any, message: Any) -> Any:
        return asyncio.run(chat(message)) if mode == "async" else chat(message)

    chat = with_memory(achat_fn if mode == "async" else chat_fn, mem, session="s")
    first = call(chat, {"role": "user", "content": [{"type": "input_text",
                                                     "text": "Weather in 서울?"}]})
    call_line = '[tool call · weather · id call_1] {"city":"서울"}'
    assert reply_text(first) == call_line
    call(chat, [{"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call_output", "call_id": "call_1",
                 "output": [{"type": "input_text", "text": "12C, clear"}]}])
    assert [(t.role, t.text, t.meta) for t in mem.turns("s")] == [
        ("user", "Weather in 서울?", {}),
        ("assistant", call_line, {"tool_calls": [{"id": "call_1", "name": "weather"}]}),
        ("tool", "12C, clear", {"tool_call_id": "call_1"}),
        ("assistant", "12C in 서울.", {})]
    assert sent[-1][-1] == {"role": "user", "content": "[Tool result · call call_1]\n12C, clear"}


def test_a_responses_api_call_item_passed_in_is_recorded_as_a_tool_call() -> None:
    # e.g. a conversation replayed from the Responses items an app kept: calls and
    # custom tool calls as assistant turns, their outputs as tool turns
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    chat([{"type": "message", "role": "user", "content": "Run it."},
          {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2", "name": "shell",
           "input": "ls -la"},
          {"type": "custom_tool_call_output", "call_id": "call_2", "output": "a.txt"}])
    assert [(t.role, t.text) for t in mem.turns("s")] == [
        ("user", "Run it."), ("assistant", "[tool call · shell · id call_2] ls -la"),
        ("tool", "a.txt"), ("assistant", "reply 1")]


def test_a_responses_message_items_status_is_not_kept_as_a_turns_status() -> None:
    # A Responses ``message`` item carries ``"status": "completed"`` (its generation's
    # state): kept as meta["status"], a user's or assistant's turn read as a tool result's
    # status. Only a tool result's status is kept (a failed one), as in the LangChain
    # integration.
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    chat([{"type": "message", "id": "msg_0", "role": "user", "status": "completed",
           "content": [{"type": "input_text", "text": "Weather?"}]},
          {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
           "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
          {"role": "tool", "tool_call_id": "c1", "content": "no such city",
           "status": "error"}])
    assert [(t.role, t.meta) for t in mem.turns("s")] == [
        ("user", {}), ("assistant", {}),
        ("tool", {"tool_call_id": "c1", "status": "error"}), ("assistant", {})]


_HOSTED = [
    {"type": "web_search_call", "id": "ws_1", "status": "completed",
     "action": {"type": "search", "query": "서울 날씨",
                "sources": [{"type": "url", "url": "https://wx.example"}]}},
    {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"],
     "results": [{"file_id": "f1", "filename": "a.txt", "score": 0.5, "text": "hello"}]},
    {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(1)",
     "container_id": "cntr", "outputs": [{"type": "logs", "logs": "1"}]},
    {"type": "mcp_call", "id": "mcp_1", "name": "lookup", "server_label": "kb",
     "arguments": '{"id":"ORD-7"}', "output": "shipped"},
    {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "QUJD",
     "output_format": "png"},
    {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
     "content": [{"type": "output_text", "text": "Done.", "annotations": []}]}]


def test_a_responses_reply_keeps_its_hosted_tools_items_as_the_langchain_side_does() -> None:
    # A Response whose model ran hosted tools (web search, file search, code interpreter,
    # MCP, image generation) was recorded as its message text alone, the searches and
    # their results dropped; langchain-openai's AIMessage of the same Response is
    # archived with a server_tool_call/-result line per item (an image as its marker).
    mem = memory()
    with_memory(lambda messages: _responses_reply(*_HOSTED), mem, session="s")("Go.")
    text = mem.turns("s")[-1].text
    assert text.splitlines() == [
        '[server_tool_call: {"query":"서울 날씨","type":"search"}]',
        '[server_tool_result: {"sources":[{"type":"url","url":"https://wx.example"}]}]',
        '[server_tool_call: {"queries":["q"]}]',
        '[server_tool_result: [{"file_id":"f1","filename":"a.txt","score":0.5,"text":"hello"}]]',
        '[server_tool_call: {"code":"print(1)"}]',
        '[server_tool_result: [{"logs":"1","type":"logs"}]]',
        '[server_tool_call: {"id":"ORD-7"}]',
        '[server_tool_result: "shipped"]',
        "[image/png attachment, not archived]",
        "Done."]
    # hosted items passed back in (a replayed conversation): an assistant turn each, alike
    chat = with_memory(Recorder(), memory(), session="t")
    chat([{"type": "message", "role": "user", "content": "Go."}, *_HOSTED[:-1]])
    replayed = chat.memory.turns("t")[1:-1]
    assert [t.role for t in replayed] == ["assistant"] * 5
    assert "\n".join(t.text for t in replayed) == "\n".join(text.splitlines()[:-1])
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from opticmem.integrations.langchain_messages import message_text

    lc = [*_HOSTED[:-1], {"type": "text", "text": "Done."}]  # langchain-openai's content
    assert message_text(AIMessage(content=lc,
                                  response_metadata={"model_provider": "openai"})) == text


def test_a_base64_document_a_server_tool_fetched_is_recorded_as_its_marker() -> None:
    # An Anthropic reply whose web fetch read a PDF holds it as a base64 document source:
    # it was recorded as JSON text, the payload whole. It is the attachment marker, as
    # the LangChain integration archives it.
    pdf = "JVBERi0xLjQK" + "A" * 5000
    content = [{"type": "web_fetch_tool_result", "tool_use_id": "s1", "content": {
        "type": "web_fetch_result", "url": "https://x.example/q3.pdf", "content": {
            "type": "document", "title": "Q3", "source": {
                "type": "base64", "media_type": "application/pdf", "data": pdf}}}}]
    text = reply_text({"role": "assistant", "content": content})
    assert text == (
        '[server_tool_result: {"content":{"source":"[application/pdf attachment, '
        'not archived]","title":"Q3","type":"document"},"type":"web_fetch_result",'
        '"url":"https://x.example/q3.pdf"}]')


def test_an_openai_input_file_part_is_recorded_as_its_marker() -> None:
    # A Responses input_file part was refused ("only text content can be remembered"):
    # a user who sent a PDF could not go through the wrapper, and a function_call_output
    # returning a file failed the tool loop. It is the file's marker, as LangChain's is.
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    chat([{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Summarise:"},
        {"type": "input_file", "filename": "q3.pdf",
         "file_data": "data:application/pdf;base64," + "A" * 5000}]},
        {"type": "function_call_output", "call_id": "c1", "output": [
            {"type": "input_file", "file_id": "file-1"}]}])
    assert [t.text for t in mem.turns("s")[:2]] == [
        "Summarise:\n[application/pdf attachment, not archived]",
        "[file attachment, not archived]"]


def test_an_anthropic_document_of_text_is_recorded_as_its_text() -> None:
    # A document whose source is text ({"type": "text", "data": ...}, or a "content"
    # source of text blocks) was recorded as "[text/plain attachment, not archived]",
    # its text lost, where the LangChain integration keeps the text; in a tool_result too.
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    chat({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "Revenue rose."}}]},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "Costs fell."}]}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                        "data": "JVBERi0x"}}]})
    assert [t.text for t in mem.turns("s")[:2]] == [
        "Revenue rose.", "Costs fell.\n[application/pdf attachment, not archived]"]


_CLIENT_CALLS = [
    {"type": "computer_call", "id": "cu_1", "call_id": "call_1", "status": "completed",
     "action": {"type": "click", "x": 4, "y": 2, "button": "left"},
     "pending_safety_checks": []},
    {"type": "local_shell_call", "id": "ls_1", "call_id": "call_2", "status": "completed",
     "action": {"type": "exec", "command": ["ls"], "env": {}}},
    {"type": "shell_call", "id": "sh_1", "call_id": "call_3", "status": "completed",
     "action": {"commands": ["pwd"]}},
    {"type": "apply_patch_call", "id": "ap_1", "call_id": "call_4", "status": "completed",
     "operation": {"type": "update_file", "path": "a.py", "diff": "-x\n+y"}}]
_CLIENT_LINES = [
    '[tool call · computer · id call_1] {"button": "left", "type": "click", "x": 4, "y": 2}',
    '[tool call · local_shell · id call_2] {"command": ["ls"], "env": {}, "type": "exec"}',
    '[tool call · shell · id call_3] {"commands": ["pwd"]}',
    '[tool call · apply_patch · id call_4] {"diff": "-x\\n+y", "path": "a.py", '
    '"type": "update_file"}']


def test_responses_computer_and_shell_calls_are_recorded_as_tool_calls() -> None:
    # computer_call, local_shell_call, shell_call and apply_patch_call items are calls the
    # client runs, answered by *_output items: a Response holding them was recorded
    # without them (an empty reply: not recorded at all), and passed back in they were
    # refused, as were their outputs. They are tool calls and tool results, as the
    # LangChain side now archives them; a screenshot is its marker, never its base64.
    shot = "data:image/png;base64," + "A" * 5000
    mem = memory()
    chat = with_memory(lambda messages: {"object": "response", "output": _CLIENT_CALLS},
                       mem, session="s")
    chat("Open the file.")
    reply = mem.turns("s")[-1]
    assert reply.text.splitlines() == _CLIENT_LINES
    assert [c["id"] for c in reply.meta["tool_calls"]] == ["call_1", "call_2", "call_3",
                                                            "call_4"]
    chat = with_memory(Recorder(), memory(), session="t")
    chat([*_CLIENT_CALLS,
          {"type": "computer_call_output", "call_id": "call_1", "output": {
              "type": "computer_screenshot", "image_url": shot}},
          {"type": "local_shell_call_output", "id": "call_2", "output": "a.py\n"},
          {"type": "shell_call_output", "call_id": "call_3", "output": [
              {"stdout": "/w\n", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}]},
          {"type": "apply_patch_call_output", "call_id": "call_4", "status": "completed"}])
    turns = chat.memory.turns("t")
    assert [t.text for t in turns[:4]] == _CLIENT_LINES
    results = [(t.role, t.meta.get("tool_call_id"), t.text) for t in turns[4:8]]
    assert results == [
        ("tool", "call_1", "[image/png attachment, not archived]"),
        ("tool", "call_2", "a.py\n"),
        ("tool", "call_3", '[{"outcome":{"exit_code":0,"type":"exit"},"stderr":"",'
                           '"stdout":"/w\\n"}]'),
        ("tool", "call_4", "completed")]
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from opticmem.integrations.langchain_messages import message_text

    assert message_text(AIMessage(content=_CLIENT_CALLS)) == reply.text


def test_a_langchain_spoken_answer_is_recorded_as_its_transcript() -> None:
    # A LangChain chat model's audio answer (content "", the transcript in
    # additional_kwargs["audio"]) was returned but not recorded, as an empty reply,
    # where a chat-completions audio reply is recorded as its transcript.
    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    audio = {"id": "au_1", "data": "UklGR", "transcript": "Sunny, 12C."}
    mem = memory()
    with_memory(lambda m: AIMessage("", additional_kwargs={"audio": audio}), mem,
                session="s")("Weather?")
    assert [t.text for t in mem.turns("s")] == ["Weather?", "Sunny, 12C."]


def test_a_tool_result_of_a_json_part_is_recorded_as_its_json() -> None:
    # A tool result whose content holds a LangChain-style json part was refused as
    # "only text", though the LangChain integration archives the same part as its JSON.
    pytest.importorskip("langchain_core")
    from langchain_core.messages import ToolMessage

    from opticmem.integrations.langchain_messages import message_text

    data = {"city": "서울", "temp": 12.5, "shot": "data:image/png;base64," + "A" * 500}
    mem = memory()
    chat = with_memory(Recorder(), mem, session="s")
    chat([{"role": "tool", "tool_call_id": "c1", "content": [{"type": "json", "json": data}]},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                        "content": [{"type": "json", "json": data}]}]}])
    expected = '{"city":"서울","shot":"[image/png attachment, not archived]","temp":12.5}'
    assert [(t.role, t.text) for t in mem.turns("s")][:2] == [("tool", expected),
                                                             ("tool", expected)]
    assert message_text(ToolMessage([{"type": "json", "json": data}],
                                    tool_call_id="c1")) == expected
