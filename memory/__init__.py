"""opticmem: long-context memory for LLM agents with optical decay."""

__version__ = "0.1.0"
