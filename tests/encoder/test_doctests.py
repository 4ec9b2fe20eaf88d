"""The runnable examples in the model package's docstrings stay true."""

from __future__ import annotations

import pytest

from tests.doctests import check_doctests

MODULES = [
    "opticmem.encoder.align", "opticmem.encoder.byte_fallback", "opticmem.encoder.config",
    "opticmem.encoder.flops", "opticmem.encoder.ngram", "opticmem.encoder.official",
    "opticmem.encoder.preprocess", "opticmem.encoder.token_cursor",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    check_doctests(name)
