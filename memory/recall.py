"""Recall: a lexical (BM25) index over what the memory remembers of its pages.

Each sealed page contributes

* its **recollection** — the text the codec read back from the page at the tier the
  page is at (or, for a page whose current tier has not been read yet, the last tier it
  was read at), cut into overlapping passages of a few lines; and
* its **exact-facts sidecar** — one passage, confidence 1.0, shown as the page's facts
  line and also found by each fact's *cue* (the words around it where it was said) and
  kind ("e-mail address", "date"…; see :func:`opticmem.facts.fact_keywords`): a question
  about what a fact was about finds it even when the page's recollection is too blurry to.

Page transcripts are never indexed: they are what was drawn, not what is remembered.
Every :class:`Passage` carries its provenance (session, page, turn seqs, time span, the
tier it was read at, the codec's confidence) and a way back to the archived original
turns (``include_original=True`` or :meth:`opticmem.OpticalMemory.original`).

Tokenisation is Unicode-aware: words are case-folded (a plural ``s`` is stripped), CJK,
Hangul, Thai, Lao, Khmer and Myanmar runs also yield character bigrams so unsegmented text
matches, and a Latin word
or number glued to them (``Titan은``, ``2026年``) is a term of its own as well. A word
written with accents is also indexed without them (``café`` as ``cafe``, :func:`fold`), and
emoji are terms (:data:`EMOJI`).

>>> idx = RecallIndex()
>>> idx.set_page(0, [Doc(0, "recollection", "we moved Titan to March", 0.9, None)])
>>> [(d.text, round(s, 3)) for d, s in idx.search("when is titan?", 1)]
[('we moved Titan to March', 0.288)]
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from opticmem.forks import renew_in_forked_child
from opticmem.records import Turn
from opticmem.render import Tier


def _mark_class() -> str:
    """A character class of the combining marks (categories Mn, Mc, Me) of this Python's
    Unicode: all lie between U+0300 and U+1FFFF, but for the variation selectors
    U+E0100–U+E01EF."""
    ranges: list[list[int]] = []
    for cp in (*range(0x300, 0x20000), *range(0xE0100, 0xE01F0)):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in ranges) + "]"


MARK = _mark_class()
"""A combining mark: no word character to :mod:`re` (``\\w`` is letters and digits), though
the words of Devanagari (``हिन्दी``), Thai (``ที่นี่``) or vocalised Arabic hold them."""
# Letters, then marks and letters alternating, then trailing marks: each run is of one
# class, so a text splits into them one way only. ``(?:{MARK}+[^\W_]*)*`` could split a
# run of marks any number of ways, and a compound that failed on "a" + 40 marks tried
# them all (exponential: the suite's fuzzed recall hung).
_PART = rf"[^\W_]+(?:{MARK}+[^\W_]+)*{MARK}*"
WORD = re.compile(_PART)
"""A word as recall sees one: a run of letters and digits, and the combining marks on them
(without them ``नमस्ते दुनिया`` was the terms ``नमस त द न य``: single letters, which match
any page that has them)."""
COMPOUND = re.compile(rf"(?<![^\W_]|{MARK}){_PART}(?:[-./:@#_]{_PART})+")
"""Words joined by ``-./:@#_`` (ids, dates, versions, ``e-mail``): indexed whole as well.
A match can only start where a run of letters and digits does (the look-behind): the
matches are the same, but a long run with no joiner in it is tried once, not once per
character, which took quadratic time (a 100,000-character query, over a minute)."""
CJK = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
                  r"\uac00-\ud7a3\uf900-\ufaff]")
"""A CJK, kana or Hangul character: runs of these also yield character bigrams (text
without spaces, particles glued to words)."""
UNSEGMENTED = re.compile(rf"[{CJK.pattern[1:-1]}\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff"
                         r"\u19e0-\u19ff\ua9e0-\ua9ff\uaa60-\uaa7f]")
"""A character of a script written without spaces between words: :data:`CJK`, and Thai,
Lao, Myanmar and Khmer (``ผมชอบกินข้าวผัด`` is one run for "I like to eat fried rice"). A
run with one in it is indexed as :data:`CJK` runs are, by its character bigrams too, or a
search for a word in it (``ข้าวผัด``) never found the page."""
NOT_UNSEGMENTED = re.compile(rf"[^{UNSEGMENTED.pattern[1:-1]}]+")
"""A run of letters or digits not in :data:`UNSEGMENTED`: the Latin word or number inside a
run of letters glued to CJK or Thai text (``Titan은``, ``2026年``, ``API를``, ``iPhoneรุ่น``)."""
SIGNED = re.compile(rf"(?<![^\W_]|{MARK})([^\W\d_{UNSEGMENTED.pattern[1:-1]}]+)"
                    r"(?:\+\+(?!\+)|#(?![^\W_]|#))")
"""A word of letters with ``++`` or ``#`` after it, a name of its own: ``C++``, ``C#``,
``F#``, ``g++``, ``Notepad++`` (also before a version: ``C++17``). A term as written, sign
and all; without it ``C++`` was the term ``c``, which every page that says "c" has. The
page keeps the bare word as a term too (``Notepad`` finds ``Notepad++``), but a search for
``C++`` looks for ``c++`` alone (group 1 is the word it replaces there). A match starts only
where a word does (the look-behind), so a long run of letters is tried once: linear."""
_HEBREW = r"[\u05d0-\u05ea][\u05d0-\u05ea\u0591-\u05bd\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7]*"
ACRONYM = re.compile(rf"(?<![^\W_]|{MARK}){_HEBREW}(?:[\"\u05f4]{_HEBREW})+")
"""A Hebrew acronym: Hebrew letters (and their points) with a gershayim (``״``, U+05F4, or
the ``"`` typed for it) between them, ``צה״ל``, ``דו"ח``, ``ארה"ב``. Indexed also as one
word without the sign (``צהל``), as Hebrew writers often type it; the sign cut it into the
terms ``צה`` and ``ל``, which ``צהל`` never found. A search for the acronym looks for the
joined word alone, not for its pieces (``ל`` is a word of many pages). A match starts only
where a word does (the look-behind), so a long run of letters is tried once: linear."""
_STOP = """a an and are as at be but by did do does for from had has have he her his how i if
in is it its me my of on or our she so that the their them then there these they this to us
was we were what when where which who why will with you your"""
STOPWORDS = frozenset(_STOP.split())

PASSAGE_LINES = 6
"""Lines per recollection passage (consecutive passages overlap by two lines)."""


_PRESENTATION = dict.fromkeys([*range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0),
                               0x180B, 0x180C, 0x180D, 0x180F])
"""Variation selectors: they pick how a character is drawn (``❤️`` as an emoji, ``❤`` as
text; a CJK character's variant glyph), never which character it is, and a user types
them or not at random. Terms are made without them."""


_PICTOGRAPH_BMP = ("\u00a9\u00ae\u203c\u2049\u2122\u2139\u2194-\u2199\u21a9\u21aa\u231a"
                   "\u231b\u2328\u23cf\u23e9-\u23f3\u23f8-\u23fa\u24c2\u25aa\u25ab\u25b6"
                   "\u25c0\u25fb-\u25fe\u2600-\u27bf\u2934\u2935\u2b05-\u2b07\u2b1b\u2b1c"
                   "\u2b50\u2b55\u3030\u303d\u3297\u3299")
_PICTOGRAPH = (f"[{_PICTOGRAPH_BMP}\\U0001f000-\\U0001f1e5\\U0001f200-\\U0001f3fa"
               "\\U0001f400-\\U0001faff\\U0001fc00-\\U0001fffd]")
"""A character class of the emoji (Unicode's ``Extended_Pictographic``): in the BMP,
those listed; above it, all of U+1F000–U+1FAFF and the code points kept for emoji to come
(U+1FC00–U+1FFFD), but the regional indicators (a flag is a pair of them) and the skin
tones (modifiers of the emoji before them)."""
_SKIN_TONE = "[\\U0001f3fb-\\U0001f3ff]"
_EMOJI_ELEMENT = f"{_PICTOGRAPH}(?:{_SKIN_TONE}|[\\U000e0020-\\U000e007e]+\\U000e007f)?"
EMOJI = re.compile(f"[\\U0001f1e6-\\U0001f1ff]{{2}}|{_EMOJI_ELEMENT}(?:\\u200d{_EMOJI_ELEMENT})*"
                   "|[#*]\\u20e3")
"""An emoji as a term: a flag (two regional indicators), a pictograph with its skin tone
or tags (``👍🏽``, the flag of Scotland), or a sequence of them joined by zero-width joiners
(``👨‍👩‍👧``), or a ``#`` or ``*`` keycap (a digit's is a word: a digit and its marks). Each
match is one pass over its characters, so a long run of emoji is read in linear time."""


def _fold_table() -> dict[int, str | None]:
    """What :func:`fold` maps, character by character (see there)."""
    latin_greek = (range(0xC0, 0x250), range(0x370, 0x400), range(0x1E00, 0x2000))
    table: dict[int, str | None] = {}
    for cp in (c for r in (*latin_greek, range(0x400, 0x530)) for c in r):
        ch = unicodedata.normalize("NFD", chr(cp))
        base, marks = ch[0], ch[1:]
        if not marks or not all(unicodedata.category(m) == "Mn" for m in marks):
            continue
        if 0x400 <= cp < 0x530:  # Cyrillic: a stress mark, and the dots of "ё"
            marks = "".join(m for m in marks if not (
                (m in "\u0300\u0301" and base not in "гкГК") or (m == "\u0308" and base in "еЕ")))
        else:
            marks = ""
        table[cp] = unicodedata.normalize("NFC", base + marks)
    table.update({ord(a): b for a, b in zip("łđðøħıŧ", "lddohit", strict=True)})
    table.update({ord("æ"): "ae", ord("œ"): "oe"})
    # Arabic spelling variants, as Arabic search folds them: an alef with a hamza or madda
    # (أ إ آ) or a wasla (ٱ) as the bare alef, a taa marbuta as the haa (ة ه) and an alef
    # maqsura as the yaa (ى ي) that writers use for them interchangeably
    table.update({ord(a): b for a, b in zip("أإآٱةى", "ااااهي", strict=True)})
    points = (*range(0x591, 0x5C8), *range(0x610, 0x61B), *range(0x64B, 0x653),
              *range(0x656, 0x660), 0x670, *range(0x6D6, 0x6EE), *range(0x8D3, 0x900))
    table.update((cp, None) for cp in points if unicodedata.category(chr(cp)) == "Mn")
    table.update((cp, None) for cp in range(0x1F3FB, 0x1F400))
    table.update((cp, str(unicodedata.decimal(chr(cp)))) for cp in range(0x80, 0x20000)
                 if chr(cp).isdecimal())  # the category Nd
    return table


_FOLD = _fold_table()

_LATIN_GREEK = (r"A-Za-z\u00c0-\u024f\u0250-\u02af\u0370-\u03ff\u1d00-\u1dbf\u1e00-\u1fff"
                r"\u2c60-\u2c7f\ua720-\ua7ff\uab30-\uab6f\U0001df00-\U0001dfff")
_CYRILLIC = r"\u0400-\u052f\u1c80-\u1c8f\ua640-\ua69f"
_LEFT_MARKS = re.compile(rf"(?<=[{_LATIN_GREEK}]){MARK}+"
                         rf"|(?<=[{_CYRILLIC}])[\u0300\u0301\u0483-\u0487]+")
"""Marks left on a Latin, Greek or Cyrillic letter that no precomposed letter holds
(``q̃``, or a decomposed letter's marks in an order NFC does not compose): the ones
:func:`fold` strips from such a letter."""
_FOLDABLE = re.compile("[\u0640" + "".join(map(re.escape, map(chr, sorted(_FOLD)))) + "]|"
                       + _LEFT_MARKS.pattern)
"""What :func:`fold` changes: where a text has none, its terms fold to themselves, and
none is tried."""


_ARABIC_LETTER = re.compile(r"[\u0620-\u063f\u0641-\u064a\u066e-\u06d3\u06fa-\u06ff]")
"""A letter of the Arabic script: a tatweel (U+0640) stretches one, and folds away only
beside one (alone it is no word to match, and ``Iـ`` would fold to the stopword ``i``)."""


def fold(term: str) -> str:
    """``term`` as a user may type it without accents: the combining marks on Latin and
    Greek letters stripped (``café`` ``cafe``, ``Tiếng Việt`` ``tieng viet``, ``λόγος``
    ``λογος``), and on Cyrillic ones a stress mark and the dots of ``ё``, which Russian
    leaves out (not the breve of ``й``, a letter of its own); ``ł``, ``đ``, ``ø``, ``ı``
    and their kind as their plain letter, ``æ`` and ``œ`` as two; the vowel points of
    Hebrew and the harakat and tatweel of Arabic dropped (``שָׁלוֹם`` ``שלום``, ``مَرْحَبًا``
    ``مرحبا``), and Arabic's spelling variants made one letter, as Arabic search does: the
    alef with a hamza, madda or wasla the bare alef (``أحمد`` ``احمد``), the taa marbuta the
    haa (``مدرسة`` ``مدرسه``), the alef maqsura the yaa (``على`` ``علي``); the digits
    of every script as ASCII ones (``١٢٣`` ``123``); an emoji without
    its skin tone. Hangul, kana and CJK are left as they are (Hangul syllables decompose
    into jamo, which are letters), and so are the vowel signs, viramas and nuktas of
    Devanagari, Thai and their kind: they are letters of the word, not accents on it.

    >>> fold("señor"), fold("Müller"), fold("ёлка"), fold("й"), fold("서울"), fold("नमस्ते")
    ('senor', 'Muller', 'елка', 'й', '서울', 'नमस्ते')
    """
    if term.isascii():
        return term
    out = term.translate(_FOLD)
    if "\u0640" in out and _ARABIC_LETTER.search(out):  # a tatweel stretching a word
        out = out.replace("\u0640", "")
    return _LEFT_MARKS.sub("", out)


_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})


def umlauts_spelt_out(term: str) -> str:
    """``term`` with German umlauts written out, as German does without them (``Müller``
    ``Mueller``, ``Köln`` ``Koeln``, ``Bär`` ``Baer``), then folded (:func:`fold`); ``ß`` needs
    none (case folding makes it ``ss``). A word is indexed in this form too, so ``Mueller``
    finds ``Müller``, where only ``Muller``, its :func:`fold`, did. Lower case only: terms
    are case-folded before.

    >>> umlauts_spelt_out("müller"), umlauts_spelt_out("göteborg"), umlauts_spelt_out("café")
    ('mueller', 'goeteborg', 'cafe')
    """
    return fold(term.translate(_UMLAUTS)) if not term.isascii() else term


def _symbol_words() -> dict[int, str]:
    """:data:`_SYMBOL_WORDS`, made from this Python's Unicode."""
    out = {}
    for cp in (*range(0x2100, 0x2150), *range(0x2460, 0x2500), *range(0x1F100, 0x1F200)):
        shown = unicodedata.normalize("NFKC", chr(cp))
        if (unicodedata.category(chr(cp)) == "So" and shown.isascii()
                and any(c.isalnum() for c in shown)):
            out[cp] = f" {shown} "
    return out


_SYMBOL_WORDS = _symbol_words()
"""Symbols that NFKC makes letters, each as a word of its own: ``™``, ``℠``, ``℡``, ``№``
and the circled, parenthesised and squared letters (``Ⓐ``, ``🄫``). Made letters where they
stand, they glued onto the word before them: ``Windows™`` was the term ``windowstm``, which
a search for "Windows" never found."""

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))
"""Characters that show nothing — a soft hyphen, zero-width space, (non-)joiner, word
joiner, BOM: text is also indexed without them, as search engines drop them. Only split
at, they cut ``Donau\u00addampf`` into two terms a search for ``Donaudampf`` never found,
and Persian typed with and without its zero-width non-joiner did not match."""


def _char_class(code_points: Iterable[int]) -> re.Pattern[str]:
    """A regex of one character of ``code_points``, written as runs (``[a-z]``, not 26
    characters): a class of hundreds listed one by one is searched slower than a text is
    translated."""
    runs: list[list[int]] = []
    for cp in sorted(code_points):
        if runs and cp == runs[-1][1] + 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp])
    return re.compile("[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "")
                                     for a, b in runs) + "]")


_HAS_PRESENTATION = _char_class(_PRESENTATION)
_HAS_INVISIBLE = _char_class(_INVISIBLE)
"""Whether a text holds a character of :data:`_PRESENTATION` / :data:`_INVISIBLE`: a search
for one costs less than translating the text, which almost never changes it."""


def terms(text: str, *, drop_stopwords: bool = False, query: bool = False) -> list[str]:
    """Index terms of ``text``, from its NFKC form: decomposed accents and Hangul jamo (as
    macOS and some keyboards produce them) match their precomposed forms, and full-width
    letters, digits and signs (``ＯＲＤ－４４７１``, ``３月``, as Japanese and Chinese input
    methods type them) match their ASCII forms. Case is folded, not lowercased: ``STRASSE``
    matches ``straße``, ``ΟΔΟΣ`` ``οδος`` and ``ISTANBUL`` ``İstanbul``. A term with
    accents is followed by its :func:`fold`, so ``cafe`` finds ``café`` and ``café``
    ``cafe``.

    >>> terms("Ticket ORI-140's milestones: 서울 파트너")
    ['ori-140', 'ticket', 'ori', '140', 's', 'milestone', '서울', '서울', '파트너', '파트', '트너']
    >>> terms("Señor Müller 🎉")
    ['señor', 'senor', 'müller', 'muller', 'mueller', '🎉']
    """
    return [t for group in term_groups(text, drop_stopwords=drop_stopwords, query=query)
            for t in group]


def term_groups(text: str, *, drop_stopwords: bool = False,
                query: bool = False) -> list[tuple[str, ...]]:
    """:func:`terms` of ``text``, each as a group: the term as written, then its
    :func:`fold` where that differs. A search scores a passage by the better of a group's
    terms, not both: a word typed with its accents finds a page that has them above one
    that has not, and counts once, as a word typed without them does.

    >>> term_groups("the café", drop_stopwords=True)
    [('café', 'cafe')]

    The terms of a search (``query``) are those of a page but where a page has more than one
    for a word: ``C++`` is ``c++`` and ``c`` on a page (a search for "C" finds it), but a
    search for ``C++`` is for ``c++`` alone, not for every page with a "c" on it
    (:data:`SIGNED`).

    >>> term_groups("C++ or C#"), term_groups("C++ or C#", drop_stopwords=True, query=True)
    ([('c++',), ('c#',), ('c',), ('or',), ('c',)], [('c++',), ('c#',)])
    """
    # lower() kept "ß" and a final "ς" apart from the "ss" and "σ" of their capitals, and
    # made "İ" an "i" with a combining dot above that no "i" typed on a keyboard has.
    # Normalised again after folding, which can leave marks out of their canonical order
    # ("İ" and a mark of a lower class after it: the dot is then not beside the "i").
    # ASCII text (most of it) holds nothing any of the translations, folds or gates below
    # change, and they are a third of the time indexing a page takes: skipped for it.
    plain = text.isascii()
    if not plain:
        text = text.translate(_SYMBOL_WORDS)
    low = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    low = low.replace("i\u0307", "i")
    if not plain and _HAS_PRESENTATION.search(low):  # a selector kept marks apart
        low = unicodedata.normalize("NFC", low.translate(_PRESENTATION))
    # else no term folds: none is tried
    folding = not plain and _FOLDABLE.search(low) is not None
    out = _terms_of(low, drop_stopwords, folding, query)
    if not plain and _HAS_INVISIBLE.search(low):
        joined = low.translate(_INVISIBLE)
        # each piece between invisible characters is a term (a zero-width space marks a
        # word boundary), and so is the word they are inside (a soft hyphen does not)
        split = {forms[0] for forms in out}
        out += [forms for forms in _terms_of(joined, drop_stopwords, folding, query)
                if forms[0] not in split]
    if not folding:  # every term is its own fold
        return [(t,) for t, *_ in out]
    return [(t, *dict.fromkeys(f for f in rest if f and f != t and not (
        drop_stopwords and f in STOPWORDS)))  # a query's "thé" is no "the"
            for t, *rest in out]


def _terms_of(low: str, drop_stopwords: bool, folding: bool,
              query: bool = False) -> list[tuple[str, str, str]]:
    """:func:`terms` of ``low``, folded and normalised, each with its :func:`fold` and its
    :func:`umlauts_spelt_out` (both itself unless ``folding``); for a search (``query``),
    without the bare words of :data:`SIGNED` terms. A word's fold is that of the word as
    written, then its plural ``s`` stripped: ``gdzieś`` ends in no ``s``, but ``gdzies``,
    typed without the accent, does (and is ``gdzie``)."""
    out: list[tuple[str, str, str]] = []

    def folds(t: str) -> tuple[str, str]:
        """:func:`fold` and :func:`umlauts_spelt_out` of ``t``, folding once where it has
        no umlaut (then both are the same)."""
        if t.isascii():  # most words of any Latin text: nothing to fold
            return t, t
        folded = fold(t)
        spelt = t.translate(_UMLAUTS)
        return folded, folded if spelt == t else fold(spelt)

    def whole(t: str) -> None:
        out.append((t, *folds(t)) if folding else (t, t, t))

    def word(w: str) -> None:
        if t := _word(w, drop_stopwords):
            if not folding:
                out.append((t, t, t))
            else:
                folded, spelt = folds(w)
                out.append((t, _word(folded, drop_stopwords), _word(spelt, drop_stopwords)))

    for m in COMPOUND.finditer(low):
        whole(m.group())
        if UNSEGMENTED.search(m.group()):  # ``zx-88123을``: also the compound without its particle
            for c in COMPOUND.finditer(UNSEGMENTED.sub(" ", m.group())):
                whole(c.group())
    # where a word a search leaves out starts: where it ends (the words of a SIGNED term,
    # the pieces of an ACRONYM)
    replaced: dict[int, int] = {}
    if "+" in low or "#" in low:
        for m in SIGNED.finditer(low):
            whole(m.group())
            replaced[m.start(1)] = m.end(1)
    if '"' in low or "\u05f4" in low:
        for m in ACRONYM.finditer(low):
            whole(m.group().replace('"', "").replace("\u05f4", ""))
            replaced.update((p.start(), p.end()) for p in WORD.finditer(low, m.start(), m.end()))
    for m in WORD.finditer(low):
        w = m.group()
        if query and replaced.get(m.start()) == m.end():
            continue  # "C++" is searched for as "c++", not as "c" too; "צה״ל" as "צהל"
        if UNSEGMENTED.search(w):  # unsegmented scripts: the run and its character bigrams
            whole(w)
            for i in range(len(w) - 1):
                whole(w[i : i + 2])
            # Korean glues particles onto Latin words and numbers (``Titan은``, ``API를``),
            # Chinese and Japanese put no space around them (``2026年``): those words are
            # terms too, or "Titan" would never find a page that says "Titan은".
            for part in NOT_UNSEGMENTED.findall(w):
                if part != w:
                    word(part)
            continue
        word(w)
    if not low.isascii():
        for m in EMOJI.finditer(low):
            whole(m.group())
    return out


def _word(w: str, drop_stopwords: bool) -> str:
    """The term of a word with no :data:`UNSEGMENTED` character in it: ``""`` for a
    dropped stopword, a plural ``s`` stripped."""
    if drop_stopwords and w in STOPWORDS:
        return ""
    if len(w) > 4 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


@dataclass(frozen=True, slots=True)
class Doc:
    """One indexed passage of a page.

    ``text`` is what a search returns and shows; ``keywords`` are further words the
    passage is found by but does not show (for a facts passage: the words around each
    fact, so a question about what a fact was *about* finds it).
    """

    page_no: int
    source: Literal["recollection", "facts"]
    text: str
    confidence: float
    tier: Tier | None
    codec: str = ""
    keywords: str = ""

    @property
    def index_text(self) -> str:
        """The text the index matches queries against: ``text`` and ``keywords``."""
        return f"{self.text}\n{self.keywords}" if self.keywords else self.text


def split_passages(text: str, lines: int = PASSAGE_LINES) -> list[str]:
    """Overlapping windows of ``lines`` lines (step ``lines - 2``); blank windows dropped."""
    rows = text.split("\n")
    step = max(1, lines - 2)
    out = []
    for lo in range(0, max(len(rows) - 2, 1), step):
        chunk = "\n".join(rows[lo : lo + lines]).strip()
        if chunk:
            out.append(chunk)
    return out


class RecallIndex:
    """An in-process BM25 index (k1 = 1.2, b = 0.75) whose documents can be replaced
    page by page as pages are read at new tiers.

    A passage's length is normalised against the average length of passages *of its own
    source*: a facts passage (up to 32 values and their cues) is routinely several times
    as long as a few lines of recollection, and would otherwise lose to them for its
    shape rather than its match.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.lock = threading.Lock()
        """Not taken by the index itself: whoever shares an index between threads holds
        it around each update and search (its dicts must not change while a search or
        another update walks them)."""
        self.clear()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        """A fresh lock in a forked child, where one a thread of the parent held at the
        fork would stay held for good. That thread may have left the index half updated:
        such an index is cleared, and the next recall reads every page again."""
        if self.lock.locked():
            self.clear()
        self.lock = threading.Lock()

    def clear(self) -> None:
        """Forget every page (the index is as new; ``k1``, ``b`` and the lock stay)."""
        self._docs: dict[int, tuple[Doc, Counter[str], int]] = {}
        self._by_page: dict[int, list[int]] = {}
        self._postings: dict[str, dict[int, int]] = {}
        self._source_len: Counter[str] = Counter()  # total passage length per source
        self._source_docs: Counter[str] = Counter()  # passages per source
        self._next = 0
        self.signature: dict[int, tuple[str, ...]] = {}
        """What each page was indexed from (tier/codec of its recollection), per page."""
        self.pages_seen = 0
        """Pages ``0..pages_seen-1`` have been looked at."""
        self.provenance: dict[int, tuple[int, int, float, float]] = {}
        """``(first_seq, last_seq, first_ts, last_ts)`` of each indexed page."""

    def __len__(self) -> int:
        return len(self._docs)

    def set_page(self, page_no: int, docs: Sequence[Doc]) -> None:
        """Replace every passage of ``page_no`` with ``docs``."""
        for doc_id in self._by_page.pop(page_no, []):
            d, tf, n = self._docs.pop(doc_id)
            self._source_len[d.source] -= n
            self._source_docs[d.source] -= 1
            for t in tf:
                post = self._postings[t]
                del post[doc_id]
                if not post:
                    del self._postings[t]
        ids = []
        for d in docs:
            tf = Counter(terms(d.index_text))
            if not tf:
                continue
            doc_id = self._next
            self._next += 1
            n = sum(tf.values())
            self._docs[doc_id] = (d, tf, n)
            self._source_len[d.source] += n
            self._source_docs[d.source] += 1
            for t, c in tf.items():
                self._postings.setdefault(t, {})[doc_id] = c
            ids.append(doc_id)
        self._by_page[page_no] = ids

    def search(self, query: str, k: int = 5) -> list[tuple[Doc, float]]:
        """The ``k`` best passages for ``query`` with their BM25 scores (best first; ties
        go to the newer page); none for a ``k`` below 1."""
        q = (term_groups(query, drop_stopwords=True, query=True)
             or term_groups(query, query=True))
        n_docs = len(self._docs)
        if not q or not n_docs or k < 1:  # best[:-1] was every passage but the last
            return []
        avg = {src: self._source_len[src] / c for src, c in self._source_docs.items() if c}
        scores: dict[int, float] = {}
        for group in dict.fromkeys(q):
            # a term and its fold: a passage scores by the better of the two (the one as
            # typed, rarer, where it has it), so a word counts once however it is written
            better: dict[int, float] = {}
            for t in group:
                post = self._postings.get(t)
                if not post:
                    continue
                idf = math.log(1 + (n_docs - len(post) + 0.5) / (len(post) + 0.5))
                for doc_id, tf in post.items():
                    d, _, n = self._docs[doc_id]
                    rel = n / avg[d.source]
                    norm = tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * rel))
                    if idf * norm > better.get(doc_id, 0.0):
                        better[doc_id] = idf * norm
            for doc_id, score in better.items():
                scores[doc_id] = scores.get(doc_id, 0.0) + score
        best = sorted(scores.items(), key=lambda kv: (-kv[1], -self._docs[kv[0]][0].page_no,
                                                      kv[0]))
        return [(self._docs[i][0], s) for i, s in best[:k]]


@dataclass(frozen=True, slots=True)
class Passage:
    """A recalled passage and where it came from."""

    session: str
    page_no: int
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float
    text: str
    """The matching passage: recollected text, or the page's exact-facts line."""
    source: Literal["recollection", "facts"]
    tier: Tier | None
    """The tier the page was read at (``None`` for a facts passage)."""
    confidence: float
    """The codec's confidence in its reading (1.0 for exact facts)."""
    score: float
    codec: str = ""
    original: tuple[Turn, ...] = field(default=(), compare=False)
    """The archived turns of the page, when asked for (``include_original=True``)."""

    @property
    def seqs(self) -> range:
        """The turn seqs this passage's page holds (the way back to the archive)."""
        return range(self.first_seq, self.last_seq + 1)

    def as_dict(self) -> dict[str, object]:
        return {
            "session": self.session, "page_no": self.page_no, "first_seq": self.first_seq,
            "last_seq": self.last_seq, "first_ts": self.first_ts, "last_ts": self.last_ts,
            "text": self.text, "source": self.source,
            "tier": self.tier.value if self.tier else None, "confidence": self.confidence,
            "score": round(self.score, 4), "codec": self.codec,
            "original": [{"seq": t.seq, "role": t.role, "text": t.text, "ts": t.ts}
                         for t in self.original],
        }
