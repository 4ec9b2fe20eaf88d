"""Give any chat function an optical memory: ``with_memory(chat_fn, memory, session=...)``.

``chat_fn`` is whatever calls your model: it takes OpenAI-style messages (a list of
dicts) and returns the reply. The wrapper keeps the conversation in an
:class:`~opticmem.OpticalMemory` and, on every call,

1. records the new user message(s) — **before** calling the model, so nothing the user
   said is lost if the model call fails (call again with no message to retry); tool
   results and assistant messages passed in are made storable as the reply is (4.), and
   not recorded when they show nothing (a tool that printed nothing);
2. builds the context: the system prompt verbatim (never compressed, never stored), then
   ``memory.context(session)`` as OpenAI-format messages (older turns as page images,
   recent ones as text; opening with a user message, a short note before a reply that
   would open it, as Anthropic and Bedrock need), all within the memory's token budget
   under its cost model;
3. calls ``chat_fn`` with those messages;
4. records the reply (only when ``chat_fn`` returned one) and returns it unchanged. A
   reply the archive cannot hold as given is made storable, not refused: lone
   surrogates become U+FFFD and a reply over ``max_turn_chars`` is stored in parts.

Responses API input items are taken too: a ``message`` item as its message, a
``function_call`` item (or ``custom_tool_call``, or a call of the computer, shell or
apply-patch tool: ``computer_call``, ``local_shell_call``, ``shell_call``,
``apply_patch_call``, named ``computer``… and its action as arguments) as an assistant
message calling that tool, its ``*_output`` item as a ``tool`` result answering its
``call_id`` (a screenshot as its image marker), a hosted tool's item
(``web_search_call``…) as an assistant message of its lines (below); a ``reasoning``
item is not recorded.

Text parts: chat completions' ``text``, the Responses API's ``input_text`` and
``output_text``, and an Anthropic ``search_result`` block (its text parts), recorded as
their text, as the LangChain integration records them; a LangChain-style ``json`` part
(``{"type": "json", "json": ...}``, a tool's structured result) as its compact JSON, an
inline image or file in it as its marker.

Attachments: an ``image_url``, ``input_image``, ``input_audio``, ``file`` or
``input_file`` part of a message passed in (and an Anthropic ``image`` or ``document``
block, a Gemini ``media`` block, a LangChain standard ``image``/``audio``/``video``/
``file`` block, a Responses ``computer_screenshot``) is stored, and shown to
``chat_fn``, as a marker line such as ``[image/png attachment, not archived]`` — the
memory keeps text, as the LangChain integration does — so the model reads the marker,
not the attachment itself, even in the call that brings it.

Tool results and system messages in the history: an assistant message's ``tool_calls``
(and legacy ``function_call``) are recorded as text lines after its content (``[tool call
· NAME · id ID] ARGS``), a legacy ``function`` message as a ``tool`` turn, and
recorded ``tool`` and ``system`` turns are sent as user messages headed ``[Tool result ·
NAME · call ID]`` / ``[System message]`` — a tool message that answers no structured tool
call is rejected by chat APIs (OpenAI: HTTP 400), and so, by several, is a system message
after the first. (The LangChain integration shows them the same way.) The wrapper
records each reply itself: after a reply that calls tools, pass only the tool results
(``chat({"role": "tool", "tool_call_id": ..., "content": ...})``, or the Anthropic user
message of ``tool_result`` blocks, recorded as a tool turn each), not the reply again,
which would record it twice.

>>> from opticmem import OpticalMemory
>>> def echo(messages):
...     return "you said: " + messages[-1]["content"]
>>> chat = with_memory(echo, OpticalMemory(codec=None), session="alice",
...                    system="You are terse.")
>>> chat("hello")
'you said: hello'
>>> [t.role for t in chat.memory.turns("alice")]
['user', 'assistant']

An ``async def`` chat function gets an async wrapper (:class:`AsyncMemoryChat`) with the
same behaviour; one wrapper serves many sessions (``chat(msg, session="bob")``).

Reply shapes ``chat_fn`` may return (anything else raises :class:`UnsupportedReplyError`
after the user turn was recorded):

* a ``str``: the reply text;
* an assistant message: ``{"role": "assistant", "content": str | [text parts]}``
  (``role`` may be left out), or one that declines, ``{"content": None, "refusal":
  str}`` (recorded as its refusal text, as are ``refusal`` content parts), or one that
  speaks, ``{"content": None, "audio": {...}}`` (recorded as the audio's transcript; a
  message passed in with only the audio's id, as an audio marker), or one that calls
  tools (``tool_calls``, content ``None`` or text: recorded as the tool calls of a
  message passed in are, above; a custom tool's call as its free-form ``input``), or
  an Anthropic ``Message`` (``thinking`` blocks left out, ``tool_use`` blocks recorded
  as tool calls, server-side tool blocks — web search, code execution, MCP — as a line
  each, as the LangChain integration records them, without the provider's opaque data:
  a web search result's ``encrypted_content`` is not archived);
* a chat-completions response: ``{"choices": [{"message": {...}}, ...]}`` (the first
  choice), which is what an OpenAI-compatible endpoint's JSON body is;
* a Responses API ``Response`` (``{"object": "response", "output": [...]}``, or the SDK
  object): the text of its ``message`` items, a line per call item (``function_call``,
  ``custom_tool_call``, ``computer_call``, a shell's or apply-patch's call), and a
  hosted tool's items (``web_search_call``,
  ``file_search_call``, ``code_interpreter_call``, ``mcp_call``…) as the
  ``server_tool_call``/``server_tool_result`` lines the LangChain integration archives
  them as (a generated image as its marker); ``reasoning`` items are left out;
* a LangChain ``AIMessage`` (a LangChain chat model's answer, e.g. with
  ``format="langchain"``): recorded as the LangChain integration records it — reasoning
  and ``thinking`` blocks left out, tool calls (``tool_use`` blocks) as tool-call lines,
  a refusal as its text;
* an object with ``model_dump()`` (a pydantic model, such as the ``openai`` SDK's
  ``ChatCompletion`` or ``ChatCompletionMessage``): read as the dict it dumps to.

Model parameters (temperature, tools…) belong to ``chat_fn`` itself: bind them with a
closure or :func:`functools.partial`. Tool-calling agents are better served by the
LangChain middleware, which keeps tool calls as structured messages.
"""

from __future__ import annotations

import copy
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from opticmem import OpticalMemory, message_tokens
from opticmem.context import (
    Context,
    ContextTurn,
    lead_note_cost,
    merge_message_runs,
)
from opticmem.errors import BudgetError, InvalidTurnError, OpticMemError
from opticmem.integrations.turn_text import (
    RESPONSES_OUTPUTS,
    SENT_AS_IS,
    archived_parts,
    audio_text,
    document_text,
    has_visible_text,
    hosted_tool_lines,
    json_text,
    newest_turn_tokens,
    part_marker,
    provider_text,
    refusal_text,
    repair_surrogates,
    responses_call,
    responses_output,
    server_tool_text,
    shown_turn,
    tool_call_line,
    without_payloads,
)
from opticmem.memory import _check_budget
from opticmem.sessions import validate_session

log = logging.getLogger(__name__)

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": ..., "content": ...}``."""

MessageInput = str | Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""What a call takes: the user's text, one message, or several messages."""

R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

Format = Literal["openai", "langchain"]


class UnsupportedReplyError(OpticMemError, TypeError):
    """``chat_fn`` returned something that is not a reply this module can read (see the
    module docstring for the accepted shapes). The user turn stays recorded; the reply
    is not."""


_NOT_TEXT = ("thinking", "redacted_thinking", "tool_use")
"""Anthropic content blocks of an assistant message that add no text of their own: its
reasoning, left out as the LangChain integration leaves it out, and its tool calls,
written after its text by :func:`_turn_of` (:func:`_tool_calls`)."""


_TEXT_PARTS: Mapping[str, str] = {"text": "text", "refusal": "refusal",
                                   "input_text": "text", "output_text": "text"}
"""Content parts that are text, and the key holding it: chat completions' ``text`` (and
the ``refusal`` an assistant's content may hold), the Responses API's ``input_text`` and
``output_text`` — refused as "only text", a Responses-style message could not be
recorded although its ``input_image`` parts were."""


def _text_of(content: object, *, assistant: bool = False) -> str | None:
    """The text of a message ``content``: a string, or a list of parts joined by
    newlines — text parts (:data:`_TEXT_PARTS`) and Anthropic ``search_result`` blocks as
    their text, a LangChain-style ``json`` part (a tool's structured result) as its
    compact JSON (:func:`~opticmem.integrations.turn_text.json_text`, inline payloads as
    markers), attachments (``image_url``, ``input_audio``, ``file``…) as the marker the
    LangChain integration archives them as (:func:`part_marker`); in an ``assistant``
    message, Anthropic's ``thinking`` and ``tool_use`` blocks add nothing here
    (:data:`_NOT_TEXT`) and its server-side tool blocks (``server_tool_use``,
    ``web_search_tool_result``…) are a line each
    (:func:`~opticmem.integrations.turn_text.server_tool_text`). ``None`` when
    it holds anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part in content:
            if not isinstance(part, Mapping):
                return None
            kind = part.get("type")
            key = _TEXT_PARTS.get(kind) if isinstance(kind, str) else None
            if key is not None and isinstance(part.get(key), str):
                texts.append(part[key])
            elif kind == "search_result" and (found := provider_text(part)) is not None:
                texts.append(found)  # an Anthropic search result a tool returns: its text
            elif (found := document_text(part)) is not None:
                texts.append(found)  # a plain-text document: its text, not a marker
            elif kind == "json" and "json" in part:
                # a tool's structured result as LangChain holds it: its JSON, compact,
                # an inline image or file as its marker — as the LangChain integration
                # archives it; refused, a tool loop passing such results could not go on
                texts.append(json_text(without_payloads(part["json"])))
            elif assistant and kind in _NOT_TEXT:
                continue
            elif assistant and (line := server_tool_text(part)) is not None:
                texts.append(line)
            elif (marker := part_marker(part)) is not None:
                texts.append(marker)
            else:
                return None
        return "\n".join(texts)
    return None


def _message_text(msg: Mapping[str, Any], *, calls: bool = False) -> str | None:
    """What an assistant, user or tool message says, before any tool-call lines: its
    content's text, then its ``refusal`` — an OpenAI model that declines answers with
    ``content: None`` and the reason there, which is what it said and is kept — then its
    spoken ``audio`` (an audio-output model's reply, also with ``content: None``): the
    transcript, or the audio marker where the message holds only the audio's id. ``None``
    when the content is not text, or is ``None`` with nothing else (no refusal, no audio
    and, with ``calls``, no tool calls) in a message of the caller's own, or with no
    ``content`` at all; in an assistant or tool message, which already happened, an explicit
    ``content: None`` is an empty text (``""``: an empty reply, returned and not recorded,
    as ``content: ""`` is)."""
    refusal = refusal_text(msg.get("refusal"))
    extra = [refusal] if refusal else []
    if (spoken := audio_text(msg.get("audio"))) is not None:
        extra.append(spoken)
    content = msg.get("content")
    if content is None:
        # a chat-completions message with nothing to say has content None (Azure's
        # content filter, an OpenAI-compatible server's empty answer): refused, the reply
        # raised UnsupportedReplyError where content "" was returned
        happened = "content" in msg and msg.get("role") in (*_HAPPENED, "function")
        return "\n".join(extra) if extra or calls or happened else None
    text = _text_of(content, assistant=msg.get("role") == "assistant")
    if text is None:
        return None
    return "\n".join([text, *extra] if text else extra)


def reply_text(reply: object) -> str:
    """The text a reply of any accepted shape (module docstring) is recorded as: the
    assistant's text (or refusal), then a line per tool call it makes.

    >>> reply_text("hi"), reply_text({"role": "assistant", "content": "hi"})
    ('hi', 'hi')
    >>> reply_text({"choices": [{"message": {"content": [{"type": "text", "text": "hi"}]}}]})
    'hi'
    >>> reply_text({"content": None, "tool_calls": [{"id": "c1", "type": "function",
    ...             "function": {"name": "wx", "arguments": '{"city": "Seoul"}'}}]})
    '[tool call · wx · id c1] {"city": "Seoul"}'
    """
    text: str = _reply_turn(reply)["text"]
    return text


def _reply_turn(reply: object) -> dict[str, Any]:
    """The turn a reply is recorded as (:func:`_turn_of`, tool calls included: a
    ``chat_fn`` with tools bound answers with them); raises
    :class:`UnsupportedReplyError` for any other shape."""
    if isinstance(reply, str):
        return {"role": "assistant", "text": reply, "meta": None}
    if (turn := _langchain_turn(reply)) is not None:
        return turn
    dump = getattr(reply, "model_dump", None)
    data = dump() if callable(dump) and not isinstance(reply, Mapping) else reply
    if (isinstance(data, Mapping) and data.get("object") == "response"
            and isinstance(output := data.get("output"), list)):
        data = _responses_reply(output)  # a Responses API ``Response``
    if isinstance(data, Mapping) and "choices" in data:
        choices = data["choices"]
        if isinstance(choices, Sequence) and choices and isinstance(choices[0], Mapping):
            data = choices[0].get("message")
    if isinstance(data, Mapping) and data.get("role", "assistant") == "assistant":
        try:
            return _turn_of(0, {**data, "role": "assistant"})
        except InvalidTurnError:
            pass
    raise UnsupportedReplyError(
        f"chat_fn returned {type(reply).__name__} {_preview(reply)}; expected a str, an "
        "assistant message {'role': 'assistant', 'content': str}, a chat-completions "
        "response {'choices': [{'message': ...}]} or an object with model_dump()"
    )


def _langchain_turn(reply: object) -> dict[str, Any] | None:
    """The turn a LangChain ``AIMessage`` reply (what a LangChain chat model's ``invoke``
    returns, e.g. behind ``format="langchain"``) is recorded as, by the LangChain
    integration's own rules (:func:`~opticmem.integrations.langchain_messages.message_text`):
    its text blocks, reasoning left out, provider-native tool-use copies left out in
    favour of its tool calls (invalid ones too), a refusal in ``additional_kwargs`` kept.
    Read through ``model_dump()`` instead, a reply with a reasoning or Anthropic
    ``thinking``/``tool_use`` block was refused, and the model's answer lost. ``None``:
    not a LangChain message (LangChain is only imported when the caller already has)."""
    lc = sys.modules.get("langchain_core.messages")
    if lc is None or not isinstance(reply, lc.AIMessage):
        return None
    from opticmem.integrations.langchain_messages import message_calls, message_text

    calls = [{"id": c.get("id"), "name": c.get("name")} for c in message_calls(reply)]
    return {"role": "assistant", "text": message_text(reply),
            "meta": {"tool_calls": calls} if calls else None}


def _preview(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class _Call:
    """One call, checked before anything is stored: who, what is new, what is fixed."""

    session: str
    system: tuple[Message, ...]
    turns: tuple[dict[str, Any], ...]
    budget: int  # what the memory's context may cost: the budget less the system prompt
    whole: int  # the call's whole budget, system prompt included


def _as_messages(message: MessageInput | None) -> list[Mapping[str, Any]]:
    if message is None:
        return []
    if isinstance(message, str):
        return [{"role": "user", "content": message}]
    if isinstance(message, Mapping):
        return [message]
    if isinstance(message, Sequence):
        items = [m for m in message if isinstance(m, Mapping)]
        if len(items) == len(message):
            return items
    raise InvalidTurnError(
        f"expected the user's text, a message dict or a list of them, got "
        f"{type(message).__name__}"
    )


_INSTRUCTIONS = ("system", "developer")
"""Roles of input messages that are the call's instructions, sent first and not stored
(``developer`` is OpenAI's successor to ``system`` for its newer models)."""

_HAPPENED = ("assistant", "tool")
"""Roles of input messages that already happened and are made storable, not refused."""


def _tool_calls(i: int, msg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tool calls of an assistant message (``[]``: none): its OpenAI ``tool_calls``,
    its Anthropic ``tool_use`` content blocks (an Anthropic ``Message`` read through
    ``model_dump()``: refused, the model's answer was lost), then its legacy
    ``function_call`` (a call with no id, which older models and the ``functions``
    parameter still produce)."""
    if msg.get("role") != "assistant":
        return []
    calls = msg.get("tool_calls") or []
    if not (isinstance(calls, Sequence) and not isinstance(calls, str)
            and all(isinstance(c, Mapping) for c in calls)):
        raise InvalidTurnError(f"message {i}: tool_calls must be a list of tool-call dicts, "
                               f"got {_preview(calls)}")
    content = msg.get("content")
    uses = [{"id": p.get("id"), "function": {"name": p.get("name"),
                                             "arguments": p.get("input")}}
            for p in (content if isinstance(content, list) else [])
            if isinstance(p, Mapping) and p.get("type") == "tool_use"]
    legacy = msg.get("function_call")
    if legacy and not isinstance(legacy, Mapping):
        raise InvalidTurnError(f"message {i}: function_call must be a dict with name and "
                               f"arguments, got {_preview(legacy)}")
    return [*calls, *uses, *([{"function": legacy}] if legacy else [])]


def _responses_items(msg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``msg`` as chat messages: itself, or — an OpenAI Responses API input item, which
    has no ``role`` — the message it stands for: a call item (``function_call``,
    ``custom_tool_call``, ``computer_call``, a shell's or apply-patch's call) as an
    assistant message calling that tool, its ``*_output`` item as a ``tool`` message
    answering ``call_id`` (:func:`~opticmem.integrations.turn_text.responses_output`;
    refused before, as the calls were, a computer-use loop could not go through), a hosted
    tool's item (``web_search_call``…) as an assistant message of its lines
    (:func:`~opticmem.integrations.turn_text.hosted_tool_lines`), a ``reasoning``
    item as nothing (reasoning is left out, as the LangChain integration leaves it out).
    Refused as "only text content" (``got None``), a Responses tool loop could not pass
    its tool results through the wrapper.

    >>> _responses_items({"type": "function_call_output", "call_id": "c1", "output": "12C"})
    [{'role': 'tool', 'tool_call_id': 'c1', 'content': '12C'}]
    >>> _responses_items({"type": "reasoning", "id": "rs_1", "summary": []})
    []
    """
    if "role" in msg:
        return [msg]
    kind = msg.get("type")
    if kind in RESPONSES_OUTPUTS:
        # local_shell_call_output names its call by ``id``
        return [{"role": "tool", "tool_call_id": msg.get("call_id") or msg.get("id"),
                 "content": responses_output(msg)}]
    if (call := _responses_call(msg)) is not None:
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]
    if kind == "reasoning":
        return []
    if (lines := hosted_tool_lines(msg)) is not None:
        return [{"role": "assistant", "content": [{"type": "text", "text": line}
                                                  for line in lines]}]
    return [msg]


def _responses_call(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """A Responses call item (:data:`~opticmem.integrations.turn_text.RESPONSES_CALLS`:
    a ``function_call``, ``custom_tool_call``, ``computer_call``, shell or apply-patch
    call) as a chat-completions tool call (``None``: not such an item)."""
    if (found := responses_call(item)) is None:
        return None
    name, ident, args = found
    return {"id": ident, "type": "function", "function": {"name": name, "arguments": args}}


def _responses_reply(output: Sequence[object]) -> dict[str, Any]:
    """A Responses API ``Response``'s ``output`` items as one assistant message: the
    content parts of its ``message`` items (``output_text``, ``refusal``), the calls of
    its call items (:data:`~opticmem.integrations.turn_text.RESPONSES_CALLS`: left out
    before but for functions and custom tools), and a hosted tool's items
    (``web_search_call``, ``code_interpreter_call``…) as the lines the LangChain
    integration archives them as (:func:`~opticmem.integrations.turn_text.hosted_tool_lines`),
    in their order; ``reasoning`` items are left out."""
    content: list[Any] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        if kind == "message" and item.get("role", "assistant") == "assistant":
            parts = item.get("content")
            content.extend(parts if isinstance(parts, list) else
                           [{"type": "text", "text": parts}] if isinstance(parts, str) else [])
        elif (call := _responses_call(item)) is not None:
            calls.append(call)
        elif (lines := hosted_tool_lines(item)) is not None:
            content.extend({"type": "text", "text": line} for line in lines)
    return {"role": "assistant", "content": content, "tool_calls": calls}


def _tool_results_split(msg: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``msg`` as the messages the wrapper records: itself, or — a user message holding
    Anthropic ``tool_result`` blocks, how the Messages API returns a tool's output — one
    ``tool`` message per block (its ``tool_use_id`` the ``tool_call_id``, an ``is_error``
    result marked ``status: "error"`` as a LangChain ``ToolMessage`` is), then a user
    message with the blocks left, if any. Refused, a hand-written Anthropic tool loop
    could not go through the wrapper at all.

    >>> for m in _tool_results_split({"role": "user", "content": [
    ...         {"type": "tool_result", "tool_use_id": "t1", "content": "12C"},
    ...         {"type": "text", "text": "and Busan?"}]}):
    ...     print(m)
    {'role': 'tool', 'tool_call_id': 't1', 'content': '12C'}
    {'role': 'user', 'content': [{'type': 'text', 'text': 'and Busan?'}]}
    """
    content = msg.get("content")
    if msg.get("role") != "user" or not isinstance(content, list) or not any(
            isinstance(p, Mapping) and p.get("type") == "tool_result" for p in content):
        return [msg]
    out: list[Mapping[str, Any]] = []
    rest = []
    for part in content:
        if not (isinstance(part, Mapping) and part.get("type") == "tool_result"):
            rest.append(part)
            continue
        result: dict[str, Any] = {"role": "tool", "tool_call_id": part.get("tool_use_id"),
                                  "content": part.get("content") or ""}
        if part.get("is_error") is True:
            result["status"] = "error"
        out.append(result)
    if rest:
        out.append({**msg, "content": rest})
    return out


def _turn_of(i: int, msg: Mapping[str, Any]) -> dict[str, Any]:
    """A turn for :meth:`OpticalMemory.add_many` from an input message: its text, then
    one line per tool call of an assistant message (``[tool call · NAME · id ID] ARGS``)
    so that the archive keeps what was asked of which tool."""
    calls = _tool_calls(i, msg)
    text = _message_text(msg, calls=bool(calls))
    if text is None:
        raise InvalidTurnError(
            f"message {i}: only text content can be remembered (a string, or a list of "
            f"the parts the opticmem.integrations.chat_loop docstring lists: text, "
            f"input_text, output_text, refusal, json and search_result parts, and "
            f"attachments such as image_url, input_image, input_audio, file, input_file, "
            f"image and document parts, recorded as markers), got "
            f"{_preview(msg.get('content'))}"
        )
    lines, called = [], []
    for call in calls:
        # {"function": {...}}, a custom tool's {"custom": {"name", "input"}} (free-form
        # text: read as a function call, its name and input were lost) or flat
        fn = next((f for f in (call.get("function"), call.get("custom"))
                   if isinstance(f, Mapping)), call)
        lines.append(tool_call_line(fn.get("name"), call.get("id"),
                                    fn.get("arguments", fn.get("input", fn.get("args")))))
        called.append({"id": call.get("id"), "name": fn.get("name")})
    text = "\n".join([text, *lines] if text else lines)
    meta: dict[str, Any] = {k: msg[k] for k in ("name", "tool_call_id")
                            if isinstance(msg.get(k), str)}
    if msg.get("role") == "tool" and isinstance(msg.get("status"), str):
        # a tool result's status (an Anthropic is_error one's "error"); a Responses
        # ``message`` item's "completed" is its generation's state, not the turn's
        meta["status"] = msg["status"]
    if called:
        meta["tool_calls"] = called
    # a legacy "function" message is the result of a function_call: a tool result
    role = "tool" if msg.get("role") == "function" else msg.get("role")
    return {"role": role, "text": text, "meta": meta or None}


def _storable(turn: dict[str, Any], max_chars: int) -> list[dict[str, Any]]:
    """``turn`` as the turns it is archived as. An assistant or tool message already
    happened (a model's reply, a tool's result), so lone surrogates are repaired and text
    over ``max_chars`` is split (:func:`archived_parts`) rather than refused, and one with
    nothing visible (a tool that printed nothing) is not recorded, as the LangChain
    integration does: refused, it would fail every later call of the agent's loop. The
    caller's own messages stay for the memory to check."""
    if turn["role"] not in _HAPPENED:
        return [turn]
    parts = archived_parts(turn["text"], max_chars)
    if not parts:
        log.info("an empty %s message is not recorded", turn["role"])
        return []
    meta = _repaired(turn["meta"] or {})  # ids and names too: the reply is not refused
    return [{**turn, "text": text, "meta": {**meta, **extra} or None} for text, extra in parts]


def _repaired(value: Any) -> Any:
    """``value`` (a turn's metadata) with lone surrogates in its strings, at any depth,
    replaced by U+FFFD — a tool call id or name is as much the model's output as the text."""
    if isinstance(value, str):
        return repair_surrogates(value)[0]
    if isinstance(value, list):
        return [_repaired(v) for v in value]
    if isinstance(value, dict):
        return {k: _repaired(v) for k, v in value.items()}
    return value


def _plain(turn: ContextTurn) -> Message:
    """A context's turn as :meth:`~opticmem.Context.messages` gives it (before
    :func:`shown_turn`)."""
    plain: Message = {"role": turn.role, "content": turn.text}
    plain.update({k: v for k in ("name", "tool_call_id")
                  if isinstance(v := turn.turn.meta.get(k), str)})
    return plain


class _MemoryLoop(Generic[F]):
    """What the sync and async wrappers share: settings, call planning, reply recording."""

    def __init__(
        self,
        chat_fn: F,
        memory: OpticalMemory,
        *,
        session: str | None = None,
        system: str | Mapping[str, Any] | None = None,
        format: Format = "openai",
        budget_tokens: int | None = None,
        merge_runs: bool = False,
    ) -> None:
        if not isinstance(memory, OpticalMemory):
            raise TypeError(f"memory must be an OpticalMemory, got {type(memory).__name__}")
        if format not in ("openai", "langchain"):
            raise ValueError(f"format must be 'openai' or 'langchain', not {format!r}")
        if budget_tokens is not None:
            budget_tokens = _check_budget(budget_tokens)
        self.chat_fn = chat_fn
        self.memory = memory
        self.session = None if session is None else validate_session(session)
        self.system: Message | None = (
            {"role": "system", "content": system} if isinstance(system, str)
            else dict(system) if system is not None else None
        )
        self.format: Format = format
        self.budget_tokens = budget_tokens
        self.merge_runs = merge_runs

    def _plan(
        self, message: MessageInput | None, session: str | None, budget_tokens: int | None
    ) -> _Call:
        """Check a call and price its system prompt; raises before anything is stored."""
        name = session if session is not None else self.session
        if name is None:
            raise ValueError("no session: pass session= to with_memory() or to the call")
        name = validate_session(name)
        messages = _as_messages(message)
        given = [m for m in messages if m.get("role") in _INSTRUCTIONS]
        # a copy of the wrapper's own prompt: chat_fn may edit what it is sent in place
        system = tuple(dict(m) for m in given) or (
            (copy.deepcopy(self.system),) if self.system else ())
        turns = tuple(part for i, m in enumerate(messages)
                      if m.get("role") not in _INSTRUCTIONS
                      for item in _responses_items(m)
                      for each in _tool_results_split(item)
                      for part in _storable(_turn_of(i, each), self.memory.max_turn_chars))
        if budget_tokens is not None:
            # a whole number ≥ 1, checked here: a fractional, NaN or bool budget passed
            # the old ``< 1`` test, and the memory refused it only after the user's turn
            # was stored
            budget_tokens = _check_budget(budget_tokens)
        budget = budget_tokens or self.budget_tokens or self.memory.budget_tokens
        left = budget - message_tokens(system, self.memory.cost_model)
        if left < 1:
            raise BudgetError(
                f"the system prompt costs {budget - left} tokens, the whole budget is "
                f"{budget}: nothing is left for the conversation"
            )
        return _Call(name, system, turns, left, budget)

    @staticmethod
    def _too_small(call: _Call, newest: int) -> BudgetError:
        """The call's whole budget cannot hold the system prompt and the newest turn, which
        costs ``newest`` tokens as sent (its heading included): told in the whole budget,
        the figure to raise ``budget_tokens`` to, system prompt included. The message says
        that the call's turns were stored (recording comes first), so a caller who catches
        it does not send them again."""
        needed = newest + call.whole - call.budget
        stored = (f"; the {len(call.turns)} turn(s) of this call are stored, nothing was sent"
                  if call.turns else "; nothing was sent")
        return BudgetError(
            f"a budget of {call.whole} tokens cannot hold the system prompt and the newest "
            f"turn ({newest} tokens under this cost model) with what is sent around them; "
            f"raise budget_tokens to at least {needed}{stored}", needed=needed)

    def _overshoot(self, ctx: Context, budget: int) -> int:
        """Tokens by which ``ctx`` costs more than ``budget`` once its ``tool`` and
        ``system`` turns (and those of the memory's own roles) carry the heading
        :func:`_shown` gives them (≤ 0: it fits)."""
        model = self.memory.cost_model
        extra = 0
        for t in ctx.turns:
            if t.role not in SENT_AS_IS:
                plain = _plain(t)
                extra += (message_tokens([shown_turn(plain)], model)
                          - message_tokens([plain], model))
        return ctx.cost.total + extra - budget

    def _newest(self, ctx: Context) -> tuple[int, int]:
        """What the newest turn of ``ctx`` costs as stored and as sent (with its heading),
        each with the lead note a reply shown alone needs before it
        (:data:`~opticmem.context.LEAD_NOTE`): a budget a context of the session can
        always be planned for, and what the call then sends."""
        model = self.memory.cost_model
        newest = ctx.turns[-1]
        return (newest_turn_tokens(ctx, model),
                message_tokens([shown_turn(_plain(newest))], model)
                + lead_note_cost([newest.role], model))

    def _next_budget(self, call: _Call, ctx: Context, budget: int) -> int | None:
        """``None`` when ``ctx`` (planned for ``budget``) fits the call with its headings;
        else the smaller budget to plan it for — never below what the newest turn alone
        costs, so planning ends. Raises :class:`BudgetError` when even the newest turn,
        headed, does not fit."""
        over = self._overshoot(ctx, call.budget)
        if over <= 0:
            return None
        bare, sent = self._newest(ctx)
        if sent > call.budget:
            raise self._too_small(call, sent)
        return max(budget - over, bare)

    def _shown(self, call: _Call, ctx: Context, messages: list[Message]) -> list[Message]:
        """What ``chat_fn`` is sent: the system prompt, then the context's messages with
        ``tool`` and ``system`` turns as headed user messages
        (:func:`~opticmem.integrations.turn_text.shown_turn`): recorded tool results
        follow no structured tool call, which chat APIs reject. The context's messages
        open with a user message (its lead note when a reply would open it, priced in
        its cost), so the conversation sent does too, as Anthropic and Bedrock need.

        With ``merge_runs``, runs of one role in that whole list — system messages, the
        pages' message and the turns after it, tool results shown as user messages — are
        merged (:func:`~opticmem.context.merge_message_runs`), so that the roles alternate
        as Bedrock's Converse needs; that only removes per-message overhead, so what is
        sent still fits the budget planned above."""
        first = 1 if ctx.pages else 0  # the memory message with the pages stays as it is
        sent = [*call.system, *messages[:first], *(shown_turn(m) for m in messages[first:])]
        return merge_message_runs(sent) if self.merge_runs else sent

    def _reply_turns(self, turn: dict[str, Any]) -> list[dict[str, Any]]:
        """The reply as assistant turns: lone surrogates replaced, split at the memory's
        ``max_turn_chars`` — the model already answered, so its reply is stored rather
        than refused (and returned to the caller either way)."""
        return _storable(turn, self.memory.max_turn_chars)

    def _reply(self, call: _Call, reply: object) -> dict[str, Any] | None:
        """The reply's turn to record (``None`` for an empty reply: returned, not stored,
        since the archive keeps no empty turns)."""
        if inspect.isawaitable(reply):
            if inspect.iscoroutine(reply):
                reply.close()
            raise UnsupportedReplyError(
                "chat_fn returned an awaitable: make it an `async def` function so that "
                "with_memory gives it the async wrapper"
            )
        turn = _reply_turn(reply)
        if not has_visible_text(repair_surrogates(turn["text"])[0]):
            log.info("session %r: empty reply returned but not recorded", call.session)
            return None
        return turn


class MemoryChat(_MemoryLoop[Callable[[list[Message]], R]], Generic[R]):
    """A sync chat function with memory; made by :func:`with_memory`.

    Call it with the user's text, a message dict or a list of messages (``None``: no new
    message, e.g. to retry after ``chat_fn`` failed). Keyword arguments override the
    wrapper's ``session`` and ``budget_tokens`` for one call.
    """

    def __call__(
        self,
        message: MessageInput | None = None,
        *,
        session: str | None = None,
        budget_tokens: int | None = None,
    ) -> R:
        call = self._plan(message, session, budget_tokens)
        if call.turns:
            self.memory.add_many(call.session, call.turns)
        budget: int | None = call.budget
        while budget is not None:  # headings of tool/system turns: plan for less, strictly
            try:
                ctx = self.memory.context(call.session, budget_tokens=budget)
            except BudgetError as exc:
                if exc.needed is None:
                    raise
                alone = self.memory.context(call.session, budget_tokens=exc.needed)
                raise self._too_small(call, self._newest(alone)[1]) from None
            budget = self._next_budget(call, ctx, budget)
        reply = self.chat_fn(self._shown(call, ctx, ctx.messages(self.format)))
        turn = self._reply(call, reply)
        if turn is not None:
            self.memory.add_many(call.session, self._reply_turns(turn))
        return reply


class AsyncMemoryChat(_MemoryLoop[Callable[[list[Message]], Awaitable[R]]], Generic[R]):
    """The async twin of :class:`MemoryChat` (for an ``async def`` chat function): the
    memory's store and rendering run through its ``a``-prefixed methods, so the event
    loop never blocks on them."""

    async def __call__(
        self,
        message: MessageInput | None = None,
        *,
        session: str | None = None,
        budget_tokens: int | None = None,
    ) -> R:
        call = self._plan(message, session, budget_tokens)
        if call.turns:
            await self.memory.aadd_many(call.session, call.turns)
        budget: int | None = call.budget
        while budget is not None:
            try:
                ctx = await self.memory.acontext(call.session, budget_tokens=budget)
            except BudgetError as exc:
                if exc.needed is None:
                    raise
                alone = await self.memory.acontext(call.session, budget_tokens=exc.needed)
                raise self._too_small(call, self._newest(alone)[1]) from None
            budget = self._next_budget(call, ctx, budget)
        reply = await self.chat_fn(self._shown(call, ctx, await ctx.amessages(self.format)))
        turn = self._reply(call, reply)
        if turn is not None:
            await self.memory.aadd_many(call.session, self._reply_turns(turn))
        return reply


def _is_async(fn: Callable[..., Any]) -> bool:
    """``async def`` functions, partials of them, and objects with an async ``__call__``."""
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


# The two overloads overlap (a sync function may return an awaitable); async functions
# are the ones meant by the first, which is tried first. It takes a function returning a
# Coroutine (what `async def` gives, and what _is_async tells apart at run time), not any
# Awaitable: with Awaitable, a chat function typed with the documented `list[dict[str,
# Any]]` matched both overloads with different parameter types, and mypy, blaming the
# `Any`, typed the wrapper as Any.
@overload
def with_memory(  # type: ignore[overload-overlap]
    chat_fn: Callable[[list[Message]], Coroutine[Any, Any, R]],
    memory: OpticalMemory,
    *,
    session: str | None = ...,
    system: str | Mapping[str, Any] | None = ...,
    format: Format = ...,
    budget_tokens: int | None = ...,
    merge_runs: bool = ...,
) -> AsyncMemoryChat[R]: ...


@overload
def with_memory(
    chat_fn: Callable[[list[Message]], R],
    memory: OpticalMemory,
    *,
    session: str | None = ...,
    system: str | Mapping[str, Any] | None = ...,
    format: Format = ...,
    budget_tokens: int | None = ...,
    merge_runs: bool = ...,
) -> MemoryChat[R]: ...


def with_memory(
    chat_fn: Callable[[list[Message]], Any],
    memory: OpticalMemory,
    *,
    session: str | None = None,
    system: str | Mapping[str, Any] | None = None,
    format: Format = "openai",
    budget_tokens: int | None = None,
    merge_runs: bool = False,
) -> MemoryChat[Any] | AsyncMemoryChat[Any]:
    """Wrap ``chat_fn`` so that it remembers: see the module docstring.

    Args:
        chat_fn: takes a list of OpenAI-style messages, returns a reply (a ``str``, an
            assistant message, a chat-completions response or a pydantic object of
            either). An ``async def`` function gets an :class:`AsyncMemoryChat`.
        memory: where the conversation lives; its budget and cost model bound what
            ``chat_fn`` receives (system prompt included).
        session: the default session; a call may name another (``session=``).
        system: a system prompt (text or a whole message), sent first and verbatim on
            every call, never stored or compressed. System (or ``developer``) messages
            passed to a call replace it for that call.
        format: ``"openai"`` (``image_url`` data-URL parts, default) or ``"langchain"``
            (v1 standard ``image`` blocks) for the page images.
        budget_tokens: overrides the memory's budget for this wrapper.
        merge_runs: merge each run of consecutive messages of one role in what
            ``chat_fn`` is sent into one message (content blocks, in order; see
            :func:`~opticmem.context.merge_message_runs`), for APIs that refuse two in a
            row, such as Bedrock's Converse. Messages with a ``name`` or other fields of
            their own are left as they are, so alternation then depends on them. What is
            sent costs no more than unmerged, so the budget holds.
    """
    if not callable(chat_fn):
        raise TypeError(f"chat_fn must be callable, got {type(chat_fn).__name__}")
    kind = AsyncMemoryChat if _is_async(chat_fn) else MemoryChat
    return kind(chat_fn, memory, session=session, system=system, format=format,
                budget_tokens=budget_tokens, merge_runs=merge_runs)


__all__ = [
    "AsyncMemoryChat",
    "MemoryChat",
    "Message",
    "MessageInput",
    "UnsupportedReplyError",
    "reply_text",
    "with_memory",
]
