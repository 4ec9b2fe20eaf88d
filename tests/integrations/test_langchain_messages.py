"""How LangChain messages are recorded and how a context is shown; the optional extra."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessageChunk,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    SystemMessageChunk,
    ToolMessage,
    ToolMessageChunk,
)

from opticmem import OpticalMemory
from opticmem.integrations.langchain_messages import context_messages, message_turns
from tests.doctests import check_doctests


@pytest.fixture
def memory() -> OpticalMemory:
    return OpticalMemory(codec=None, max_turn_chars=40)


def test_roles_text_and_meta() -> None:
    memory = OpticalMemory(codec=None)
    ai = AIMessage("Checking.", id="a1", tool_calls=[
        {"name": "lookup", "args": {"id": "ABC-1"}, "id": "c1", "type": "tool_call"}])
    [turn] = message_turns(ai, memory)
    assert turn["role"] == "assistant"
    assert turn["text"] == 'Checking.\n[tool call · lookup · id c1] {"id": "ABC-1"}'
    assert turn["meta"] == {"lc_type": "ai", "lc_id": "a1",
                            "tool_calls": [{"id": "c1", "name": "lookup"}]}
    [tool] = message_turns(ToolMessage("boom", tool_call_id="c1", name="lookup",
                                       status="error"), memory)
    assert tool["role"] == "tool" and tool["meta"]["status"] == "error"
    assert tool["meta"]["tool_call_id"] == "c1" and tool["meta"]["name"] == "lookup"
    assert message_turns(SystemMessage("Be brief."), memory)[0]["role"] == "system"
    assert message_turns(ChatMessage(content="x", role="tool"), memory)[0]["role"] == "tool"
    assert message_turns(ChatMessage(content="x", role="critic"), memory)[0]["role"] == "user"
    assert message_turns(RemoveMessage(id="a1"), memory) == []



def test_invalid_tool_calls_are_recorded_as_calls() -> None:
    # A model whose tool-call arguments did not parse gives an AIMessage with only
    # invalid_tool_calls; create_agent ends the run on it (and answers it with an error
    # tool result on the next). It recorded nothing: the assistant's turn was lost.
    ai = AIMessage("", id="a2", invalid_tool_calls=[
        {"type": "invalid_tool_call", "name": "weather", "args": '{"city": "Seo',
         "id": "c9", "error": "truncated"}])
    [turn] = message_turns(ai, OpticalMemory(codec=None))
    assert turn["role"] == "assistant"
    assert turn["text"] == '[tool call · weather · id c9] {"city": "Seo'
    assert turn["meta"]["tool_calls"] == [{"id": "c9", "name": "weather"}]

@pytest.mark.parametrize(("chunk", "role"), [
    (AIMessageChunk(content="streamed answer"), "assistant"),
    (HumanMessageChunk(content="streamed question"), "user"),
    (ToolMessageChunk(content="12C", tool_call_id="c1"), "tool"),
    (FunctionMessageChunk(content="12C", name="weather"), "tool"),
    (SystemMessageChunk(content="Be brief."), "system"),
])
def test_message_chunks_keep_the_role_of_their_message(chunk: BaseMessage, role: str) -> None:
    # A streamed run hands over the aggregated chunk (RunnableWithMessageHistory.stream
    # stores an AIMessageChunk): its type is "AIMessageChunk", not "ai", and the model's
    # answer used to be archived as a user turn.
    [turn] = message_turns(chunk, OpticalMemory(codec=None))
    assert turn["role"] == role


def test_blocks_empty_surrogates_and_splitting(memory: OpticalMemory) -> None:
    blocks = HumanMessage(content=[
        "plain", {"type": "text", "text": "Look:"},
        {"type": "image", "url": "https://example.com/x.jpg"},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf"},
        {"type": "reasoning", "reasoning": "hidden"}, {"type": "mystery", "x": 1}])
    [turn] = message_turns(blocks, OpticalMemory(codec=None))
    assert turn["text"] == ("plain\nLook:\n[image attachment, not archived]\n"
                            "[application/pdf attachment, not archived]\n[mystery block]")
    assert message_turns(AIMessage(""), memory) == []
    assert message_turns(HumanMessage(" \u200b\n "), memory) == []
    assert message_turns(AIMessage(content=[{"type": "reasoning", "reasoning": "r"}]),
                         memory) == []
    [fixed] = message_turns(HumanMessage("a\ud800b"), memory)
    assert fixed["text"] == "a\ufffdb" and "repaired" in fixed["meta"]
    parts = message_turns(HumanMessage("0123456789" * 9, id="big"), memory)
    assert [len(p["text"]) for p in parts] == [40, 40, 10]
    assert [p["meta"]["part"] for p in parts] == [[1, 3], [2, 3], [3, 3]]
    assert all(p["meta"]["lc_id"] == "big" for p in parts)
    memory.add_many("s", parts)  # every produced turn is storable
    assert "".join(t.text for t in memory.turns("s")) == "0123456789" * 9


def test_context_messages_roles() -> None:
    shown = context_messages([
        {"role": "user", "content": [{"type": "text", "text": "pages"}]},
        {"role": "user", "content": "hi", "name": "ada"},
        {"role": "assistant", "content": "hello"},
        {"role": "tool", "content": "42", "tool_call_id": "c9"},
        {"role": "system", "content": "Be brief."},
        {"role": "critic", "content": [{"type": "text", "text": "meh"}]},
    ])
    assert [type(m).__name__ for m in shown] == [
        "HumanMessage", "HumanMessage", "AIMessage", "HumanMessage", "HumanMessage",
        "HumanMessage"]
    assert shown[1].name == "ada"
    assert shown[3].content == "[Tool result · call c9]\n42"
    assert shown[4].content == "[System message]\nBe brief."
    assert shown[5].content == [{"type": "text", "text": "[critic]"},
                                {"type": "text", "text": "meh"}]


MODULES = ["opticmem.integrations.extras", "opticmem.integrations.langchain_messages",
           "opticmem.integrations.langchain_tokens", "opticmem.integrations.langchain_session",
           "opticmem.integrations.langchain_recording", "opticmem.integrations.langchain_tools",
           "opticmem.integrations.langchain_history", "opticmem.integrations.langchain_middleware"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_doctests(name)


BLOCK_LANGCHAIN = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("langchain", "langchain_core", "langgraph"):
            raise ImportError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import opticmem.integrations as integ
import opticmem
try:
    integ.OpticalMemoryMiddleware
except ImportError as exc:
    print("ERR", exc)
"""


def test_package_imports_without_langchain_and_names_the_extra() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCK_LANGCHAIN], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert out.startswith("ERR langchain")
    assert "pip install 'opticmem[langchain]'" in out


REFUSAL = "I can't help with that."


@pytest.mark.parametrize(("message", "text"), [
    # langchain-openai (Chat Completions): empty content, the refusal beside it
    (AIMessage("", additional_kwargs={"refusal": REFUSAL}), REFUSAL),
    (AIMessageChunk(content="", additional_kwargs={"refusal": REFUSAL}), REFUSAL),
    (AIMessage("Partly: ", additional_kwargs={"refusal": REFUSAL}), f"Partly: \n{REFUSAL}"),
    # with the provider known, content_blocks also reads it from additional_kwargs
    (AIMessage([], additional_kwargs={"refusal": REFUSAL},
               response_metadata={"model_provider": "openai"}), REFUSAL),
    # a standard refusal block (Responses API, output_version v1; Anthropic)
    (AIMessage([{"type": "refusal", "refusal": REFUSAL}]), REFUSAL),
    (AIMessage([{"type": "text", "text": "Sorry."}, {"type": "refusal", "refusal": REFUSAL}],
               response_metadata={"output_version": "v1"}), f"Sorry.\n{REFUSAL}"),
], ids=["kwargs", "chunk", "text+kwargs", "kwargs+provider", "block", "text+block-v1"])
def test_a_refusal_is_recorded_as_its_text_as_the_chat_loop_records_it(
    message: AIMessage, text: str,
) -> None:
    # A refusal has empty content and the model's words elsewhere: the assistant's turn
    # was not recorded at all (or as "[refusal block]"), and vanished from the archive.
    from opticmem.integrations.chat_loop import reply_text

    turns = message_turns(message, OpticalMemory(codec=None))
    assert [(t["role"], t["text"]) for t in turns] == [("assistant", text)]
    if isinstance(message.content, str):
        wire = {"role": "assistant", "content": message.content or None, "refusal": REFUSAL}
        assert reply_text(wire) == text  # both integrations store the same thing


def test_a_json_block_is_archived_as_its_json() -> None:
    # A tool's structured result ({"type": "json", "json": ...}) was archived as the
    # placeholder "[json block]": its data was lost from the memory.
    tool = ToolMessage(content=[{"type": "text", "text": "Forecast:"},
                                {"type": "json", "json": {"city": "서울", "temp": 12.5,
                                                          "alerts": ["rain"]}}],
                       tool_call_id="c1", name="weather")
    [turn] = message_turns(tool, OpticalMemory(codec=None))
    assert turn["text"] == 'Forecast:\n{"alerts":["rain"],"city":"서울","temp":12.5}'
    [listed] = message_turns(HumanMessage(content=[{"type": "json", "json": [1, None]}]),
                             OpticalMemory(codec=None))
    assert listed["text"] == "[1,null]"


def test_a_server_tool_call_and_result_keep_non_ascii_text() -> None:
    # They were written with json.dumps' default ASCII escapes: a web search for 서울 날씨
    # was archived as "\uc11c\uc6b8 ...", unreadable and matched by no recall.
    ai = AIMessage(content=[
        {"type": "server_tool_call", "name": "web_search", "args": {"query": "서울 날씨"},
         "id": "s1"},
        {"type": "server_tool_result", "tool_call_id": "s1", "status": "success",
         "output": "맑음, 12°C"},
        {"type": "text", "text": "맑아요."}])
    [turn] = message_turns(ai, OpticalMemory(codec=None))
    assert turn["text"] == ('[server_tool_call: {"query":"서울 날씨"}]\n'
                            '[server_tool_result: "맑음, 12°C"]\n맑아요.')


def test_a_provider_block_with_text_is_archived_as_its_text() -> None:
    # LangChain has no standard type for these and hands them over as non_standard
    # blocks: the user's words and a tool's search result were archived as
    # "[input_text block]" and "[search_result block]".
    memory = OpticalMemory(codec=None)
    [said] = message_turns(HumanMessage(content=[{"type": "input_text", "text": "Plan Titan"}]),
                           memory)
    assert said["text"] == "Plan Titan"
    found = ToolMessage(content=[{"type": "search_result", "title": "Titan", "source": "wiki",
                                  "content": [{"type": "text", "text": "Launch in March."},
                                              {"type": "text", "text": "Budget $2M."}]}],
                        tool_call_id="c1")
    [result] = message_turns(found, memory)
    assert result["text"] == "Launch in March.\nBudget $2M."
    [marker] = message_turns(HumanMessage(content=[{"type": "mystery", "x": 1}]), memory)
    assert marker["text"] == "[mystery block]"


def test_an_image_url_part_holding_the_url_string_is_archived_as_an_attachment() -> None:
    # Gemini's form of an image part reached the archive as "[image_url block]"; the
    # chat-loop wrapper already marked it as an image.
    memory = OpticalMemory(codec=None)
    [inline] = message_turns(HumanMessage(content=[
        {"type": "text", "text": "Look"},
        {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"}]), memory)
    assert inline["text"] == "Look\n[image/jpeg attachment, not archived]"
    [remote] = message_turns(HumanMessage(content=[
        {"type": "image_url", "image_url": "https://x.invalid/a.png"}]), memory)
    assert remote["text"] == "[image attachment, not archived]"


def test_provider_image_and_media_parts_are_archived_as_attachments() -> None:
    memory = OpticalMemory(codec=None)
    for part, marker in [
        ({"type": "input_image", "image_url": "data:image/png;base64,iVBO"},
         "[image/png attachment, not archived]"),
        ({"type": "media", "mime_type": "image/jpeg", "data": "/9j/"},
         "[image/jpeg attachment, not archived]"),
        ({"type": "media", "mime_type": "audio/wav", "file_uri": "gs://b/a.wav"},
         "[audio/wav attachment, not archived]")]:
        [turn] = message_turns(HumanMessage(content=[part]), memory)
        assert turn["text"] == marker, part


_CALL = {"name": "get_weather", "args": {"city": "Seoul"}, "id": "toolu_01",
         "type": "tool_call"}
_USE = {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
        "input": {"city": "Seoul"}}
_LINE = '[tool call · get_weather · id toolu_01] {"city": "Seoul"}'


def test_a_tool_call_held_twice_by_the_message_is_recorded_once() -> None:
    # langchain-anthropic's form: a tool_use block and the same call in tool_calls.
    memory = OpticalMemory(codec=None)
    for message in [
        AIMessage(content=[{"type": "text", "text": "Let me check."}, _USE], tool_calls=[_CALL]),
        AIMessage(content=[{"type": "text", "text": "Let me check."}, _USE], tool_calls=[_CALL],
                  response_metadata={"model_provider": "anthropic"}),
        AIMessageChunk(content=[{"type": "text", "text": "Let me check.", "index": 0},
                                {**_USE, "input": {}, "index": 1,
                                 "partial_json": '{"city": "Seoul"}'}],
                       tool_call_chunks=[{"name": "get_weather", "args": '{"city": "Seoul"}',
                                          "id": "toolu_01", "index": 1,
                                          "type": "tool_call_chunk"}]),
        AIMessage(content=[{"type": "text", "text": "Let me check."},
                           {"type": "function_call", "name": "get_weather", "id": "fc_1",
                            "arguments": '{"city": "Seoul"}', "call_id": "toolu_01"}],
                  tool_calls=[_CALL]),
    ]:
        [turn] = message_turns(message, memory)
        assert turn["text"] == f"Let me check.\n{_LINE}", message
        assert turn["meta"]["tool_calls"] == [{"id": "toolu_01", "name": "get_weather"}]


def test_a_tool_call_held_only_as_a_content_block_is_recorded() -> None:
    # An Anthropic-form assistant message converted from a dict has no tool_calls: its
    # tool_use block, dropped as a copy of one, lost the call from the archive.
    from langchain_core.messages import convert_to_messages

    [ai] = convert_to_messages([{"role": "assistant", "content": [
        {"type": "text", "text": "Let me check."}, _USE]}])
    assert isinstance(ai, AIMessage) and ai.tool_calls == []
    [turn] = message_turns(ai, OpticalMemory(codec=None))
    assert turn["text"] == f"Let me check.\n{_LINE}"
    assert turn["meta"]["tool_calls"] == [{"id": "toolu_01", "name": "get_weather"}]
    # a second, different call beside a listed one is kept too (matched by id)
    other = {**_USE, "id": "toolu_02", "input": {"city": "Busan"}}
    [both] = message_turns(AIMessage(content=[_USE, other], tool_calls=[_CALL]),
                           OpticalMemory(codec=None))
    assert both["text"] == (
        f'{_LINE}\n[tool call · get_weather · id toolu_02] {{"city": "Busan"}}')


def test_anthropic_server_tool_blocks_are_archived_alike_with_or_without_the_provider() -> None:
    # With the provider named, LangChain translates them (server_tool_call/-result) and
    # they were archived as lines of their query and results; without it (an older
    # checkpoint's message, one built by hand) they came as non_standard blocks and were
    # archived as "[server_tool_use block]", the search and its results lost.
    content = [
        {"type": "server_tool_use", "id": "s1", "name": "web_search",
         "input": {"query": "서울 날씨"}},
        {"type": "web_search_tool_result", "tool_use_id": "s1", "content": [
            {"type": "web_search_result", "url": "https://wx.example/seoul", "title": "서울"}]},
        {"type": "text", "text": "맑아요."}]
    memory = OpticalMemory(codec=None)
    [plain] = message_turns(AIMessage(content=content), memory)
    [named] = message_turns(AIMessage(content=content,
                                      response_metadata={"model_provider": "anthropic"}), memory)
    assert plain["text"] == named["text"] == (
        '[server_tool_call: {"query":"서울 날씨"}]\n'
        '[server_tool_result: [{"title":"서울","type":"web_search_result",'
        '"url":"https://wx.example/seoul"}]]\n맑아요.')


def test_a_tool_result_answering_a_call_held_only_as_a_content_block_is_no_orphan() -> None:
    # An assistant message converted from an Anthropic-style dict holds its call only as
    # a tool_use block (no tool_calls): its ToolMessage, read as answering nothing, was
    # sent as a headed HumanMessage, breaking the tool_use/tool_result pair.
    from langchain_core.messages import convert_to_messages

    from opticmem.integrations.langchain_messages import orphan_tool_results_headed

    [ai] = convert_to_messages([{"role": "assistant", "content": [_USE]}])
    assert isinstance(ai, AIMessage) and ai.tool_calls == []
    result = ToolMessage("12C", tool_call_id="toolu_01", name="get_weather")
    orphan = ToolMessage("?", tool_call_id="toolu_09", name="get_weather")
    shown = orphan_tool_results_headed([HumanMessage("hi"), ai, result, orphan])
    assert shown[2] is result
    assert isinstance(shown[3], HumanMessage)


def test_openai_hosted_tool_items_are_archived_alike_with_or_without_the_provider() -> None:
    # With the provider named, LangChain translates a Responses web_search_call into
    # server_tool_call/-result blocks, archived as lines of its query and sources; without
    # it (an older checkpoint's message, one built by hand) the item came as a
    # non_standard block and was archived as "[web_search_call block]", the search lost.
    content = [{"type": "web_search_call", "id": "ws_1", "status": "completed",
                "action": {"type": "search", "query": "서울 날씨",
                           "sources": [{"type": "url", "url": "https://wx.example"}]}},
               {"type": "code_interpreter_call", "id": "ci_1", "status": "completed",
                "code": "print(1)", "outputs": [{"type": "logs", "logs": "1"}]},
               {"type": "text", "text": "맑아요."}]
    memory = OpticalMemory(codec=None)
    [plain] = message_turns(AIMessage(content=content), memory)
    [named] = message_turns(AIMessage(content=content,
                                      response_metadata={"model_provider": "openai"}), memory)
    assert plain["text"] == named["text"] == (
        '[server_tool_call: {"query":"서울 날씨","type":"search"}]\n'
        '[server_tool_result: {"sources":[{"type":"url","url":"https://wx.example"}]}]\n'
        '[server_tool_call: {"code":"print(1)"}]\n'
        '[server_tool_result: [{"logs":"1","type":"logs"}]]\n맑아요.')


_PDF = "JVBERi0xLjQK" + "A" * 5000
_FETCH = [
    {"type": "server_tool_use", "id": "s1", "name": "web_fetch",
     "input": {"url": "https://x.example/q3.pdf"}},
    {"type": "web_fetch_tool_result", "tool_use_id": "s1", "content": {
        "type": "web_fetch_result", "url": "https://x.example/q3.pdf", "content": {
            "type": "document", "title": "Q3", "source": {
                "type": "base64", "media_type": "application/pdf", "data": _PDF}}}}]


def test_a_base64_document_a_server_tool_fetched_is_archived_as_its_marker() -> None:
    # Anthropic's web fetch returns a PDF as a document with a base64 source: it was
    # archived as JSON text, its 5,000-character payload whole, with or without the
    # provider named. It is the attachment marker, the document's other fields kept; a
    # document whose source is text keeps its text.
    memory = OpticalMemory(codec=None)
    for meta in ({}, {"model_provider": "anthropic"}):
        [turn] = message_turns(AIMessage(content=_FETCH, response_metadata=meta), memory)
        assert "A" * 100 not in turn["text"]
        assert turn["text"].splitlines()[1] == (
            '[server_tool_result: {"content":{"source":"[application/pdf attachment, '
            'not archived]","title":"Q3","type":"document"},"type":"web_fetch_result",'
            '"url":"https://x.example/q3.pdf"}]')
    page = {**_FETCH[1], "content": {**_FETCH[1]["content"], "content": {
        "type": "document", "source": {"type": "text", "media_type": "text/plain",
                                       "data": "Revenue rose."}}}}
    [turn] = message_turns(AIMessage(content=[page]), memory)
    assert '"data":"Revenue rose."' in turn["text"]


def test_an_openai_input_file_part_is_archived_as_its_marker() -> None:
    # A Responses input_file part (a PDF sent as file_data, or by file_id) was archived
    # as "[input_file block]" by LangChain; it is the file's marker, as a chat
    # completions "file" part is.
    memory = OpticalMemory(codec=None)
    parts = [{"type": "input_text", "text": "Summarise:"},
             {"type": "input_file", "filename": "q3.pdf",
              "file_data": "data:application/pdf;base64," + "A" * 5000},
             {"type": "input_file", "file_id": "file-1"}]
    [turn] = message_turns(HumanMessage(content=parts), memory)
    assert turn["text"] == ("Summarise:\n[application/pdf attachment, not archived]\n"
                            "[file attachment, not archived]")


def test_an_anthropic_document_of_text_content_is_archived_as_its_text() -> None:
    # A document whose source is "content" (text blocks, or a string) is text the user
    # or a tool gave, which LangChain passes on untranslated: it was archived as
    # "[file attachment, not archived]", the text lost.
    memory = OpticalMemory(codec=None)
    doc = {"type": "document", "title": "Q3", "source": {
        "type": "content", "content": [{"type": "text", "text": "Revenue rose."}]}}
    as_str = {"type": "document", "source": {"type": "content", "content": "Costs fell."}}
    [turn] = message_turns(HumanMessage(content=[doc, as_str]), memory)
    assert turn["text"] == "Revenue rose.\nCosts fell."
    [result] = message_turns(ToolMessage(content=[doc], tool_call_id="t1"), memory)
    assert result["text"] == "Revenue rose."


def test_responses_computer_and_shell_calls_are_tool_calls() -> None:
    # A computer_call (local_shell_call, shell_call, apply_patch_call) block is a call
    # the client runs, answered by a ToolMessage of its call_id: it was archived as
    # "[computer_call block]", the action lost, and its result was headed as an orphan.
    # It is a tool call line, its screenshot result an image marker, never its base64.
    from opticmem.integrations.langchain_messages import orphan_tool_results_headed

    call = {"type": "computer_call", "id": "cu_1", "call_id": "call_1",
            "status": "completed", "action": {"type": "click", "x": 4, "y": 2},
            "pending_safety_checks": []}
    shell = {"type": "local_shell_call", "id": "ls_1", "call_id": "call_2",
             "status": "completed", "action": {"type": "exec", "command": ["ls"]}}
    memory = OpticalMemory(codec=None)
    for meta in ({}, {"model_provider": "openai"}):
        ai = AIMessage(content=[call, shell], response_metadata=meta)
        [turn] = message_turns(ai, memory)
        assert turn["text"] == (
            '[tool call · computer · id call_1] {"type": "click", "x": 4, "y": 2}\n'
            '[tool call · local_shell · id call_2] {"command": ["ls"], "type": "exec"}')
        assert turn["meta"]["tool_calls"] == [{"id": "call_1", "name": "computer"},
                                              {"id": "call_2", "name": "local_shell"}]
        result = ToolMessage(content=[{"type": "computer_screenshot",
                                       "image_url": "data:image/png;base64," + "A" * 5000}],
                             tool_call_id="call_1",
                             additional_kwargs={"type": "computer_call_output"})
        assert orphan_tool_results_headed([ai, result])[1] is result
        [shot] = message_turns(result, memory)
        assert shot["text"] == "[image/png attachment, not archived]"


def test_a_spoken_answer_is_archived_as_its_transcript() -> None:
    # langchain-openai's answer of an audio-output model has content "" and what the
    # model said in additional_kwargs["audio"]: it recorded nothing (an empty message),
    # where the chat-loop wrapper records an OpenAI audio reply as its transcript.
    memory = OpticalMemory(codec=None)
    audio = {"id": "au_1", "data": "UklGR" + "A" * 5000, "transcript": "Sunny, 12C."}
    [turn] = message_turns(AIMessage("", additional_kwargs={"audio": audio}), memory)
    assert turn["text"] == "Sunny, 12C."


def test_an_inline_image_in_a_tool_json_result_is_archived_as_its_marker() -> None:
    # A tool's structured (json block) result holding a base64 data URL was archived
    # with the payload whole (and priced as its marker): it is the marker.
    shot = "data:image/png;base64," + "A" * 5000
    result = ToolMessage(content=[{"type": "json", "json": {"page": 2, "shot": shot}}],
                         tool_call_id="t1")
    [turn] = message_turns(result, OpticalMemory(codec=None))
    assert turn["text"] == '{"page":2,"shot":"[image/png attachment, not archived]"}'


def test_an_anthropic_tool_result_in_a_human_message_is_a_tool_turn_with_its_image_marked(
) -> None:
    # A tool_result block (LangChain's non_standard) was read as a provider's text block:
    # the screenshot it held vanished without a marker and the result was archived as
    # the user's words, where with_memory records a tool turn per block.
    from opticmem.integrations.langchain_messages import message_text

    png = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                       "data": "AAAA"}}
    message = HumanMessage([
        {"type": "tool_result", "tool_use_id": "t1",
         "content": [{"type": "text", "text": "shot"}, png]},
        {"type": "tool_result", "tool_use_id": "t2", "content": "no such city",
         "is_error": True},
        {"type": "text", "text": "Keep it short."}], id="m1")
    assert message_text(message) == (
        "[Tool result · call t1]\nshot\n[image/png attachment, not archived]\n"
        "[Tool result · call t2]\nno such city\nKeep it short.")
    turns = message_turns(message, OpticalMemory(codec=None))
    assert [(t["role"], t["text"], t["meta"]) for t in turns] == [
        ("tool", "shot\n[image/png attachment, not archived]",
         {"lc_type": "human", "lc_id": "m1", "tool_call_id": "t1"}),
        ("tool", "no such city",
         {"lc_type": "human", "lc_id": "m1", "tool_call_id": "t2", "status": "error"}),
        ("user", "Keep it short.", {"lc_type": "human", "lc_id": "m1"})]
    # the chat-loop wrapper records the same message the same way
    from opticmem.integrations import with_memory

    mem = OpticalMemory(codec=None)
    chat = with_memory(lambda messages: "ok", mem, session="s")
    chat({"role": "user", "content": message.content})
    assert [(t.role, t.text) for t in mem.turns("s")][:3] == [
        (t["role"], t["text"]) for t in turns]


def test_responses_items_in_additional_kwargs_tool_outputs_are_archived() -> None:
    # Older langchain-openai versions (output_version "v0") keep Responses items other
    # than messages and function calls in additional_kwargs["tool_outputs"]: a computer
    # call and a web search there were archived as nothing, and the computer call's
    # result was headed as an orphan. Translated or not (LangChain moves them into
    # content_blocks only for list content naming openai), each is archived once.
    from opticmem.integrations.langchain_messages import orphan_tool_results_headed

    outputs = [{"type": "computer_call", "id": "cu_1", "call_id": "c1",
                "status": "completed", "action": {"type": "click"}},
               {"type": "web_search_call", "id": "ws_1", "status": "completed",
                "action": {"type": "search", "query": "Titan"}}]
    memory = OpticalMemory(codec=None)
    for content in ("x", [{"type": "text", "text": "x"}]):
        for meta in ({}, {"model_provider": "openai"}):
            ai = AIMessage(content, additional_kwargs={"tool_outputs": outputs},
                           response_metadata=meta)
            [turn] = message_turns(ai, memory)
            assert turn["text"] == (
                'x\n[server_tool_call: {"query":"Titan","type":"search"}]\n'
                '[server_tool_result: ""]\n[tool call · computer · id c1] {"type": "click"}')
            assert turn["meta"]["tool_calls"] == [{"id": "c1", "name": "computer"}]
            result = ToolMessage("done", tool_call_id="c1")
            assert orphan_tool_results_headed([ai, result])[1] is result
