"""Evaluation metrics: edit distance against a reference DP, precision definitions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.metrics import (
    char_precision,
    edit_distance,
    exact_token_rate,
    exact_tokens,
    fox_word_precision,
)


def dp_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab한\n ", max_size=70), st.text(alphabet="ab한\n ", max_size=70))
def test_edit_distance_matches_dynamic_programming(a: str, b: str) -> None:
    assert edit_distance(a, b) == dp_distance(a, b)


def test_long_strings_are_fast_and_right() -> None:
    a = "the quick brown fox " * 250
    b = a.replace("quick", "quack", 30)
    assert edit_distance(a, b) == 30


def test_char_precision_bounds() -> None:
    assert char_precision("", "") == 1.0
    assert char_precision("abc", "") == 0.0
    assert char_precision("abcd", "abcx") == 0.75
    assert char_precision("abc", "abcabc") == 0.5  # invented text is penalised


def test_fox_precision_is_set_based_on_hypothesis() -> None:
    assert fox_word_precision("a b c", "a a b z") == 2 / 3
    assert fox_word_precision("a", "") == 0.0


def test_exact_tokens_and_rate() -> None:
    ref = "Call 555-0100 about ORD-48213-XK, budget $48,250.00 (due 2026-03-04)."
    assert exact_tokens(ref) == ["555-0100", "ORD-48213-XK", "$48,250.00", "2026-03-04"]
    assert exact_token_rate(ref, "call 555-0100 about ORD-48213-XX $48,250.00") == (2, 4)
