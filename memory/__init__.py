"""opticmem: long-context memory for LLM agents with optical decay.

Recent turns stay verbatim; older turns are packed onto page images that blur through
DeepSeek-OCR's tiers (Large → Base → Small → Tiny → out of context, still archived), so
far more history fits a fixed token budget — and what a page said can still be recalled.

>>> from opticmem import OpticalMemory
>>> mem = OpticalMemory(budget_tokens=8192, codec=None)
>>> _ = mem.add("alice", "user", "Let's plan Project Titan for March.")
>>> mem.context("alice").cost <= 8192
True
"""

from opticmem.budget import Mark, Plan
from opticmem.context import (
    Context,
    ContextPage,
    ContextTurn,
    Cost,
    Segment,
    TextSegment,
    VisionSegment,
)
from opticmem.costs import (
    CostModel,
    DeepSeekOCRCost,
    ImageCost,
    PixelAreaCost,
    TileCost,
    cost_model,
    message_tokens,
)
from opticmem.errors import (
    BudgetError,
    CodecError,
    CodecUnavailableError,
    ConfigurationError,
    ConfigurationTypeError,
    CorruptRecordError,
    InvalidSessionError,
    InvalidTurnError,
    OpticMemError,
    PageConflictError,
    RecordTooLargeError,
    SessionFullError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
    TurnTooLargeError,
)
from opticmem.facts import extract_facts
from opticmem.memory import OpticalMemory
from opticmem.memory_store import InMemoryStore
from opticmem.policy import AgeDecay, DecayPolicy, PressureDecay, RankDecay
from opticmem.recall import Passage
from opticmem.records import PageRecord, Turn
from opticmem.render import RenderSettings, Tier
from opticmem.sessions import DEFAULT_ROLES, MAX_SESSION_CHARS, MAX_TURN_CHARS
from opticmem.sqlite_store import SQLiteStore
from opticmem.store import Store
from opticmem.stores import open_store, register_store
from opticmem.tokens import ApproxCounter, TextCounter, text_counter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ROLES",
    "MAX_SESSION_CHARS",
    "MAX_TURN_CHARS",
    "AgeDecay",
    "ApproxCounter",
    "BudgetError",
    "CodecError",
    "CodecUnavailableError",
    "ConfigurationError",
    "ConfigurationTypeError",
    "Context",
    "ContextPage",
    "ContextTurn",
    "CorruptRecordError",
    "Cost",
    "CostModel",
    "DecayPolicy",
    "DeepSeekOCRCost",
    "ImageCost",
    "InMemoryStore",
    "InvalidSessionError",
    "InvalidTurnError",
    "Mark",
    "OpticMemError",
    "OpticalMemory",
    "PageConflictError",
    "PageRecord",
    "Passage",
    "PixelAreaCost",
    "Plan",
    "PressureDecay",
    "RankDecay",
    "RecordTooLargeError",
    "RenderSettings",
    "SQLiteStore",
    "Segment",
    "SessionFullError",
    "Store",
    "StoreError",
    "StoreURLError",
    "StoreUnavailableError",
    "TextCounter",
    "TextSegment",
    "Tier",
    "TileCost",
    "Turn",
    "TurnTooLargeError",
    "VisionSegment",
    "cost_model",
    "extract_facts",
    "message_tokens",
    "open_store",
    "register_store",
    "text_counter",
]
