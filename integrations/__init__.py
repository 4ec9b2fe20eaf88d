"""opticmem.integrations: LangChain/LangGraph, chat loops, anything framework-specific."""

from opticmem.integrations.chat_loop import AsyncMemoryChat, MemoryChat, with_memory

__all__ = ["AsyncMemoryChat", "MemoryChat", "with_memory"]
