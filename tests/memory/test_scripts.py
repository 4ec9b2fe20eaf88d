"""Recall terms and exact facts over every script, fuzzed: Latin with diacritics, Cyrillic,
Greek, Arabic with and without harakat, Hebrew, Devanagari, Thai, Lao, Khmer, Myanmar, CJK,
kana, Hangul, emoji sequences, full-width forms, bidi marks, zero-width and control
characters, lone surrogates, and the NFC and NFD forms of each.

What holds on any text:

* nothing raises, and a long run of anything is read in linear time;
* a word of a page (a run of letters, digits and their marks; for CJK, Thai, Lao, Khmer
  and Myanmar, which have no spaces, the whole run, also matched by its character
  bigrams) is found by a search for it alone, in any case and either normal form;
* each fact is the text as written at its span, on one line, of a known kind, within the
  limits; extraction is deterministic and keeps the order facts are written in.
"""

from __future__ import annotations

import time
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from opticmem.facts import (
    MAX_FACT_CHARS,
    MAX_FACTS,
    FactSpans,
    extract_facts,
    fact_kind,
    fact_spans,
    page_cues,
    page_facts,
)
from opticmem.recall import WORD, Doc, RecallIndex, terms
from opticmem.render import Tier

PIECES = [
    "café", "Zürich", "naïve", "Straße", "İstanbul", "Tiếng Việt", "Привет", "мир", "Ελληνικά",
    "λόγος", "ΟΔΟΣ", "مرحبا", "مَرْحَبًا", "١٢٣٫٥", "שלום", "עוֹלָם", "नमस्ते", "दुनिया", "ภาษาไทย",
    "ສະບາຍດີ", "ភាសាខ្មែរ", "မြန်မာ", "中文字", "東京", "ひらがな", "カタカナ", "한국어", "서울",
    "👍🏽", "👨‍👩‍👧", "🇰🇷", "❤️", "e\u0301", "ＡＢＣ－１２３", "３月", "\u200f", "\u200e", "\u200b",
    "\u200d", "\u00ad", "\ufeff", "\u202b", "\x00", "\x1b[31m", "\ud800", "\udfff", "ABC-123",
    "2026-03-04", "$4,200", "mina@x.io", "https://x.io/a", "v1.2.3", "12.5%", "ﬁ", "Ǆ",
    " ", "\n", "\t", ".", ",", "-", "/", "@", ":",
]
pieces = st.lists(st.sampled_from(PIECES), max_size=16)
texts = st.one_of(
    pieces.map(" ".join), pieces.map("".join), st.text(max_size=80),
    st.text(alphabet=st.sampled_from("".join(PIECES)), max_size=80),
).flatmap(lambda t: st.sampled_from([t, unicodedata.normalize("NFD", t)]
                                    if "\ud800" not in t and "\udfff" not in t else [t]))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pages_found(text: str, query: str) -> list[int]:
    idx = RecallIndex()
    idx.set_page(0, [Doc(0, "recollection", text, 0.9, Tier.LARGE)])
    idx.set_page(1, [Doc(1, "recollection", "lunch menu and coffee", 0.9, Tier.LARGE)])
    return [d.page_no for d, _ in idx.search(query, 2)]


def _forms(word: str) -> set[str]:
    """A word as a user may type it: its cases and its normal forms."""
    out = {word, word.upper(), word.lower(), word.title()}
    return out | {unicodedata.normalize(f, w) for w in out for f in ("NFC", "NFD")}


@FAST
@given(texts)
@example("0\u200b0").via("a zero-width space between words: both are terms")
@example("Donau\u00addampf").via("a soft hyphen inside a word: its pieces are terms")
def test_a_word_of_a_page_is_found_in_any_case_and_normal_form(text: str) -> None:
    for m in WORD.finditer(text):
        for typed in _forms(m.group()):
            assert 0 in pages_found(text, typed), (text, typed)


@FAST
@given(texts)
def test_facts_are_the_text_as_written_on_one_line_of_a_known_kind(text: str) -> None:
    spans = fact_spans(text)
    assert [s for s, _, _ in spans] == sorted(s for s, _, _ in spans)
    for s, e, fact in spans:
        assert fact == text[s:e].strip() and fact, (text, s, e, fact)
        assert "\n" not in fact and len(fact) <= MAX_FACT_CHARS
        assert fact_kind(fact), (text, fact)
    facts = extract_facts(text)
    assert facts == extract_facts(text) == tuple(dict.fromkeys(f for _, _, f in spans))[:MAX_FACTS]
    segments = [(FactSpans(text), 0, len(text))]
    cues = page_cues(segments, page_facts(segments))
    assert len(cues) == len(page_facts(segments)) <= MAX_FACTS
    terms(text, drop_stopwords=True)


@given(st.lists(st.sampled_from(PIECES), min_size=MAX_FACTS + 10, max_size=120).map(" ".join))
@settings(max_examples=30, deadline=None)
def test_a_page_of_many_facts_keeps_the_first_ones(text: str) -> None:
    facts = extract_facts(text)
    spans = [f for _, _, f in fact_spans(text)]
    assert len(facts) <= MAX_FACTS and list(facts) == list(dict.fromkeys(spans))[:MAX_FACTS]
    for limit in (0, 1, 5):
        assert extract_facts(text, limit) == facts[:limit]


def test_long_runs_of_any_script_are_read_in_linear_time() -> None:
    """Eight times the text takes about eight times as long, not sixty-four: the bound is
    generous (32x), so only super-linear work fails it."""
    for piece in ["e\u0301" * 3 + "x", "ภาษาไทย", "مَرْحَبًا", "a-", "1.", "x@", "ＡＢＣ－",
                  "👨‍👩‍👧", "\u200b", "\x1b[", "https://x.io/", "1 ", "a_", "ab12", "/a"]:
        def read(n: int, piece: str = piece) -> float:
            text = piece * n
            start = time.perf_counter()
            extract_facts(text)
            terms(text)
            return time.perf_counter() - start

        small = min(read(400) for _ in range(3))
        large = min(read(3200) for _ in range(2))
        assert large < 32 * small + 0.05, (piece, small, large)
