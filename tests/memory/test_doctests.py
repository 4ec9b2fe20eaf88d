"""The runnable examples in the memory core's docstrings stay true."""

from __future__ import annotations

import pytest

from tests.doctests import check_doctests

MODULES = [
    "opticmem", "opticmem.arguments", "opticmem.budget", "opticmem.context", "opticmem.costs",
    "opticmem.facts",
    "opticmem.lru", "opticmem.memory", "opticmem.memory_store", "opticmem.policy",
    "opticmem.recall", "opticmem.sessions", "opticmem.sqlite_store", "opticmem.stores",
    "opticmem.tokens", "opticmem.transcripts", "opticmem.render.layout",
    "opticmem.render.sheet",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_doctests(name)
