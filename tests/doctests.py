"""Running a module's docstring examples as a test (shared by the per-area doctest tests)."""

from __future__ import annotations

import doctest
import importlib


def check_doctests(name: str, *, min_examples: int = 1) -> None:
    """Run the examples in module ``name``'s docstrings (``...`` matches anything); fail
    unless there are at least ``min_examples`` of them and all pass."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= min_examples, (
        f"{name} has {result.attempted} examples, expected at least {min_examples}"
    )
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples fail in {name}"
