"""Evaluation metrics: edit distance against a reference DP, precision definitions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.metrics import (
    char_precision,
    edit_distance,
    exact_token_rate,
    exact_tokens,
    fox_word_precision,
    misreads,
    read_by_kind,
)
from tests.doctests import check_doctests


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


def test_fox_precision_of_nothing_read_from_nothing_is_perfect() -> None:
    # As character precision: an empty page read back as empty lost and invented nothing
    # (Fox's nltk precision is undefined there; 0.0 would mark a perfect read as a miss).
    assert fox_word_precision("", "") == 1.0
    assert fox_word_precision(" \n", "\n") == 1.0
    assert fox_word_precision("", "a") == 0.0


def test_char_precision_counts_code_points_unnormalised() -> None:
    # Exactly the transcript's code points: no Unicode or newline normalisation.
    assert char_precision("한글", "한굴") == 0.5
    assert char_precision("e\u0301", "e") == 0.5  # a combining mark is a character
    assert char_precision("\u00e9", "e\u0301") == 0.0  # NFC against NFD differs
    assert char_precision("👍🏽", "👍") == 0.5  # emoji with a skin-tone modifier: two
    assert char_precision("a\r\nb", "a\nb") == 0.75
    assert char_precision("ab\n", "ab") == pytest.approx(2 / 3)
    assert char_precision("ab", "ab  ") == 0.5  # longer than the reference: still ≥ 0


def test_exact_tokens_and_rate() -> None:
    ref = "Call 555-0100 about ORD-48213-XK, budget $48,250.00 (due 2026-03-04)."
    assert exact_tokens(ref) == ["555-0100", "ORD-48213-XK", "$48,250.00", "2026-03-04"]
    assert exact_token_rate(ref, "call 555-0100 about ORD-48213-XX $48,250.00") == (2, 4)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab한\n –", max_size=60), st.text(alphabet="ab한\n –", max_size=60))
def test_misreads_rebuild_the_hypothesis_from_the_reference(ref: str, hyp: str) -> None:
    found = misreads(ref, hyp)
    assert (found == []) == (ref == hyp)
    # Applying every span's replacement to the reference gives the hypothesis back.
    out, at = [], 0
    for m in found:
        assert m.before == ref[max(0, m.offset - 16):m.offset]
        assert ref[m.offset:m.offset + len(m.expected)] == m.expected
        out += [ref[at:m.offset], m.got]
        at = m.offset + len(m.expected)
    assert "".join(out) + ref[at:] == hyp


def test_misreads_name_the_dropped_tail_and_reject_bad_context() -> None:
    [m] = misreads("Deadline 17 December\nOpen questions", "Deadline 17 December", context=8)
    assert (m.offset, m.expected, m.got, m.before) == (20, "\nOpen questions", "", "December")
    with pytest.raises(ValueError, match="context"):
        misreads("a", "b", context=-1)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="ab7한\n –", max_size=60), st.text(alphabet="ab7한\n –", max_size=60))
def test_read_by_kind_counts_every_reference_character_once(ref: str, hyp: str) -> None:
    counts = read_by_kind(ref, hyp)
    assert sum(n for _, n in counts.values()) == len(ref)
    assert all(0 <= read <= n for read, n in counts.values())
    # Characters outside every misread span are exactly the ones read in place.
    missed = sum(len(m.expected) for m in misreads(ref, hyp))
    assert sum(read for read, _ in counts.values()) == len(ref) - missed
    if ref == hyp:
        assert all(read == n for read, n in counts.values())


def test_read_by_kind_separates_scripts_and_digits() -> None:
    counts = read_by_kind("Order 4471 배송 완료!", "Order 4421 배숑 완료!")
    assert counts["digit"] == (3, 4) and counts["hangul"] == (3, 4)
    assert counts["letter"] == (5, 5) and counts["punct/symbol"] == (1, 1)
    assert counts["space"] == (3, 3)


def test_metrics_docstring_examples() -> None:
    check_doctests("opticmem.encoder.metrics", min_examples=3)
