"""Chat messages as archived turn text, and turns shown back as chat messages — the rules
every integration shares, with no framework imported (the chat-loop wrapper uses them
without LangChain; :mod:`~opticmem.integrations.langchain_messages` uses them too).

* A tool call is archived as one text line, ``[tool call · NAME · id ID] ARGS``, after the
  assistant's text (:func:`tool_call_line`), so the archive and the pages keep what was
  asked of which tool.
* A ``tool`` turn is shown back as a **user** message headed ``[Tool result · NAME · call
  ID]``, a ``system`` turn as one headed ``[System message]`` (:func:`shown_turn`): in
  recalled history the assistant's tool calls are text, and chat APIs reject a tool
  message that answers no structured tool call (OpenAI: HTTP 400) and, for several
  providers, a system message after the first. A turn of a role of the memory's own
  (``roles=``) is a user message headed ``[ROLE]``: chat APIs know no such role.
* A model's refusal (OpenAI's ``refusal`` field or content part, LangChain's ``refusal``
  block or langchain-openai's ``additional_kwargs["refusal"]``) is archived as its own
  text, after the message's content (:func:`refusal_text`): an OpenAI model that declines
  answers with empty content and the reason there, which is what it said.
* An attachment (image, audio, video, file) is archived as one marker line, ``[MIME
  attachment, not archived]`` (:func:`attachment_marker`; the kind when the MIME type is
  not known), whether it came as a LangChain standard block or as an OpenAI or
  Anthropic content part (:func:`part_marker`): the memory archives text.
* Data only the provider can read — a web search result's ``encrypted_content``, a
  citation's ``encrypted_index``, a thinking ``signature`` — is never archived
  (:data:`OPAQUE_KEYS`): a server tool's result keeps its url, title and page age.
* Text the archive cannot hold as given is made storable rather than refused where the
  message already happened (a model's reply, a tool's result): lone surrogates become
  U+FFFD (:func:`repair_surrogates`) and text over the memory's ``max_turn_chars`` is
  split into consecutive parts (:func:`split_text`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from opticmem.context import Context, lead_note_cost
from opticmem.costs import CostModel, message_tokens
from opticmem.errors import InvalidTurnError
from opticmem.sessions import validate_text

REPAIRED = "lone surrogates replaced with U+FFFD"
"""``meta["repaired"]`` of a turn whose text had lone surrogates."""

SYSTEM_HEAD = "[System message]"
"""Heading of a ``system`` turn shown as a user message."""

SENT_AS_IS = frozenset({"user", "assistant"})
"""Roles a turn is shown back in as it was stored; every other is a headed user message."""


def role_head(role: str) -> str:
    """Heading of a turn of a role of the memory's own (``roles=``, e.g. ``"critic"``)
    shown as a user message: chat APIs know no such role.

    >>> role_head("critic")
    '[critic]'
    """
    return f"[{role}]"


def tool_call_line(name: object, ident: object, args: object) -> str:
    """One tool call as archived text; ``args`` is a mapping (written as sorted JSON) or
    a string already holding JSON (the OpenAI wire form), written as is.

    >>> tool_call_line("recall", "call_1", {"query": "Titan"})
    '[tool call · recall · id call_1] {"query": "Titan"}'
    >>> tool_call_line("wx", None, '{"city": "Seoul"}')
    '[tool call · wx] {"city": "Seoul"}'
    """
    text = args if isinstance(args, str) else json.dumps(
        {} if args is None else args, ensure_ascii=False, sort_keys=True, default=str)
    head = f" · id {ident}" if ident else ""
    return f"[tool call · {name if name else '?'}{head}] {text}"


def json_text(value: object) -> str:
    """``value`` (a tool's or provider's JSON data) as archived text: compact (no spaces
    after separators), deterministic (keys sorted where they can be) and with non-ASCII
    characters kept as they are (``\\uXXXX`` escapes would hide them from the pages,
    recall and facts). Values JSON cannot hold are written as ``str()`` gives them.

    >>> json_text({"city": "서울", "temp": 12.5, "alerts": []})
    '{"alerts":[],"city":"서울","temp":12.5}'
    """
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          default=str)
    except TypeError:  # keys of mixed types cannot be sorted
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


OPAQUE_KEYS: frozenset[str] = frozenset({"encrypted_content", "encrypted_index", "signature"})
"""Keys under which a provider hands back data only it can read: an Anthropic web search
result's ``encrypted_content`` (several KB of base64 per result) and a citation's
``encrypted_index``, a thinking block's ``signature``, an OpenAI reasoning item's
``encrypted_content``. They are sent back to the provider as given (the agent's state or
the caller keeps them), never archived: on a page or in recall they are noise, and as
turn text they were priced as thousands of tokens."""


def without_opaque(value: object) -> object:
    """``value`` (a provider's JSON data) with every :data:`OPAQUE_KEYS` entry left out,
    at any depth; everything else as it is.

    >>> without_opaque([{"type": "web_search_result", "url": "u", "title": "t",
    ...                  "page_age": "2d", "encrypted_content": "RW5j..."}])
    [{'type': 'web_search_result', 'url': 'u', 'title': 't', 'page_age': '2d'}]
    """
    if isinstance(value, Mapping):
        return {k: without_opaque(v) for k, v in value.items() if k not in OPAQUE_KEYS}
    if isinstance(value, (list, tuple)):
        return [without_opaque(v) for v in value]
    return value


def without_payloads(value: object) -> object:
    """``value`` (a provider's JSON data: a server tool's result, a content part's fields)
    with every inline attachment's bytes replaced by its marker (:func:`attachment_marker`),
    at any depth: an Anthropic base64 ``source`` (``{"type": "base64", "media_type": ...,
    "data": ...}``: a PDF that web fetch read, an image in a tool's result), an OpenAI
    ``file_data``, and a ``data:`` URL of base64. The memory archives text: as JSON text a
    fetched PDF's payload was archived and priced whole. A document whose source is
    text (``{"type": "text", "data": ...}``) keeps its text.

    >>> without_payloads({"type": "document", "title": "Q3", "source": {
    ...     "type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}})
    {'type': 'document', 'title': 'Q3', 'source': '[application/pdf attachment, not archived]'}
    >>> without_payloads({"type": "input_image", "image_url": "data:image/png;base64,iVBO"})
    {'type': 'input_image', 'image_url': '[image/png attachment, not archived]'}
    """
    if isinstance(value, Mapping):
        if value.get("type") == "base64" and "data" in value:
            return attachment_marker("file", value.get("media_type"))
        out = {}
        for k, v in value.items():
            if k == "file_data" and isinstance(v, str) and _data_url_mime(v) is None:
                v = attachment_marker("file")  # raw base64, not a data: URL
            out[k] = without_payloads(v)
        return out
    if isinstance(value, (list, tuple)):
        return [without_payloads(v) for v in value]
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]:
        return attachment_marker("file", _data_url_mime(value))
    return value


def server_tool_line(kind: str, value: object) -> str:
    """A server-side tool's call or result (a provider ran it: Anthropic's web search, code
    execution, MCP) as one archived line: ``kind`` (``server_tool_call`` or
    ``server_tool_result``, LangChain's standard names) and its arguments or output as
    :func:`json_text`, without the provider's opaque data (:func:`without_opaque`: a web
    search result is archived as its url, title and page age) and with an inline
    attachment as its marker (:func:`without_payloads`: a PDF web fetch read).

    >>> server_tool_line("server_tool_call", {"query": "서울 날씨"})
    '[server_tool_call: {"query":"서울 날씨"}]'
    """
    return f"[{kind}: {json_text(without_payloads(without_opaque(value)))}]"


SERVER_TOOL_CALLS: tuple[str, ...] = ("server_tool_use", "mcp_tool_use")
"""Anthropic content blocks of an assistant message that call a tool the API runs itself
(web search, web fetch, code execution; an MCP server's tool)."""


def server_tool_text(part: Mapping[str, Any]) -> str | None:
    """The line an Anthropic server-side tool block of an assistant message is archived as
    (:func:`server_tool_line`): a call's input, a result's content (``None``: not such a
    block) — the line LangChain's translation of the same block
    (``server_tool_call``/``server_tool_result``) is archived as, so both integrations,
    and a LangChain message whether or not it names its provider, keep the same text.

    >>> server_tool_text({"type": "server_tool_use", "id": "s1", "name": "web_search",
    ...                   "input": {"query": "Titan"}})
    '[server_tool_call: {"query":"Titan"}]'
    >>> server_tool_text({"type": "tool_result", "content": "12C"}) is None
    True
    """
    kind = part.get("type")
    if kind in SERVER_TOOL_CALLS:
        return server_tool_line("server_tool_call", part.get("input", {}))
    if isinstance(kind, str) and kind.endswith("_tool_result") and kind != "tool_result":
        return server_tool_line("server_tool_result", part.get("content") or "")
    return None


HOSTED_TOOL_ITEMS: tuple[str, ...] = (
    "web_search_call", "file_search_call", "code_interpreter_call", "mcp_call",
    "mcp_list_tools", "image_generation_call")
"""OpenAI Responses API output items of a tool the API ran itself, which
:func:`hosted_tool_lines` archives as LangChain's translation of them is archived."""


def hosted_tool_lines(item: Mapping[str, Any]) -> list[str] | None:
    """The lines an OpenAI Responses hosted tool's item (:data:`HOSTED_TOOL_ITEMS`) is
    archived as (``None``: not such an item): a ``server_tool_call`` line of what was
    asked and a ``server_tool_result`` line of what came back, each as LangChain's
    translation of the item (langchain-openai's ``AIMessage``) gets it
    (:func:`server_tool_line`) — a web search's action and sources, a file search's
    queries and results, the code run and its outputs, an MCP tool's arguments and
    output, a listing's tools — and a generated image as its attachment marker. So the
    chat-loop wrapper keeps the same text for a ``Response`` as the LangChain
    integration does for the same answer, where it kept only the message text.

    >>> hosted_tool_lines({"type": "web_search_call", "id": "ws_1", "status": "completed",
    ...     "action": {"type": "search", "query": "Titan", "sources": [{"url": "u"}]}})
    ['[server_tool_call: {"query":"Titan","type":"search"}]', \
'[server_tool_result: {"sources":[{"url":"u"}]}]']
    >>> hosted_tool_lines({"type": "message", "content": []}) is None
    True
    """
    kind = item.get("type")
    if kind not in HOSTED_TOOL_ITEMS:
        return None
    call: object = ""  # what LangChain's block is archived as when it has no args/output
    result: object = ""
    if kind == "web_search_call":
        action = item.get("action")
        if isinstance(action, Mapping):
            call = {k: v for k, v in action.items() if k != "sources"}
            if sources := action.get("sources"):
                result = {"sources": sources}
        else:
            call = {}
    elif kind == "file_search_call":
        call = {"queries": item.get("queries", [])}
        result = item.get("results") or ""
    elif kind == "code_interpreter_call":
        if "code" in item:
            call = {"code": item["code"]}
        if "outputs" in item:
            result = item["outputs"]
    elif kind == "mcp_call":
        if isinstance(args := item.get("arguments"), str) and args:
            # unparsable arguments: LangChain keeps them out of the call's args too
            with contextlib.suppress(json.JSONDecodeError):
                call = json.loads(args)
        result = item.get("output") or ""
    elif kind == "mcp_list_tools":
        call = {}
        result = item.get("tools") or ""
    else:  # image_generation_call
        if not item.get("result"):
            return None
        fmt = item.get("output_format")
        return [attachment_marker("image", f"image/{fmt}" if isinstance(fmt, str) and fmt
                                  else None)]
    return [server_tool_line("server_tool_call", call),
            server_tool_line("server_tool_result", result)]


RESPONSES_CALLS: Mapping[str, str] = {
    "function_call": "arguments", "custom_tool_call": "input", "computer_call": "action",
    "local_shell_call": "action", "shell_call": "action", "apply_patch_call": "operation"}
"""OpenAI Responses API items that call a tool the client runs (each answered by an
item of its type and ``_output``, matched by ``call_id``), and the key holding the
call's input: a function's or custom tool's, and the computer, shell and apply-patch
tools', whose action (a click, a command, a file edit) is what was asked."""

RESPONSES_OUTPUTS: tuple[str, ...] = tuple(f"{kind}_output" for kind in RESPONSES_CALLS)
"""OpenAI Responses API items that hold the result of a :data:`RESPONSES_CALLS` call."""


def responses_call(item: Mapping[str, Any]) -> tuple[object, object, object] | None:
    """The name, id and input of the tool an OpenAI Responses call item
    (:data:`RESPONSES_CALLS`) calls (``None``: not such an item): a function's or
    custom tool's own name, else the built-in tool's (``computer``, ``local_shell``,
    ``shell``, ``apply_patch``); the id is ``call_id``, which its result answers
    (``id`` is the output item's own).

    >>> responses_call({"type": "computer_call", "id": "cu_1", "call_id": "call_1",
    ...                 "action": {"type": "click", "x": 4, "y": 2}, "status": "completed"})
    ('computer', 'call_1', {'type': 'click', 'x': 4, 'y': 2})
    """
    kind = item.get("type")
    if not isinstance(kind, str) or (key := RESPONSES_CALLS.get(kind)) is None:
        return None
    name = (item.get("name") if kind in ("function_call", "custom_tool_call")
            else kind.removesuffix("_call"))
    return name, item.get("call_id") or item.get("id"), item.get(key, item.get("args"))


def responses_output(item: Mapping[str, Any]) -> object:
    """The content of a Responses tool result item (:data:`RESPONSES_OUTPUTS`), as a
    tool message holds it: its ``output`` text or content parts; a computer's
    screenshot as a part (archived as its image marker, :func:`part_marker`); a shell's
    outputs (stdout, stderr, exit) as JSON text; an applied patch's ``output``, else its
    ``status``.

    >>> responses_output({"type": "computer_call_output", "call_id": "call_1", "output": {
    ...     "type": "computer_screenshot", "image_url": "data:image/png;base64,iVBO"}})
    [{'type': 'computer_screenshot', 'image_url': 'data:image/png;base64,iVBO'}]
    """
    output = item.get("output")
    if isinstance(output, Mapping):
        return [output]
    if item.get("type") == "shell_call_output" and isinstance(output, list):
        return json_text(without_payloads(output))
    if not output and item.get("type") == "apply_patch_call_output":
        return str(item.get("status") or "")
    return output or ""


def provider_text(value: Mapping[str, Any]) -> str | None:
    """The text a provider's own content block carries (``None``: none): its ``text``
    (OpenAI Responses ``input_text``/``output_text``), or the text parts of its
    ``content`` (an Anthropic ``search_result`` a tool returns). Written as
    ``[input_text block]``, what the user or the tool said was lost.

    >>> provider_text({"type": "search_result", "source": "wiki", "title": "Titan",
    ...                "content": [{"type": "text", "text": "Launch in March."}]})
    'Launch in March.'
    """
    text = value.get("text")
    if isinstance(text, str):
        return text
    content = value.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p["text"] for p in content if isinstance(p, Mapping)
                 and p.get("type") == "text" and isinstance(p.get("text"), str)]
        return "\n".join(texts) if texts else None
    return None


def document_text(part: Mapping[str, Any]) -> str | None:
    """The text of an Anthropic ``document`` block whose source is text (``None``: another
    block, or a document of bytes, a URL or a file id — an attachment): a ``text``
    source's ``data``, a ``content`` source's string or text blocks. A plain-text
    document is what the user or a tool said, not an attachment: marked, it was lost.

    >>> document_text({"type": "document", "source": {
    ...     "type": "content", "content": [{"type": "text", "text": "Revenue rose."}]}})
    'Revenue rose.'
    >>> document_text({"type": "document", "source": {"type": "url", "url": "u"}}) is None
    True
    """
    source = part.get("source")
    if part.get("type") != "document" or not isinstance(source, Mapping):
        return None
    if source.get("type") == "text":
        data = source.get("data")
        return data if isinstance(data, str) else None
    if source.get("type") == "content":
        return provider_text(source)
    return None


def refusal_text(refusal: object) -> str | None:
    """What a refusal adds to the archived text: its own words, unmarked (``None``: no
    refusal, or an empty one).

    >>> refusal_text("I can't help with that."), refusal_text(""), refusal_text(None)
    ("I can't help with that.", None, None)
    """
    return refusal if isinstance(refusal, str) and refusal else None


def audio_text(audio: object) -> str | None:
    """What an assistant's spoken answer (OpenAI's ``audio``: ``{"id", "data",
    "transcript"}``) adds to the archived text: its transcript, or the audio's marker
    when the message holds only its id (``None``: no audio). The audio's bytes are never
    archived.

    >>> audio_text({"id": "au_1", "data": "UklGR...", "transcript": "Hello."})
    'Hello.'
    >>> audio_text({"id": "au_1"}), audio_text(None)
    ('[audio attachment, not archived]', None)
    """
    if not isinstance(audio, Mapping):
        return None
    transcript = audio.get("transcript")
    return transcript if isinstance(transcript, str) and transcript else attachment_marker(
        "audio")


ATTACHMENT_KINDS: tuple[str, ...] = ("image", "audio", "video", "file")
"""LangChain standard content-block types archived as an attachment marker."""


def attachment_marker(kind: str, mime: object = None) -> str:
    """The line an attachment is archived as: named by its MIME type when known, else by
    its kind.

    >>> attachment_marker("image", "image/png"), attachment_marker("file")
    ('[image/png attachment, not archived]', '[file attachment, not archived]')
    """
    what = mime if isinstance(mime, str) and mime else kind
    return f"[{what} attachment, not archived]"


def _data_url_mime(url: object) -> str | None:
    """The MIME type of a ``data:`` URL (``None``: another URL, or none given)."""
    if not (isinstance(url, str) and url.startswith("data:")):
        return None
    mime = url[5:].split(",", 1)[0].split(";", 1)[0]
    return mime or None


def part_marker(part: Mapping[str, Any]) -> str | None:
    """The marker line (:func:`attachment_marker`) for an attachment part of a chat
    message's content, named as LangChain names the same part: OpenAI ``image_url``,
    ``input_image``, ``input_file`` and ``computer_screenshot`` (Responses),
    ``input_audio`` and ``file`` parts, Gemini ``media`` blocks, Anthropic ``image`` and
    ``document`` blocks, LangChain standard ``image``/``audio``/``video``/``file``
    blocks. ``None``: not an attachment.

    >>> part_marker({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}})
    '[image/png attachment, not archived]'
    >>> part_marker({"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}})
    '[audio/wav attachment, not archived]'
    >>> part_marker({"type": "text", "text": "hi"}) is None
    True
    """
    kind = part.get("type")
    # input_image: OpenAI Responses; computer_screenshot: a computer_call_output's
    if kind in ("image_url", "input_image", "computer_screenshot"):
        url = part.get("image_url")
        return attachment_marker(
            "image", _data_url_mime(url.get("url") if isinstance(url, Mapping) else url))
    if kind == "media":  # Gemini's inline data or file URI
        return attachment_marker("file", part.get("mime_type"))
    if kind == "input_audio":
        audio = part.get("input_audio")
        fmt = audio.get("format") if isinstance(audio, Mapping) else None
        return attachment_marker("audio", f"audio/{fmt}" if isinstance(fmt, str) and fmt
                                 else None)
    if kind == "file" and isinstance(file := part.get("file"), Mapping):
        return attachment_marker("file", _data_url_mime(file.get("file_data")))
    if kind == "input_file":  # OpenAI Responses: file_data, file_id or file_url
        return attachment_marker("file", _data_url_mime(part.get("file_data")))
    if kind in (*ATTACHMENT_KINDS, "document"):
        source = part.get("source")  # Anthropic: {"type": "base64", "media_type": ...}
        mime = part.get("mime_type") or (
            source.get("media_type") if isinstance(source, Mapping) else None)
        return attachment_marker("file" if kind == "document" else str(kind), mime)
    return None


def tool_result_head(name: object = None, call_id: object = None) -> str:
    """Heading of a ``tool`` turn shown as a user message.

    >>> tool_result_head("f", "c1"), tool_result_head()
    ('[Tool result · f · call c1]', '[Tool result]')
    """
    head = "[Tool result" + (f" · {name}" if isinstance(name, str) and name else "")
    if isinstance(call_id, str) and call_id:
        head += f" · call {call_id}"
    return head + "]"


def headed(head: str, content: str | list[Any]) -> str | list[Any]:
    """``content`` (a string or a list of content parts) with ``head`` in front of it."""
    if isinstance(content, str):
        return f"{head}\n{content}"
    return [{"type": "text", "text": head}, *content]


def shown_turn(message: dict[str, Any]) -> dict[str, Any]:
    """A context's turn message (a plain dict from :meth:`~opticmem.Context.messages`) as
    it can be sent to a chat API: ``tool`` and ``system`` turns become headed ``user``
    messages (module docstring), and so does a turn of a role of the memory's own
    (:func:`role_head`, keeping its ``name``); ``user`` and ``assistant`` turns are returned
    unchanged.

    >>> shown_turn({"role": "tool", "content": "12C", "tool_call_id": "c1", "name": "wx"})
    {'role': 'user', 'content': '[Tool result · wx · call c1]\\n12C'}
    >>> shown_turn({"role": "critic", "content": "too long"})
    {'role': 'user', 'content': '[critic]\\ntoo long'}
    >>> shown_turn({"role": "user", "content": "hi"})
    {'role': 'user', 'content': 'hi'}
    """
    role = message.get("role")
    if role in SENT_AS_IS:
        return message
    content = message.get("content", "")
    if role == "tool":
        return {"role": "user", "content": headed(
            tool_result_head(message.get("name"), message.get("tool_call_id")), content)}
    if role == "system":
        return {"role": "user", "content": headed(SYSTEM_HEAD, content)}
    shown = {"role": "user", "content": headed(role_head(str(role)), content)}
    if isinstance(name := message.get("name"), str):
        shown["name"] = name
    return shown


def newest_turn_tokens(ctx: Context, model: CostModel) -> int:
    """What the newest turn of ``ctx`` costs on its own, unheaded (``0``: no turn), with
    the :data:`~opticmem.context.LEAD_NOTE` message an assistant's turn needs before it
    when it is shown alone: a budget a context of the session can always be planned for,
    since the newest turn is always in it. Planning again for less, to make room for
    headings, stops there.

    >>> from opticmem import OpticalMemory
    >>> mem = OpticalMemory(codec=None)
    >>> _ = mem.add("s", "tool", "12C", meta={"name": "weather"})
    >>> newest_turn_tokens(mem.context("s"), mem.cost_model)
    5
    """
    if not ctx.turns:
        return 0
    newest = ctx.turns[-1]
    return (message_tokens([{"role": newest.role, "content": newest.text}], model)
            + lead_note_cost([newest.role], model))


def repair_surrogates(text: str) -> tuple[str, bool]:
    """``text`` with lone surrogates replaced by U+FFFD, and whether any was.

    >>> repair_surrogates("ok \\ud800") == ("ok \\N{REPLACEMENT CHARACTER}", True)
    True
    """
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        return text, False
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text), True


def has_visible_text(text: str) -> bool:
    """Whether ``text`` has something to archive (the memory refuses empty turns and turns
    of only whitespace or invisible characters).

    >>> has_visible_text(" \u200b "), has_visible_text("ok")
    (False, True)
    """
    try:
        validate_text(text, max_chars=len(text) + 1)
    except InvalidTurnError:
        return False
    return True


def archived_parts(text: str, max_chars: int) -> list[tuple[str, dict[str, Any]]]:
    """``text`` as the turns it is archived as, each with the metadata it adds: lone
    surrogates repaired (``{"repaired": ...}``), split at ``max_chars`` (``{"part": [k,
    n]}``), parts with nothing visible left out (``[]``: nothing to archive).

    >>> archived_parts("abcdefg", 3)[2]
    ('g', {'part': [3, 3]})
    >>> archived_parts("x\\ud800", 10) == [("x\\ufffd", {"repaired": REPAIRED})]
    True
    """
    text, repaired = repair_surrogates(text)
    base: dict[str, Any] = {"repaired": REPAIRED} if repaired else {}
    chunks = [c for c in split_text(text, max_chars) if has_visible_text(c)]
    if len(chunks) == 1:
        return [(chunks[0], base)]
    return [(c, {**base, "part": [k + 1, len(chunks)]}) for k, c in enumerate(chunks)]


def split_text(text: str, max_chars: int) -> list[str]:
    """``text`` in consecutive parts of at most ``max_chars`` characters (``[text]`` when
    it fits).

    >>> split_text("abcdefg", 3)
    ['abc', 'def', 'g']
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be ≥ 1, got {max_chars}")
    return [text[i : i + max_chars] for i in range(0, len(text), max_chars)] or [text]


__all__ = [
    "ATTACHMENT_KINDS",
    "HOSTED_TOOL_ITEMS",
    "OPAQUE_KEYS",
    "REPAIRED",
    "RESPONSES_CALLS",
    "RESPONSES_OUTPUTS",
    "SERVER_TOOL_CALLS",
    "SYSTEM_HEAD",
    "archived_parts",
    "attachment_marker",
    "audio_text",
    "document_text",
    "has_visible_text",
    "headed",
    "hosted_tool_lines",
    "json_text",
    "newest_turn_tokens",
    "part_marker",
    "provider_text",
    "refusal_text",
    "repair_surrogates",
    "responses_call",
    "responses_output",
    "server_tool_line",
    "server_tool_text",
    "shown_turn",
    "split_text",
    "tool_call_line",
    "tool_result_head",
    "without_opaque",
    "without_payloads",
]
