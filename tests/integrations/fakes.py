"""Offline stand-ins for chat models, and checks of what a model was sent."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatResult
from PIL import Image
from pydantic import Field

from opticmem.render import Tier

SYSTEM = "You are a careful assistant. Answer briefly."

_TIER = re.compile(r"· (Large|Base|Small|Tiny)(, as text)?\]$")


class CapturingChatModel(BaseChatModel):
    """Records exactly the messages every call was sent, then answers with ``inner`` (a
    LangChain fake model). Tools are accepted and ignored (the replies are scripted)."""

    inner: BaseChatModel
    calls: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "capturing-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> CapturingChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls.append([m.model_copy(deep=True) for m in messages])
        return self.inner._generate(messages, stop=stop, **kwargs)


def replies(prefix: str = "Noted") -> Iterator[AIMessage | str]:
    """Endless distinct assistant replies."""
    i = 0
    while True:
        yield f"{prefix} #{i}: understood, I have written that down with its reference."
        i += 1


def capturing(script: Iterator[AIMessage | str] | None = None) -> CapturingChatModel:
    return CapturingChatModel(inner=GenericFakeChatModel(messages=script or replies()))


def user_text(i: int, tag: str = "") -> str:
    """A user turn long enough that a few dozen of them fill several pages."""
    return (f"{tag}Message {i}: about work order ORD-{1000 + i}, we agreed step {i} happens "
            f"on day {i % 28 + 1} and costs {10 * i} euros. ") * 6


def image_tiers(messages: Sequence[BaseMessage]) -> list[str]:
    """The tier of every page image in ``messages`` (oldest first), after checking that
    each is a well-formed v1 base64 PNG block whose size is its caption's tier."""
    tiers: list[str] = []
    for m in messages:
        if isinstance(m.content, str):
            continue
        caption: str | None = None
        for block in m.content:
            assert isinstance(block, dict)
            if block["type"] == "text":
                if _TIER.search(block["text"]):
                    caption = block["text"]
                continue
            assert block["type"] == "image", block["type"]
            assert block["mime_type"] == "image/png"
            data = base64.b64decode(block["base64"], validate=True)
            with Image.open(io.BytesIO(data)) as img:
                assert img.format == "PNG"
                size = img.size
            assert caption is not None, "an image without a caption before it"
            match = _TIER.search(caption)
            assert match is not None and match.group(2) is None, caption
            tier = Tier.parse(match.group(1))
            assert size == (tier.pixels, tier.pixels), (caption, size)
            tiers.append(tier.value)
            caption = None
    return tiers
