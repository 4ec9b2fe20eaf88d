"""opticmem.integrations: LangChain/LangGraph, chat loops, anything framework-specific.

The chat-loop wrapper (:func:`with_memory`) needs nothing beyond opticmem and is
imported here directly. The LangChain names below load on first use, so importing this
package never needs LangChain; using one of them without it raises an ImportError naming
the extra (``pip install 'opticmem[langchain]'``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from opticmem.integrations.chat_loop import (
    AsyncMemoryChat,
    MemoryChat,
    UnsupportedReplyError,
    with_memory,
)

if TYPE_CHECKING:  # real types for type checkers and IDEs; loaded lazily at run time
    from opticmem.integrations.langchain_history import (
        OpticalChatMessageHistory as OpticalChatMessageHistory,
    )
    from opticmem.integrations.langchain_middleware import (
        InFlightTooLargeError as InFlightTooLargeError,
    )
    from opticmem.integrations.langchain_middleware import ModelView as ModelView
    from opticmem.integrations.langchain_middleware import (
        OpticalMemoryMiddleware as OpticalMemoryMiddleware,
    )
    from opticmem.integrations.langchain_tokens import OpticalTokenCounter as OpticalTokenCounter
    from opticmem.integrations.langchain_tokens import count_tokens as count_tokens
    from opticmem.integrations.langchain_tools import RecallTool as RecallTool
    from opticmem.integrations.langchain_tools import make_recall_tool as make_recall_tool

_LANGCHAIN: dict[str, str] = {
    "OpticalMemoryMiddleware": "langchain_middleware",
    "InFlightTooLargeError": "langchain_middleware",
    "ModelView": "langchain_middleware",
    "RecallTool": "langchain_tools",
    "make_recall_tool": "langchain_tools",
    "OpticalChatMessageHistory": "langchain_history",
    "OpticalTokenCounter": "langchain_tokens",
    "count_tokens": "langchain_tokens",
}
"""LangChain integration names → their module in this package (imported lazily)."""


def __getattr__(name: str) -> Any:
    module = _LANGCHAIN.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LANGCHAIN])


# The LangChain names are listed too, so ``from opticmem.integrations import *`` needs
# the extra (without it, the star import raises the ImportError naming it).
__all__ = [
    "AsyncMemoryChat",
    "InFlightTooLargeError",
    "MemoryChat",
    "ModelView",
    "OpticalChatMessageHistory",
    "OpticalMemoryMiddleware",
    "OpticalTokenCounter",
    "RecallTool",
    "UnsupportedReplyError",
    "count_tokens",
    "make_recall_tool",
    "with_memory",
]
