"""opticmem.integrations: LangChain/LangGraph, chat loops, anything framework-specific."""
