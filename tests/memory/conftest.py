"""Fixtures of the memory tests: a store per backend, small render settings, a clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opticmem.store import Store
from tests.memory.backends import BACKENDS, backend_params


@pytest.fixture(params=backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every registered store backend in turn (the contract suite runs once per backend)."""
    s = BACKENDS[request.param].factory(request, tmp_path)
    try:
        yield s
    finally:
        s.close()


class Clock:
    """A controllable clock: ``clock()`` returns the time, ``advance(s)`` moves it."""

    def __init__(self, start: float = 1_772_352_000.0) -> None:  # 2026-03-01T08:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()
