"""opticmem.integrations: LangChain/LangGraph, chat loops, anything framework-specific.

The LangChain names below load on first use, so importing this package never needs
LangChain; using one of them without it raises an ImportError naming the extra
(``pip install 'opticmem[langchain]'``).
"""

from __future__ import annotations

import importlib
from typing import Any

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
