"""LangChain messages ↔ opticmem turns: how a message is recorded, how a context is shown.

**Recording** (:func:`message_turns`: one LangChain message → zero or more turns):

* Role: ``HumanMessage`` → ``user``, ``AIMessage`` → ``assistant``, ``ToolMessage`` →
  ``tool``, ``SystemMessage`` → ``system``, ``ChatMessage`` → its own role when the memory
  accepts it (else ``user``); a ``RemoveMessage`` (a state edit, not a message) records
  nothing. The middleware never hands this the system messages an agent's messages start
  with (:func:`leading_system`): they are the system prompt, sent as such on every call.
* Text: string content as is. Content blocks (read through ``content_blocks``, LangChain's
  standard form): text blocks joined by newlines; images, audio, video and files become a
  marker line such as ``[image/png attachment, not archived]`` (the memory archives text;
  the agent's state keeps the original); a ``json`` block (a tool's structured result)
  becomes its JSON, compact with sorted keys
  (:func:`~opticmem.integrations.turn_text.json_text`); a provider's own block with text
  (an OpenAI ``input_text``, an Anthropic ``search_result``) as that text; a server
  tool's call and result (Anthropic's ``server_tool_use``…, OpenAI's hosted
  ``web_search_call``…) as ``[server_tool_call: ...]``/``[server_tool_result: ...]``
  lines whether or not LangChain translated them (the message names its provider);
  reasoning
  blocks are left out (providers do not take them back as history). A refusal — a
  ``refusal`` block, or langchain-openai's empty ``AIMessage`` with the model's words in
  ``additional_kwargs["refusal"]`` — is archived as its text after the content, as the
  chat-loop wrapper archives an OpenAI refusal
  (:func:`~opticmem.integrations.turn_text.refusal_text`). So is a spoken answer
  (langchain-openai's ``additional_kwargs["audio"]``, content empty): its transcript,
  as the wrapper records an OpenAI audio reply
  (:func:`~opticmem.integrations.turn_text.audio_text`). An ``AIMessage``'s tool calls
  are written after its text as lines ``[tool call · NAME · id ID] {"arg": ...}``, so the
  archive and the pages keep what was asked of which tool — its invalid tool calls too
  (arguments that did not parse, written as the model sent them): the agent answers them
  with an error tool result — and a call held only as a content block (an Anthropic
  ``tool_use`` of a message built from a dict; an OpenAI Responses ``computer_call``,
  shell or apply-patch call, named ``computer``… with its action as arguments), each
  call once (:func:`message_calls`). The Responses items an older langchain-openai
  keeps in ``additional_kwargs["tool_outputs"]`` are archived as the same items in the
  content are: a call as its tool-call line, a hosted tool's item as its lines
  (:func:`tool_outputs`).
* Tool results: a ``HumanMessage`` holding Anthropic ``tool_result`` blocks (a message
  built from the Messages API's dict) is recorded as the chat-loop wrapper records that
  message: a ``tool`` turn per block, read as a ``ToolMessage`` of its content (an image
  as its marker; ``tool_call_id`` its ``tool_use_id``, ``status`` ``error`` for an
  ``is_error`` one), then a ``user`` turn of the rest (:func:`tool_results_split`).
* Metadata kept with the turn: ``lc_id`` (the message id, how the middleware knows what
  it already recorded), ``lc_type``, ``name``, ``tool_call_id``, ``tool_calls`` (ids and
  names), ``status`` of a failed tool result.
* A message with nothing visible to archive (empty content, no refusal and no tool
  calls) is not recorded: there is nothing to remember, and the memory would reject it
  (:class:`~opticmem.errors.InvalidTurnError`). Lone surrogates are replaced by U+FFFD
  (``meta["repaired"]``), because the archive holds valid Unicode only — in the ids and
  names kept as metadata too (:func:`message_id`). Text longer than
  the memory's ``max_turn_chars`` is split into consecutive turns (``meta["part"] = [k,
  n]``) instead of being refused, so an agent thread never jams on one huge tool result.

**Showing** (:func:`context_messages`: a context's messages → LangChain messages): the
memory message with the pages (v1 ``image`` blocks) and the ``user`` turns become
``HumanMessage``, ``assistant`` turns ``AIMessage``. A ``tool`` turn becomes a
``HumanMessage`` headed ``[Tool result · NAME · call ID]`` and a ``system`` turn one
headed ``[System message]``: in recalled history the assistant's tool calls are text, and
chat APIs reject a ``ToolMessage`` that follows no structured tool call, or a system
message after the first. The context's :data:`~opticmem.context.LEAD_NOTE`, put before a
reply that would open it, is a user message like the others: a ``HumanMessage``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

try:
    from langchain_core.messages import (
        AIMessage,
        BaseMessage,
        ChatMessage,
        HumanMessage,
        RemoveMessage,
        SystemMessage,
        ToolMessage,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

from opticmem.integrations.turn_text import (
    ATTACHMENT_KINDS,
    RESPONSES_CALLS,
    archived_parts,
    attachment_marker,
    audio_text,
    document_text,
    headed,
    hosted_tool_lines,
    json_text,
    part_marker,
    provider_text,
    refusal_text,
    repair_surrogates,
    responses_call,
    server_tool_line,
    server_tool_text,
    shown_turn,
    tool_result_head,
    without_payloads,
)
from opticmem.integrations.turn_text import tool_call_line as _call_line
from opticmem.memory import OpticalMemory

ROLE_OF_TYPE: Mapping[str, str] = {
    "human": "user", "ai": "assistant", "tool": "tool", "function": "tool", "system": "system",
    "HumanMessageChunk": "user", "AIMessageChunk": "assistant", "ToolMessageChunk": "tool",
    "FunctionMessageChunk": "tool", "SystemMessageChunk": "system",
}
"""Turn role for each LangChain message type (``ChatMessage`` uses its own role). Chunks
have types of their own (``AIMessageChunk``, not ``ai``) and reach a history whole when a
run streams: ``RunnableWithMessageHistory.stream`` stores the aggregated answer chunk."""

REQUIRED_ROLES: tuple[str, ...] = ("user", "assistant", "tool", "system")
"""Roles the memory must accept for the LangChain integration to record every message."""


def _block_text(block: Mapping[str, Any]) -> str | None:
    """What a standard content block contributes to the archived text (``None``: nothing)."""
    kind = block.get("type")
    if kind in ("text", "text-plain"):
        text = block.get("text")
        return text if isinstance(text, str) else None
    if kind in ATTACHMENT_KINDS:
        return attachment_marker(str(kind), block.get("mime_type"))
    if kind == "refusal":
        return refusal_text(block.get("refusal"))
    if kind == "reasoning" or is_call_block(block):
        return None  # reasoning is not history; tool calls come from ``message_calls``
    if kind == "non_standard":
        value = block.get("value")
        if not isinstance(value, Mapping):
            return "[unknown block]"
        if value.get("type") in ("thinking", "redacted_thinking"):
            return None  # a provider's reasoning
        if value.get("type") == "json":
            # a tool's JSON result: its data, an inline image or file in it as its
            # marker (a screenshot tool's data URL was archived whole)
            return json_text(without_payloads(value.get("json")))
        if (line := server_tool_text(value)) is not None:
            # Anthropic's server tool blocks when the message does not name its provider:
            # the line LangChain's translation of them gets, not "[server_tool_use block]"
            return line
        if (lines := hosted_tool_lines(value)) is not None:
            # OpenAI's hosted tool items likewise (a Responses web_search_call…): the
            # lines its translation gets, not "[web_search_call block]"
            return "\n".join(lines)
        if (text := provider_text(value)) is not None:
            return text
        if (text := document_text(value)) is not None:
            # an Anthropic document of a "content" source (LangChain translates only a
            # "text" source, to text-plain): its text, not "[file attachment...]"
            return text
        if (marker := part_marker(value)) is not None:
            # an attachment in a provider's form LangChain has no standard block for (an
            # ``image_url`` whose value is the URL string, as Gemini takes it): marked as
            # the chat-loop wrapper marks it, not "[image_url block]"
            return marker
        return f"[{value.get('type')} block]"
    if kind in ("server_tool_call", "server_tool_result"):
        # non-ASCII kept: a search's query or results escaped as \uXXXX were unreadable on
        # the pages and matched no recall or fact
        return server_tool_line(str(kind), block.get("args", block.get("output", "")))
    return f"[{kind} block]"


def tool_call_line(call: Mapping[str, Any]) -> str:
    """How one tool call of an ``AIMessage`` is written into the archived text.

    >>> tool_call_line({"name": "recall", "args": {"query": "Titan"}, "id": "call_1"})
    '[tool call · recall · id call_1] {"query": "Titan"}'
    """
    return _call_line(call.get("name"), call.get("id"), call.get("args", {}))


def tool_result_message(block: Mapping[str, Any]) -> ToolMessage | None:
    """The ``ToolMessage`` an Anthropic ``tool_result`` block of a ``HumanMessage`` (how
    the Messages API returns a tool's output, in a message built from a dict) stands for
    (``None``: not such a block, or content neither text nor a list of parts): its
    ``content``, its ``tool_use_id`` as the ``tool_call_id``, an ``is_error`` result
    with ``status="error"``. LangChain passes the block on as ``non_standard``; read as
    a provider's text block, an image the tool returned (a screenshot) was dropped
    without a marker, and the result was archived as the user's words.

    >>> tool_result_message({"type": "tool_result", "tool_use_id": "t1",
    ...                      "content": "unknown city", "is_error": True}).status
    'error'
    """
    if block.get("type") != "tool_result":
        return None
    content = block.get("content") or ""
    if not isinstance(content, (str, list)):
        return None
    ident = block.get("tool_use_id")
    return ToolMessage(content=content, tool_call_id=ident if isinstance(ident, str) else "",
                       status="error" if block.get("is_error") is True else "success")


def tool_results_split(message: BaseMessage) -> list[BaseMessage]:
    """``message`` as the messages it is recorded as: itself, or — a ``HumanMessage``
    holding Anthropic ``tool_result`` blocks — a ``ToolMessage`` per block
    (:func:`tool_result_message`, with the message's id), then the message with the
    blocks left, if any. The chat-loop wrapper splits the same user message the same
    way, so both integrations archive a tool result as a ``tool`` turn answering its
    call, its attachments as their markers.

    >>> [(m.type, m.content) for m in tool_results_split(HumanMessage([
    ...     {"type": "tool_result", "tool_use_id": "t1", "content": "12C"},
    ...     {"type": "text", "text": "and Busan?"}]))]
    [('tool', '12C'), ('human', [{'type': 'text', 'text': 'and Busan?'}])]
    """
    if not isinstance(message, HumanMessage) or isinstance(message.content, str):
        return [message]
    results: list[BaseMessage] = []
    rest: list[Any] = []
    for part in message.content:
        found = tool_result_message(part) if isinstance(part, Mapping) else None
        if found is None:
            rest.append(part)
        else:
            found.id = message.id
            results.append(found)
    if not results:
        return [message]
    return [*results, *([message.model_copy(update={"content": rest})] if rest else [])]


def message_text(message: BaseMessage) -> str:
    """The text a message is archived as (see the module docstring for the rules); a
    ``HumanMessage`` of Anthropic ``tool_result`` blocks as its tool results, each headed
    ``[Tool result · call ID]`` as it is shown back (:func:`tool_results_split`), then
    its own text."""
    pieces = tool_results_split(message)
    if pieces != [message]:
        texts = [(headed(tool_result_head(None, p.tool_call_id), text)
                  if isinstance(p, ToolMessage) else text)
                 for p in pieces if (text := message_text(p))]
        return "\n".join(str(t) for t in texts)
    if isinstance(message.content, str):
        parts = [message.content] if message.content else []
    else:
        parts = [t for b in message.content_blocks if (t := _block_text(b)) is not None]
    if isinstance(message, AIMessage):
        refusal = refusal_text(message.additional_kwargs.get("refusal"))
        if refusal and refusal not in parts:  # not already read from a refusal block
            parts.append(refusal)
        if (spoken := audio_text(message.additional_kwargs.get("audio"))) is not None:
            # langchain-openai's audio answer: content "", what the model said is here
            parts.append(spoken)
        parts.extend(line for _, lines in hosted_tool_outputs(message) for line in lines)
        parts.extend(tool_call_line(c) for c in message_calls(message))
    return "\n".join(parts)


CALL_BLOCKS: frozenset[str] = frozenset({"tool_call", "tool_call_chunk", "invalid_tool_call"})
"""Standard content-block types that copy a tool call of the message (``tool_calls``)."""

NATIVE_CALL_BLOCKS: frozenset[str] = frozenset({"tool_use", *RESPONSES_CALLS})
"""Provider-native content blocks of an ``AIMessage`` that hold a tool call: Anthropic's
``tool_use`` (``id``), OpenAI Responses' ``function_call``, ``custom_tool_call`` and the
computer, shell and apply-patch tools' calls (``call_id``, which their ``*_output``
answers; ``id`` is the output item's own)."""


def is_call_block(block: Mapping[str, Any]) -> bool:
    """Whether a standard content block of an ``AIMessage`` is one of its tool calls — a
    ``tool_call``, a ``tool_call_chunk`` (a streamed answer merged) or an
    ``invalid_tool_call`` block (:data:`CALL_BLOCKS`), or a provider's own call
    (:data:`NATIVE_CALL_BLOCKS`: Anthropic's ``tool_use``, an OpenAI Responses
    ``function_call``…) LangChain passes on as ``non_standard`` — which
    :func:`message_calls` lists once: archived or priced as a block too, each call of a
    langchain-anthropic message counted twice.

    >>> is_call_block({"type": "non_standard", "value": {"type": "tool_use", "id": "t1"}})
    True
    >>> is_call_block({"type": "text", "text": "hi"})
    False
    """
    kind = block.get("type")
    if kind in CALL_BLOCKS:
        return True
    value = block.get("value")
    return kind == "non_standard" and isinstance(value, Mapping) and value.get(
        "type") in NATIVE_CALL_BLOCKS


def _content_call(block: object) -> tuple[dict[str, Any], set[str]] | None:
    """The tool call a raw content block of an ``AIMessage`` holds, as ``tool_calls``
    holds one (``name``, ``args``, ``id``), with every id it can be matched by (``None``:
    not a call)."""
    if not isinstance(block, Mapping):
        return None
    kind = block.get("type")
    if kind not in CALL_BLOCKS and kind not in NATIVE_CALL_BLOCKS:
        return None
    name, ident = block.get("name"), block.get("id")
    if (found := responses_call(block)) is not None:
        # a function's call, or a computer's click or a shell's command: written as
        # "[computer_call block]" before, the action lost and its result an orphan
        name, ident, args = found
    elif kind == "tool_use":
        args = block.get("input")
        partial = block.get("partial_json")
        if not args and isinstance(partial, str) and partial:  # a streamed call, merged
            args = partial
    else:
        args = block.get("args")
    ids = {i for i in (block.get("call_id"), block.get("id")) if isinstance(i, str) and i}
    return {"name": name, "args": {} if args is None else args, "id": ident}, ids


def tool_outputs(message: AIMessage) -> list[Mapping[str, Any]]:
    """The OpenAI Responses items older langchain-openai versions (``output_version``
    ``"v0"``) keep in ``additional_kwargs["tool_outputs"]`` instead of the content: a
    hosted tool's item (``web_search_call``…), a computer, shell or apply-patch call.
    LangChain moves them into ``content_blocks`` only for list content of a message
    naming its provider; otherwise they were archived and priced as nothing."""
    items = message.additional_kwargs.get("tool_outputs")
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def hosted_tool_outputs(message: AIMessage) -> list[tuple[Mapping[str, Any], list[str]]]:
    """The hosted tool items of :func:`tool_outputs` (those
    :func:`~opticmem.integrations.turn_text.hosted_tool_lines` reads), each with the lines
    it is archived as, that the message's ``content_blocks`` do not already hold
    (LangChain's translation keeps each item's ``id``): archived and priced once, whether
    or not LangChain translated them."""
    items = [(i, lines) for i in tool_outputs(message)
             if (lines := hosted_tool_lines(i)) is not None]
    if not items:
        return []
    held: set[object] = set()
    for block in message.content_blocks:
        value = block.get("value")
        for ident in (block.get("id"), value.get("id") if isinstance(value, Mapping)
                      else None):
            if isinstance(ident, str) and ident:
                held.add(ident)
    return [(i, lines) for i, lines in items
            if not (isinstance(i.get("id"), str) and i["id"] in held)]


def message_calls(message: AIMessage) -> list[Mapping[str, Any]]:
    """Every tool call ``message`` asks for, each once: the parsed ones (``tool_calls``),
    the invalid ones (a model's malformed or truncated arguments, kept as the raw string
    it sent), then any call its content holds that neither lists — an Anthropic
    ``tool_use`` block, an OpenAI Responses ``function_call``, a v1 ``tool_call`` block
    of a message built from a dict or by hand, which has no ``tool_calls`` — or its
    ``additional_kwargs["tool_outputs"]`` hold (:func:`tool_outputs`: an older
    langchain-openai's ``computer_call``, shell or apply-patch call). A content
    block is the same call as a listed one when their ids match; one with no id is taken
    as a copy when the message lists any call. langchain-anthropic's messages hold every
    call twice, as a ``tool_use`` block and in ``tool_calls``: priced and written once.

    >>> use = {"type": "tool_use", "id": "toolu_1", "name": "wx", "input": {"city": "Seoul"}}
    >>> call = {"name": "wx", "args": {"city": "Seoul"}, "id": "toolu_1"}
    >>> len(message_calls(AIMessage(content=[use], tool_calls=[call])))
    1
    >>> message_calls(AIMessage(content=[use]))
    [{'name': 'wx', 'args': {'city': 'Seoul'}, 'id': 'toolu_1'}]
    """
    listed: list[Mapping[str, Any]] = [*message.tool_calls, *message.invalid_tool_calls]
    blocks = [*([] if isinstance(message.content, str) else message.content),
              *(i for i in tool_outputs(message) if responses_call(i) is not None)]
    seen = {i for c in listed if isinstance(i := c.get("id"), str) and i}
    extra: list[Mapping[str, Any]] = []
    for block in blocks:
        found = _content_call(block)
        if found is None:
            continue
        call, ids = found
        if (ids & seen) or (not ids and listed):
            continue
        seen |= ids
        extra.append(call)
    return [*listed, *extra]


def message_role(message: BaseMessage, roles: frozenset[str] | set[str]) -> str | None:
    """The turn role for ``message``; ``None`` for messages that record nothing."""
    if isinstance(message, RemoveMessage):
        return None
    if isinstance(message, ChatMessage):
        return message.role if message.role in roles else "user"
    return ROLE_OF_TYPE.get(message.type, "user")


def _valid(value: Any) -> Any:
    """``value`` with lone surrogates replaced by U+FFFD if it is a string."""
    return repair_surrogates(value)[0] if isinstance(value, str) else value


def message_id(message: BaseMessage) -> str | None:
    """The id ``message`` is recorded under (``meta["lc_id"]``; ``None``: it has none):
    its own, lone surrogates replaced by U+FFFD — the archive refuses them, and a message
    refused would fail every later run of the agent's thread, which records it again.

    >>> message_id(HumanMessage("hi", id="m-1")), message_id(HumanMessage("hi"))
    ('m-1', None)
    """
    return _valid(message.id) if message.id else None


def _meta(message: BaseMessage) -> dict[str, Any]:
    meta: dict[str, Any] = {"lc_type": message.type}
    if message.id:
        meta["lc_id"] = message_id(message)
    if message.name:
        meta["name"] = _valid(message.name)
    if isinstance(message, ToolMessage):
        meta["tool_call_id"] = _valid(message.tool_call_id)
        if message.status != "success":
            meta["status"] = message.status
    if isinstance(message, AIMessage) and (calls := message_calls(message)):
        meta["tool_calls"] = [{"id": _valid(c.get("id")), "name": _valid(c.get("name"))}
                              for c in calls]
    return meta


def message_turns(message: BaseMessage, memory: OpticalMemory) -> list[dict[str, Any]]:
    """The turns ``message`` is recorded as in ``memory`` (``[]``: nothing to record).

    Each turn is a mapping for :meth:`~opticmem.OpticalMemory.add_many`.

    >>> from opticmem import OpticalMemory
    >>> mem = OpticalMemory(codec=None, max_turn_chars=10)
    >>> [t["text"] for t in message_turns(HumanMessage("a" * 25, id="m1"), mem)]
    ['aaaaaaaaaa', 'aaaaaaaaaa', 'aaaaa']
    >>> message_turns(AIMessage(""), mem)
    []
    """
    role = message_role(message, memory.roles)
    if role is None:
        return []
    pieces = tool_results_split(message)
    if pieces != [message]:  # a tool turn per tool_result block, as with_memory records them
        turns = [{**t, "meta": {**t["meta"], "lc_type": message.type}}
                 for p in pieces for t in message_turns(p, memory)]
        for t in turns:
            if t["meta"].get("tool_call_id") == "":  # a block with no tool_use_id
                del t["meta"]["tool_call_id"]
        return turns
    meta = _meta(message)
    return [{"role": role, "text": text, "meta": {**meta, **extra}}
            for text, extra in archived_parts(message_text(message), memory.max_turn_chars)]


def leading_system(messages: Sequence[BaseMessage]) -> list[SystemMessage]:
    """The system messages ``messages`` starts with, before any other message: the system
    prompt a user passes as the agent's first input message(s). The middleware sends them
    as the system prompt and never records them; a system message after any other message
    is a turn like the rest.

    >>> [m.content for m in leading_system([SystemMessage("Be terse."), HumanMessage("hi"),
    ...                                     SystemMessage("Now be verbose.")])]
    ['Be terse.']
    """
    out: list[SystemMessage] = []
    for m in messages:
        if not isinstance(m, SystemMessage):
            break
        out.append(m)
    return out


# --------------------------------------------------------------------------- showing


def context_messages(messages: Sequence[Mapping[str, Any]]) -> list[BaseMessage]:
    """LangChain messages for a context's :meth:`~opticmem.Context.messages` (plain dicts
    in the ``"langchain"`` format); see the module docstring for how roles map.

    >>> msgs = context_messages([{"role": "assistant", "content": "[tool call · f] {}"},
    ...                          {"role": "tool", "content": "42", "name": "f",
    ...                           "tool_call_id": "c1"}])
    >>> [(type(m).__name__, m.content) for m in msgs]
    [('AIMessage', '[tool call · f] {}'), ('HumanMessage', '[Tool result · f · call c1]\\n42')]
    """
    out: list[BaseMessage] = []
    for d in messages:
        shown = shown_turn(dict(d))  # every role but assistant shown as a user's
        name = shown.get("name") if isinstance(shown.get("name"), str) else None
        kind = AIMessage if shown["role"] == "assistant" else HumanMessage
        out.append(kind(content=shown["content"], name=name))
    return out


def orphan_tool_results_headed(messages: Sequence[BaseMessage]) -> list[BaseMessage]:
    """``messages`` with each ``ToolMessage`` that answers no structured tool call of an
    ``AIMessage`` before it shown as recorded tool results are: a ``HumanMessage`` headed
    ``[Tool result · NAME · call ID]`` (same id). Such a result follows a call the model
    now sees only as text in the history — the error result ``create_agent`` adds, on the
    next run, for a tool call whose arguments did not parse — and chat APIs reject a tool
    message that answers no tool call (OpenAI: HTTP 400). The calls asked are every one
    :func:`message_calls` lists, so a result answering a call the ``AIMessage`` holds only
    as a content block (an Anthropic ``tool_use`` of a message built from a dict, with no
    ``tool_calls``) stays a ``ToolMessage``: headed, it broke the call/result pair the
    provider needs (Anthropic rejects a ``tool_use`` with no ``tool_result`` after it).

    >>> msgs = orphan_tool_results_headed([HumanMessage("hi"), ToolMessage("42",
    ...                                    tool_call_id="c1", name="f")])
    >>> [(type(m).__name__, m.content) for m in msgs]
    [('HumanMessage', 'hi'), ('HumanMessage', '[Tool result · f · call c1]\\n42')]
    """
    asked: set[str] = set()
    out: list[BaseMessage] = []
    for m in messages:
        if isinstance(m, AIMessage):
            asked.update(i for c in message_calls(m) if isinstance(i := c.get("id"), str) and i)
        elif isinstance(m, ToolMessage) and m.tool_call_id not in asked:
            head = tool_result_head(m.name, m.tool_call_id)
            m = HumanMessage(content=headed(head, m.content), id=m.id)
        out.append(m)
    return out


__all__ = [
    "CALL_BLOCKS",
    "NATIVE_CALL_BLOCKS",
    "REQUIRED_ROLES",
    "ROLE_OF_TYPE",
    "context_messages",
    "hosted_tool_outputs",
    "is_call_block",
    "leading_system",
    "message_calls",
    "message_id",
    "message_role",
    "message_text",
    "message_turns",
    "orphan_tool_results_headed",
    "tool_call_line",
    "tool_outputs",
    "tool_result_message",
    "tool_results_split",
]
