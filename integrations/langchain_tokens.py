"""A LangChain token counter that prices page images the way their consumer does.

``langchain_core.messages.utils.count_tokens_approximately`` charges a flat 85 tokens
for any image. A memory page costs its reader very different amounts by tier and by
model: DeepSeek-OCR's decoder spends 73/111/273/421 slots (64/100/256/400 nominal) on a
Tiny/Small/Base/Large page, a tile-priced chat API 85–765 tokens (a Tiny page goes at
``detail: "low"``), a pixel-area-priced one 350–1,599. :class:`OpticalTokenCounter`
counts LangChain messages under an opticmem :class:`~opticmem.costs.CostModel` — the
same prices the memory budgets with, through :func:`~opticmem.costs.message_tokens` — so
it plugs into ``trim_messages``::

    from langchain_core.messages import trim_messages
    trim_messages(messages, max_tokens=8192, token_counter=OpticalTokenCounter("openai"))

How each part of a message is priced (read through ``content_blocks``, LangChain's
standard form):

* text (and reasoning) blocks: the cost model's text counter — an Anthropic
  ``thinking`` block as its text, as LangChain translates it, not its signature; the
  reasoning an ``AIMessage`` holds in ``additional_kwargs["reasoning_content"]``
  (DeepSeek, Ollama, xAI, Groq) and the Responses reasoning summary in
  ``additional_kwargs["reasoning"]`` (langchain-openai) whatever the shape of its
  content and whether it names its provider: whether a provider takes reasoning back
  varies, and the price stays an upper bound;
* base64 images: PNGs by their header through ``message_tokens``; other formats (JPEG,
  WebP, …) by their size read with Pillow, through the same image formula — under tile
  pricing at the ``detail`` an OpenAI ``image_url`` part names (LangChain keeps it in the
  block's ``extras``; ``ChatOpenAI`` sends such a part as it is), else at the formula's;
* images in a provider's form LangChain passes on as a ``non_standard`` block — an
  ``image_url`` part whose value is the URL string (``ChatGoogleGenerativeAI``'s form),
  an OpenAI Responses ``input_image``, a Gemini ``media`` block of an image type: as the
  image they hold;
* images given only by URL or file id, or in a format Pillow cannot read (HEIC, which
  Gemini takes; SVG) — their size is unknown offline: ``unknown_image_tokens`` each
  (default: the price of a Large page under the model); data that is not base64 raises
  :class:`ValueError`;
* an ``AIMessage``'s tool calls, invalid ones included: the text of their JSON (name,
  arguments, id), once each — a call the message also holds as a content block (an
  Anthropic ``tool_use``, an OpenAI Responses ``function_call``, a streamed
  ``tool_call_chunk``) is matched to it by id
  (:func:`~opticmem.integrations.langchain_messages.message_calls`);
* audio, video, files and other blocks: the text of their fields, without the payload —
  an attachment they hold inside (a PDF in a web fetch's result, an OpenAI
  ``file_data``) as its marker line, as it is archived;
* an Anthropic ``tool_result`` block of a ``HumanMessage``: its heading (``[Tool result
  · call ID]``) and its content as a ``ToolMessage``'s, an image in it as an image — as
  it is archived, a tool turn per block;
* the Responses items an older langchain-openai keeps in an ``AIMessage``'s
  ``additional_kwargs["tool_outputs"]``: a computer, shell or apply-patch call as a
  tool call (above), a hosted tool's item as its archived lines, a generated image as
  an image — once, when LangChain has not already translated it into the content;
* an ``AIMessage``'s spoken answer (langchain-openai's ``additional_kwargs["audio"]``):
  its transcript, as it is archived;
* every message: the model's ``message_overhead``.

A memory context priced this way costs exactly what :class:`~opticmem.Context` says it
costs (``Context.cost``): both go through ``message_tokens``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opticmem.arguments import whole_number
from opticmem.costs import (
    CostModel,
    ImageCost,
    b64_head,
    cost_model,
    image_tokens,
    message_tokens,
    png_size,
)
from opticmem.errors import ConfigurationError, InvalidTurnError
from opticmem.integrations.langchain_messages import (
    hosted_tool_outputs,
    is_call_block,
    message_calls,
    tool_result_message,
)
from opticmem.integrations.turn_text import (
    audio_text,
    tool_result_head,
    without_payloads,
)
from opticmem.memory import OpticalMemory
from opticmem.render import Tier

try:
    from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    from opticmem.integrations.extras import missing_extra

    raise missing_extra("langchain", exc) from exc

_PAYLOAD_KEYS = ("base64", "data", "url", "id")


class OpticalTokenCounter:
    """Counts the tokens a list of LangChain messages costs under an opticmem cost model.

    Args:
        model: an :class:`~opticmem.OpticalMemory` (use its cost model), a
            :class:`~opticmem.costs.CostModel`, an image formula, or a preset name
            (``"deepseek-ocr"``, ``"deepseek-ocr-nominal"``, ``"openai"``,
            ``"anthropic"``).
        unknown_image_tokens: price of an image whose size cannot be read offline (a
            URL or file id); default: a Large page's price under the model. A whole
            number ≥ 0, else :class:`~opticmem.errors.ConfigurationError` (a
            ``ValueError``).

    Callable as ``counter(messages) -> int`` (what ``trim_messages`` and the agent
    middleware expect); ``counter.message(m)`` prices one message.

    >>> from langchain_core.messages import HumanMessage
    >>> OpticalTokenCounter()([HumanMessage("hello")])
    4
    """

    def __init__(
        self,
        model: OpticalMemory | CostModel | ImageCost | str = "deepseek-ocr",
        *,
        unknown_image_tokens: int | None = None,
    ) -> None:
        self.cost_model: CostModel = (
            model.cost_model if isinstance(model, OpticalMemory) else cost_model(model)
        )
        if unknown_image_tokens is not None:
            # a whole number: "5" (from an environment variable) failed with a bare
            # TypeError from "<", and 1.5 or True were kept and priced every such image
            unknown_image_tokens = whole_number(unknown_image_tokens, "unknown_image_tokens")
            if unknown_image_tokens < 0:
                raise ConfigurationError(
                    f"unknown_image_tokens must be ≥ 0, got {unknown_image_tokens}")
        self.unknown_image_tokens = (
            self.cost_model.image_tokens(Tier.LARGE) if unknown_image_tokens is None
            else unknown_image_tokens
        )

    def __repr__(self) -> str:
        return f"OpticalTokenCounter({self.cost_model.name!r})"

    def __call__(
        self,
        messages: Sequence[BaseMessage | Mapping[str, Any] | str] | BaseMessage | Mapping[str, Any]
        | str,
    ) -> int:
        """Tokens of ``messages``: a sequence of messages (or of what LangChain converts to
        them), or one message. A bare string is one human message, as in a list — not a
        sequence of one-character messages — and a bare dict one message, as in a list, not
        its keys as human messages (``{"role": "user", "content": "hi"}`` was priced as the
        two messages ``"role"`` and ``"content"``). Anything else raises
        :class:`~opticmem.errors.InvalidTurnError`."""
        if isinstance(messages, BaseMessage):
            return self.message(messages)
        if isinstance(messages, (str, Mapping)):
            messages = [messages]
        elif isinstance(messages, bytes) or not isinstance(messages, Iterable):
            raise InvalidTurnError(f"expected LangChain messages (a list of them, or one), got "
                                   f"{type(messages).__name__}")
        try:
            converted = convert_to_messages(messages)  # type: ignore[arg-type]
        except (NotImplementedError, ValueError) as exc:  # LangChain's "unsupported type"
            raise InvalidTurnError(f"cannot price these messages: {exc}") from exc
        return sum(self.message(m) for m in converted)

    def message(self, message: BaseMessage) -> int:
        """Tokens of one message, its per-message overhead included."""
        priced, extra = self._priceable(message)
        return message_tokens([priced], self.cost_model) + extra

    def image_tokens(self, width: int, height: int, detail: str | None = None) -> int:
        """Tokens the model charges for one ``width × height`` image (sent at OpenAI's
        ``detail``, when named: only tile pricing reads it)."""
        return image_tokens(self.cost_model.image, width, height, detail)

    # ------------------------------------------------------------------ internals
    def _priceable(self, message: BaseMessage) -> tuple[dict[str, Any], int]:
        """``message`` as a plain dict ``message_tokens`` can price, plus the tokens of the
        parts it cannot (images that are not base64 PNGs)."""
        blocks: list[dict[str, Any]] = []
        extra = 0
        ai = message if isinstance(message, AIMessage) else None
        if isinstance(message.content, str) and ai is None:
            if message.content:
                blocks.append({"type": "text", "text": message.content})
        else:
            # an AIMessage's string content too: its content_blocks add the reasoning
            # LangChain reads from additional_kwargs["reasoning_content"], priced only for
            # list content before — the same message cost more or less by its shape
            standard: list[Mapping[str, Any]] = list(message.content_blocks)
            if ai is not None and not any(b.get("type") == "reasoning" for b in standard):
                # a Responses reasoning summary in additional_kwargs["reasoning"], which
                # LangChain translates only for list content of a message naming openai
                standard = [*_summary_blocks(message.additional_kwargs.get("reasoning")),
                            *standard]
            for block in _with_tool_results(standard):
                kind = block.get("type")
                if ai is not None and is_call_block(block):
                    continue  # priced from ``message_calls`` below, once each
                image = block if kind == "image" else _provider_image(block)
                if image is not None:
                    png, tokens = self._image(image)
                    if png is not None:
                        blocks.append(png)
                    extra += tokens
                    continue
                text = _text_of(block)
                if text:
                    blocks.append({"type": "text", "text": text})
        if ai is not None:
            for item, lines in hosted_tool_outputs(ai):
                # an older langchain-openai's hosted tool items (additional_kwargs
                # ["tool_outputs"]) LangChain did not translate: as archived, a generated
                # image as the image it is (its base64 priced as text was ~1 token a
                # byte and a half)
                if item.get("type") == "image_generation_call":
                    png, tokens = self._image({"base64": item.get("result")})
                    blocks.extend([png] if png is not None else [])
                    extra += tokens
                else:
                    blocks.append({"type": "text", "text": "\n".join(lines)})
            if (spoken := audio_text(ai.additional_kwargs.get("audio"))) is not None:
                # langchain-openai's spoken answer (content ""): its transcript, as archived
                blocks.append({"type": "text", "text": spoken})
            if found := message_calls(ai):
                # invalid calls (arguments that did not parse) go back to the provider too
                calls = [{"name": c.get("name"), "args": c.get("args"), "id": c.get("id")}
                         for c in found]
                blocks.append({"type": "text",
                               "text": json.dumps(calls, ensure_ascii=False, default=str)})
        return {"role": message.type, "content": blocks}, extra

    def _image(self, block: Mapping[str, Any]) -> tuple[dict[str, Any] | None, int]:
        b64 = block.get("base64")
        if not isinstance(b64, str):
            url = block.get("url")
            if isinstance(url, str) and url.startswith("data:") and "," in url:
                b64 = url.split(",", 1)[1]
            else:
                return None, self.unknown_image_tokens
        extras = block.get("extras")
        detail = extras.get("detail") if isinstance(extras, Mapping) else None
        detail = detail if isinstance(detail, str) else None
        head = b64_head(b64)
        try:
            png_size(head)
        except ValueError:
            size = _image_size(b64)
            if size is None:  # unreadable here: priced as an image of unknown size
                return None, self.unknown_image_tokens
            return None, self.image_tokens(*size, detail)
        if detail is not None:  # an OpenAI part's detail, which message_tokens reads there
            return {"type": "image_url", "image_url": {
                "url": f"data:image/png;base64,{b64}", "detail": detail}}, 0
        return {"type": "image", "base64": b64, "mime_type": "image/png"}, 0


def _with_tool_results(blocks: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``blocks`` with each Anthropic ``tool_result`` (a ``non_standard`` block of a
    ``HumanMessage``) replaced by what it is archived as: its heading (``[Tool result ·
    call ID]``, as the tool turn is shown back) and the standard blocks of its content,
    read as a ``ToolMessage`` of it is
    (:func:`~opticmem.integrations.langchain_messages.tool_result_message`) — an image
    the tool returned priced as an image. As the JSON of the block, a screenshot was
    priced as its marker's text and a PNG's size went unpriced."""
    out: list[Mapping[str, Any]] = []
    for block in blocks:
        value = block.get("value") if block.get("type") == "non_standard" else None
        result = tool_result_message(value) if isinstance(value, Mapping) else None
        if result is None:
            out.append(block)
            continue
        out.append({"type": "text", "text": tool_result_head(None, result.tool_call_id)})
        out.extend(result.content_blocks)
    return out


def _image_size(b64: str) -> tuple[int, int] | None:
    """Width and height of a base64 image in any format Pillow reads (header only);
    ``None`` for data Pillow does not know as an image — a format it cannot read (HEIC,
    SVG) is still an image to the provider: raising here failed the model call of an
    agent whose user sent a HEIC photo (the middleware prices the run's messages).
    Data that is not base64 raises :class:`ValueError`."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = base64.b64decode(b64)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"cannot read the size of an image block: {exc}") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except UnidentifiedImageError:
        return None


def _provider_image(block: Mapping[str, Any]) -> dict[str, Any] | None:
    """An image LangChain hands over as a ``non_standard`` block, as an ``image`` block
    (``None``: not such an image). Priced as text, a photo's base64 cost ~174,000 tokens,
    and the middleware refused the run that sent it:

    * an ``image_url`` part whose value is the URL string itself (``{"type":
      "image_url", "image_url": "data:image/jpeg;base64,..."}``, the form
      ``ChatGoogleGenerativeAI`` takes), and an OpenAI Responses ``input_image`` part
      (``image_url`` a string; by ``file_id``: an image of unknown size), and a computer
    tool's ``computer_screenshot`` (a ``computer_call_output``'s) likewise;
    * a Gemini ``media`` block of an ``image/*`` type: ``data`` (base64 or bytes), or
      ``file_uri`` (an image of unknown size).
    """
    value = block.get("value") if block.get("type") == "non_standard" else None
    if not isinstance(value, Mapping):
        return None
    kind = value.get("type")
    if kind in ("image_url", "input_image", "computer_screenshot"):
        url = value.get("image_url")
        if isinstance(url, str):
            return {"type": "image", "url": url}
        return {"type": "image"} if kind != "image_url" else None
    mime = value.get("mime_type")
    if kind == "media" and isinstance(mime, str) and mime.startswith("image/"):
        data = value.get("data")
        if isinstance(data, (bytes, bytearray)):
            data = base64.b64encode(data).decode()
        return {"type": "image", "base64": data} if isinstance(data, str) else {"type": "image"}
    return None


def _summary_blocks(reasoning: object) -> list[dict[str, Any]]:
    """The ``reasoning`` blocks of an OpenAI Responses reasoning item (langchain-openai
    keeps it in ``additional_kwargs["reasoning"]``): one per ``summary`` (or ``content``)
    part with text, as LangChain's translation makes them when the message names its
    provider. Without the provider named, or with string content, LangChain adds none,
    and the summary the model wrote went unpriced: the counter is an upper bound, so it
    is priced whatever the message's shape, as ``reasoning_content`` is."""
    if not isinstance(reasoning, Mapping):
        return []
    return [{"type": "reasoning", "reasoning": part["text"]}
            for key in ("summary", "content")
            if isinstance(parts := reasoning.get(key), list)
            for part in parts
            if isinstance(part, Mapping) and isinstance(part.get("text"), str) and part["text"]]


def _text_of(block: Mapping[str, Any]) -> str:
    """The text a non-image standard block is priced as."""
    kind = block.get("type")
    if kind in ("text", "text-plain"):
        return str(block.get("text") or "")
    if kind == "reasoning":
        return str(block.get("reasoning") or "")
    fields = {k: v for k, v in block.items() if k not in _PAYLOAD_KEYS}
    value = fields.get("value")
    if kind == "non_standard" and isinstance(value, Mapping) and value.get(
            "type") == "thinking":
        # Anthropic's thinking, as its text: what LangChain's translator makes of it
        # (a ``reasoning`` block) when the message names its provider — its signature
        # (hundreds of opaque characters) priced as text tripled a short thought's price
        return str(value.get("thinking") or "")
    if kind == "non_standard" and isinstance(value, Mapping):
        # a provider's audio, video or file: its fields, without the payload, as a
        # standard block is priced (a Gemini ``media`` block's bytes were priced as text)
        fields["value"] = {k: v for k, v in value.items() if k not in _PAYLOAD_KEYS}
    # an attachment inside the block (a PDF a web fetch's result holds as a base64
    # source, an OpenAI file_data) as its marker, as it is archived: its bytes were
    # priced as text, a 5,000-character payload as ~1,000 tokens
    return json.dumps(without_payloads(fields), ensure_ascii=False, sort_keys=True,
                      default=str)


def count_tokens(
    messages: Sequence[BaseMessage | Mapping[str, Any]],
    model: OpticalMemory | CostModel | ImageCost | str = "deepseek-ocr",
) -> int:
    """Tokens ``messages`` cost under ``model``; see :class:`OpticalTokenCounter`.

    >>> from langchain_core.messages import AIMessage
    >>> count_tokens([AIMessage("Sure — milestones first?")], "openai")
    9
    """
    return OpticalTokenCounter(model)(messages)


__all__ = ["OpticalTokenCounter", "count_tokens"]
