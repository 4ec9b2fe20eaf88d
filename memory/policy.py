"""Decay policies: which tier each sealed page is shown at before the budget is applied.

A page's *level* is 0 (Large) … 3 (Tiny), or 4 (out of context, still archived). A
policy gives each page a level from its rank (0 = the newest page) and its age; the
planner then makes levels monotone (an older page is never sharper than a newer one) and
applies budget pressure on top (:mod:`opticmem.budget`). Three policies:

* :class:`RankDecay` (default) — by page rank. Defaults: ranks 0–1 Large, 2–3 Base,
  4–7 Small, 8–15 Tiny, 16+ out. About 4k tokens of pages under DeepSeek-OCR prices
  (2·421 + 2·273 + 4·111 + 8·73 slots plus captions and facts lines), leaving room
  for the verbatim window in an 8k budget. Doubling spans keep the newest history
  sharp while the oldest visible pages still say *something* at 13× compression.
* :class:`AgeDecay` — by wall-clock age of a page's newest turn. Defaults: under 1 hour
  Large, 1 day Base, 1 week Small, 30 days Tiny, older out. The memory never lets this
  clock run backwards for a consumer (it remembers the latest one that changed a tier),
  so a clock stepped back cannot promote a page.
* :class:`PressureDecay` — every recent page starts at Large; only the budget demotes.

``max_pages`` bounds how many of the newest pages can ever be in context, so assembling
a context reads a fixed number of page records however long the history is.

>>> RankDecay().level(rank=5, age=0.0), AgeDecay().level(rank=0, age=7200.0)
(2, 1)
"""

from __future__ import annotations

import bisect
import numbers
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from opticmem.errors import ConfigurationError, ConfigurationTypeError
from opticmem.render import ORDER, Tier

OUT = len(ORDER)
"""The level of a page that is out of context (4)."""


def tier_of(level: int) -> Tier | None:
    """The tier of a level, ``None`` for out of context."""
    return ORDER[level] if 0 <= level < OUT else None


def _check_pages(name: str, value: object) -> None:
    """Raise :class:`ConfigurationError` unless ``value`` is a whole number of pages ≥ 0:
    page counts slice the page log, so ``1.5`` (or ``"2"``) would be taken here and fail
    with a bare ``TypeError`` in every later context of the memory."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigurationError(f"{name} must be a whole number of pages ≥ 0, got {value!r}")


@runtime_checkable
class DecayPolicy(Protocol):
    """Maps a page's rank and age to a level; see the module docstring."""

    @property
    def key(self) -> str:
        """Stable description of the policy and its parameters (for cache keys)."""
        ...

    @property
    def max_pages(self) -> int:
        """At most this many of the newest pages can be in context."""
        ...

    def level(self, rank: int, age: float) -> int:
        """Level 0..4 of the page at ``rank`` (0 = newest) that is ``age`` seconds old."""
        ...


@dataclass(frozen=True)
class RankDecay:
    """Decay by page rank: the newest ``large`` pages are Large, the next ``base`` Base, …"""

    large: int = 2
    base: int = 2
    small: int = 4
    tiny: int = 8

    def __post_init__(self) -> None:
        for name in ("large", "base", "small", "tiny"):
            _check_pages(f"RankDecay.{name} (a page count per tier)", getattr(self, name))

    @property
    def key(self) -> str:
        return f"rank:{self.large}/{self.base}/{self.small}/{self.tiny}"

    @property
    def max_pages(self) -> int:
        return self.large + self.base + self.small + self.tiny

    def level(self, rank: int, age: float) -> int:
        edges = (self.large, self.large + self.base, self.large + self.base + self.small,
                 self.max_pages)
        return bisect.bisect_right(edges, rank)


@dataclass(frozen=True)
class AgeDecay:
    """Decay by age: a page is Large while younger than ``large`` seconds, then Base while
    younger than ``base``, and so on; older than ``tiny`` it is out of context."""

    large: float = 3600.0
    base: float = 86_400.0
    small: float = 7 * 86_400.0
    tiny: float = 30 * 86_400.0
    max_pages: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.large <= self.base <= self.small <= self.tiny:
            raise ConfigurationError("age thresholds must be ≥ 0 and non-decreasing: "
                                     "large ≤ base ≤ small ≤ tiny")
        _check_pages("AgeDecay.max_pages", self.max_pages)

    @property
    def key(self) -> str:
        return f"age:{self.large:g}/{self.base:g}/{self.small:g}/{self.tiny:g}/{self.max_pages}"

    def level(self, rank: int, age: float) -> int:
        if rank >= self.max_pages:
            return OUT
        return bisect.bisect_right((self.large, self.base, self.small, self.tiny), max(age, 0.0))


@dataclass(frozen=True)
class PressureDecay:
    """No scheduled decay: the newest ``max_pages`` pages start at Large and only budget
    pressure demotes them (oldest first)."""

    max_pages: int = 32

    def __post_init__(self) -> None:
        _check_pages("PressureDecay.max_pages", self.max_pages)

    @property
    def key(self) -> str:
        return f"pressure:{self.max_pages}"

    def level(self, rank: int, age: float) -> int:
        return 0 if rank < self.max_pages else OUT


PolicyName = Literal["rank", "age", "pressure"]
"""The named policies (each with its defaults): what ``OpticalMemory(policy=...)`` takes
besides a :class:`DecayPolicy`."""


def decay_policy(spec: DecayPolicy | PolicyName = "rank") -> DecayPolicy:
    """A policy from ``"rank"``, ``"age"``, ``"pressure"`` (defaults) or a policy instance.

    An unknown name raises :class:`~opticmem.errors.ConfigurationError`; a ``spec`` of
    another type, :class:`~opticmem.errors.ConfigurationTypeError` (a ``ConfigurationError``
    and a ``TypeError``), both naming what is accepted.
    """
    named = {"rank": RankDecay, "age": AgeDecay, "pressure": PressureDecay}
    if isinstance(spec, str):
        if spec not in named:
            raise ConfigurationError(
                f"unknown decay policy {spec!r}; choose from {', '.join(named)}"
            )
        policy: DecayPolicy = named[spec]()
        return policy
    if isinstance(spec, DecayPolicy):
        # A policy of the caller's own is checked like the built-in ones: a max_pages of
        # 2.5 was taken, and every context of a session with more pages failed with a
        # bare TypeError slicing the page log.
        _check_pages(f"{type(spec).__name__}.max_pages", spec.max_pages)
        return spec
    # was a bare TypeError ("not a decay policy: 3"), unlike the ConfigurationError of an
    # unknown name, and it did not say what is accepted
    raise ConfigurationTypeError(
        f"policy must be one of {', '.join(map(repr, named))} or a DecayPolicy, not "
        f"{type(spec).__name__} {spec!r}")
