"""The runnable examples in the memory core's docstrings stay true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "opticmem", "opticmem.budget", "opticmem.context", "opticmem.costs", "opticmem.facts",
    "opticmem.lru", "opticmem.memory", "opticmem.memory_store", "opticmem.policy",
    "opticmem.recall", "opticmem.sessions", "opticmem.sqlite_store", "opticmem.stores",
    "opticmem.tokens", "opticmem.transcripts", "opticmem.render.sheet",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
