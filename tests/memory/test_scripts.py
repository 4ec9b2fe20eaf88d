"""Recall terms and exact facts over every script, fuzzed: Latin with diacritics, Cyrillic,
Greek, Arabic with and without harakat, Hebrew, Devanagari, Thai, Lao, Khmer, Myanmar, CJK,
kana, Hangul, emoji sequences, full-width forms, bidi marks, zero-width and control
characters, lone surrogates, and the NFC and NFD forms of each.

What holds on any text:

* nothing raises, and a long run of anything is read in linear time;
* a word of a page (a run of letters, digits and their marks; for CJK, Thai, Lao, Khmer
  and Myanmar, which have no spaces, the whole run, also matched by its character
  bigrams) is found by a search for it alone, in any case and either normal form, and
  typed without the accents of its Latin and Greek letters, the points of Hebrew or the
  harakat of Arabic;
* an emoji of a page (a grapheme cluster with a pictograph in it, or a flag) is found by
  a search for it alone, with or without its variation selector;
* each fact is the text as written at its span, on one line, of a known kind, within the
  limits; extraction is deterministic and keeps the order facts are written in.
"""

from __future__ import annotations

import time
import unicodedata

import pytest
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
from opticmem.recall import WORD, Doc, RecallIndex, fold, term_groups, terms
from opticmem.render import Tier

PIECES = [
    "café", "Zürich", "naïve", "Straße", "İstanbul", "Tiếng Việt", "Привет", "мир", "Ελληνικά",
    "λόγος", "ΟΔΟΣ", "مرحبا", "مَرْحَبًا", "١٢٣٫٥", "שלום", "עוֹלָם", "नमस्ते", "दुनिया", "ภาษาไทย",
    "ສະບາຍດີ", "ភាសាខ្មែរ", "မြန်မာ", "中文字", "東京", "ひらがな", "カタカナ", "한국어", "서울",
    "👍🏽", "👨‍👩‍👧", "🇰🇷", "❤️", "🎉", "🏳️‍🌈", "🇺", "#️⃣", "e\u0301", "\u05b8", "\u064e", "ـ", "ñ",
    "Ł", "ＡＢＣ－１２３", "３月", "\u200f", "\u200e", "\u200b",
    "\u200d", "\u00ad", "\ufeff", "\u202b", "\x00", "\x1b[31m", "\ud800", "\udfff", "ABC-123",
    "2026-03-04", "$4,200", "mina@x.io", "https://x.io/a", "v1.2.3", "12.5%", "ﬁ", "Ǆ",
    "order42https://x.io", "x42www.x.io", "voirwww.x.io", "Https://X.io/b", "sftp://h/p",
    "«", "»", "“", "”", "،", "…", "।", ".config/a", ".env", "~/.ssh/id_rsa",
    "ל-", "ה-config.yaml", "ב-3/4/2026", "C++", "C#", "أحمد", "مدرسة", "على", "צה\"ל", "צה״ל",
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
@example("0\U0001f12b").via("a symbol NFKC makes a letter is a word of its own")
@example("Windows™").via("a trademark sign is no part of the word before it")
def test_a_word_of_a_page_is_found_in_any_case_and_normal_form(text: str) -> None:
    for m in WORD.finditer(text):
        for typed in _forms(m.group()):
            assert 0 in pages_found(text, typed), (text, typed)


def _unaccented(word: str) -> str:
    """``word`` as a user may type it without accents: its NFD form without the marks
    (Mn) on Latin and Greek letters, Hebrew points and accents, and Arabic harakat."""
    out: list[str] = []
    base = ""
    for c in unicodedata.normalize("NFD", word):
        if unicodedata.category(c) != "Mn":
            base = c
            out.append(c)
        elif not ((unicodedata.category(base).startswith("L") and unicodedata.name(
                base, "").startswith(("LATIN", "GREEK"))) or "\u0591" <= c <= "\u05c7"
                or "\u064b" <= c <= "\u0652"):
            out.append(c)
    return "".join(out)


@FAST
@given(texts)
@example("café Müller señor").via("accents on Latin letters")
@example("λόγος Ελληνικά").via("Greek tonos")
@example("שָׁלוֹם עוֹלָם מַיִם").via("Hebrew points")
@example("مَرْحَبًا بِكُمْ").via("Arabic harakat")
@example("q\u0303\u0323 Tiê\u0301ng").via("marks no precomposed letter holds")
@example("ñ\u093c").via("a mark of another script on a Latin letter")
@example("\u0640\u064b").via("a tatweel alone, with harakat: the tatweel is kept")
@example("\u00ccـ").via("a tatweel on no Arabic letter is kept (Iـ is no stopword i)")
@example("\u01c4\ufb00S\u0300").via("a final s with an accent: the fold's plural s is stripped")
def test_a_word_of_a_page_is_found_typed_without_its_accents(text: str) -> None:
    for m in WORD.finditer(text):
        for typed in {_unaccented(m.group()), _unaccented(m.group().upper())}:
            assert 0 in pages_found(text, typed), (text, typed)


def test_a_word_is_folded_only_where_its_accents_are_no_letters_of_it() -> None:
    """Hangul (whose syllables decompose into jamo), kana, CJK, and the vowel signs,
    viramas and nuktas of Devanagari, Thai, Khmer… are letters of the word: folding
    leaves them, so ``नमस्ते`` is no ``नमसत`` and ``ข้าว`` no ``ขาว``."""
    for word in ("서울", "한국어", "가", "ひらがな", "ガ", "中文字", "नमस्ते", "क़", "ข้าว", "ที่นี่",
                 "ភាសាខ្មែរ", "မြန်မာ", "ສະບາຍດີ", "й", "ї", "ў", "ѓ"):
        assert fold(word) == word
        for form in (word, unicodedata.normalize("NFD", word)):  # Hangul NFD: jamo
            assert all(len(group) == 1 for group in term_groups(form)), form
    assert "ขาว" not in terms("ข้าว") and 0 not in pages_found("नमस्ते", "नमसत")
    assert 0 not in pages_found("мой дом", "мои")  # й is a letter of its own: no и


def _emoji_clusters(text: str) -> list[str]:
    """The grapheme clusters of ``text`` that are emoji, by Unicode's own rules (the
    ``regex`` module's ``\\X`` and ``Extended_Pictographic``): the oracle of the test below."""
    regex = pytest.importorskip("regex")
    pict = regex.compile(r"\p{Extended_Pictographic}")
    return [c for c in regex.findall(r"\X", text)
            if pict.search(c) or regex.fullmatch(r"[\U0001F1E6-\U0001F1FF]{2}", c)]


@FAST
@given(texts)
@example("party 🎉 time").via("a lone emoji")
@example("👨\u200d👩\u200d👧🇰🇷🇺🇸").via("a ZWJ sequence and flags side by side")
@example("😀\u0301\u200d👍🏽").via("a mark inside a ZWJ sequence")
@example("🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f").via("a tag sequence")
def test_an_emoji_of_a_page_is_found(text: str) -> None:
    for cluster in _emoji_clusters(text):
        shown = unicodedata.normalize("NFKC", cluster)
        if not _emoji_clusters(shown):  # NFKC made it a letter or sign (™, ㊗)
            continue
        for typed in {cluster, cluster.replace("\ufe0f", ""), cluster + "\ufe0f"}:
            assert 0 in pages_found(text, typed), (text, typed)


@FAST
@given(texts)
@example("\ud800$0-.xml").via("no file starts at the sign after a word")
@example("$0-/a/b").via("no path starts at the sign after a word")
@example("0\u066b\u0660\u0591@0.0").via("no fact starts at a mark, inside a word")
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
                  "👨‍👩‍👧", "🇰", "👍🏽", "❤️", "\u200b", "\x1b[", "é", "מַ", "مَـ", "https://x.io/",
                  "1 ", "a_", "ab12", "/a", "x42https://", "a+b://", "c++", "a#", "ב\"", "א״ב",
                  "x42www.", "awww.", " .a", "-.a/", ".env."]:
        def read(n: int, piece: str = piece) -> float:
            text = piece * n
            start = time.perf_counter()
            extract_facts(text)
            terms(text)
            return time.perf_counter() - start

        small = min(read(400) for _ in range(3))
        large = min(read(3200) for _ in range(2))
        assert large < 32 * small + 0.05, (piece, small, large)
