"""How well a codec read a page: character precision, Fox-style word precision, exact ids.

* **Character precision** = 1 − edit distance / max(len(reference), len(hypothesis)):
  what fraction of the page came back right, penalising both missing and invented text
  (Fox's normalised edit distance, subtracted from 1; always in [0, 1]). Characters are
  Python code points, unnormalised: a combining mark or an emoji modifier is one, CRLF two.
* **Fox word precision** is DeepSeek-OCR's headline metric (Fox benchmark's tool): the
  share of the hypothesis' distinct whitespace words that occur in the reference. It
  ignores order and repeats, so it is lenient; we report it only to compare with the paper.
  As in Fox's scoring script (nltk's ``precision`` over the two word sets, text split on
  whitespace, case and punctuation kept), with two departures: where nltk's precision is
  undefined (no hypothesis words), an empty reading scores 0.0 — or 1.0 when the reference
  has no words either; and text is always split on whitespace (Fox segments Chinese with
  jieba; our Hangul pages are split on their spaces).
* **Misreads** list where the two differ, with a little context, so a person can see
  *how* reading failed (a dropped tail, a confused glyph, an invented run).
* **Exact-token rate**: of the reference's numbers and ids (whitespace tokens holding a
  digit, outer punctuation stripped), the share that appear verbatim in the hypothesis —
  where optical reading fails silently.
* **Read by kind**: of the reference's letters, digits, Hangul, punctuation/symbols and
  spaces, the share that came back in place (aligned as the misreads are), to see which
  kind of character a tier loses first.

The edit distance is Myers' bit-parallel algorithm over Python integers: a 4,000-character
page takes milliseconds instead of the seconds a dynamic-programming table would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

_PUNCT = "\"'()[]{}<>.,;:!?`"
_HAS_DIGIT = re.compile(r"\d")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit insert/delete/substitute costs).

    >>> edit_distance("kitten", "sitting")
    3
    """
    if len(a) < len(b):
        a, b = b, a
    m = len(b)
    if m == 0:
        return len(a)
    peq: dict[str, int] = {}
    for i, ch in enumerate(b):
        peq[ch] = peq.get(ch, 0) | (1 << i)
    mask = (1 << m) - 1
    high = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for ch in a:
        eq = peq.get(ch, 0)
        xv = eq | mv
        xh = ((((eq & pv) + pv) & mask) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & high:
            score += 1
        elif mh & high:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def char_precision(reference: str, hypothesis: str) -> float:
    """1 − normalised edit distance, in [0, 1]; 1.0 for two empty strings."""
    n = max(len(reference), len(hypothesis))
    return 1.0 if n == 0 else 1.0 - edit_distance(reference, hypothesis) / n


def fox_word_precision(reference: str, hypothesis: str) -> float:
    """|distinct hyp words ∩ ref words| / |distinct hyp words|.

    A hypothesis without words scores 0.0, or 1.0 when the reference has none either
    (nothing to read, nothing read: as :func:`char_precision` of two empty strings).
    """
    hyp = set(hypothesis.split())
    if not hyp:
        return 0.0 if reference.split() else 1.0
    return len(hyp & set(reference.split())) / len(hyp)


def exact_tokens(text: str) -> list[str]:
    """Numbers and ids in ``text``: whitespace tokens with a digit, outer punctuation stripped."""
    out = []
    for tok in text.split():
        tok = tok.strip(_PUNCT)
        if tok and _HAS_DIGIT.search(tok):
            out.append(tok)
    return out


def exact_token_rate(reference: str, hypothesis: str) -> tuple[int, int]:
    """``(found, total)``: how many of the reference's numbers/ids the hypothesis has verbatim.

    Counted with multiplicity: a number twice in the reference must appear twice.
    """
    ref = exact_tokens(reference)
    pool: dict[str, int] = {}
    for tok in exact_tokens(hypothesis):
        pool[tok] = pool.get(tok, 0) + 1
    found = 0
    for tok in ref:
        if pool.get(tok, 0) > 0:
            pool[tok] -= 1
            found += 1
    return found, len(ref)


@dataclass(frozen=True, slots=True)
class Misread:
    """One place where the hypothesis differs from the reference."""

    offset: int
    """Where the differing span starts in the reference."""
    expected: str
    """The reference's span (empty when the hypothesis inserted text)."""
    got: str
    """The hypothesis' span (empty when it dropped text)."""
    before: str
    """Up to ``context`` reference characters before the span."""

    def __str__(self) -> str:
        return f"@{self.offset} …{self.before!r}: {_clip(self.expected)} → {_clip(self.got)}"


def _clip(span: str, width: int = 60) -> str:
    """``repr(span)``, cut to ``width`` characters of text with the count left out."""
    if len(span) <= width:
        return repr(span)
    return f"{span[:width]!r}…(+{len(span) - width})"


def misreads(reference: str, hypothesis: str, *, context: int = 16) -> list[Misread]:
    """Every differing span between ``reference`` and ``hypothesis``, in reference order.

    >>> [str(m) for m in misreads("ORD-35462 ok", "ORD-35482 ok", context=4)]
    ["@7 …'-354': '6' → '8'"]
    >>> str(misreads("a" + " " * 100 + "b", "ab", context=1)[0])
    "@1 …'a': '                                                            '…(+40) → ''"
    """
    if context < 0:
        raise ValueError(f"context must be ≥ 0, got {context}")
    matcher = SequenceMatcher(None, reference, hypothesis, autojunk=False)
    return [
        Misread(offset=i1, expected=reference[i1:i2], got=hypothesis[j1:j2],
                before=reference[max(0, i1 - context):i1])
        for op, i1, i2, j1, j2 in matcher.get_opcodes() if op != "equal"
    ]


CHARACTER_KINDS = ("letter", "digit", "hangul", "punct/symbol", "space")
"""The kinds :func:`read_by_kind` counts, in report order."""


def character_kind(char: str) -> str:
    """One of :data:`CHARACTER_KINDS` for a single character.

    >>> [character_kind(c) for c in "a7한-  "]
    ['letter', 'digit', 'hangul', 'punct/symbol', 'space', 'space']
    """
    code = ord(char)
    if 0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
        return "hangul"
    if char.isdigit():
        return "digit"
    if char.isalpha():
        return "letter"
    if char.isspace():
        return "space"
    return "punct/symbol"


def read_by_kind(reference: str, hypothesis: str) -> dict[str, tuple[int, int]]:
    """``{kind: (read back in place, in the reference)}`` for every kind present in
    ``reference``: a character is read when it falls in a block that the alignment of
    :func:`misreads` matches.

    >>> read_by_kind("ab 12", "ab 13")
    {'letter': (2, 2), 'space': (1, 1), 'digit': (1, 2)}
    """
    total: dict[str, int] = {}
    for char in reference:
        kind = character_kind(char)
        total[kind] = total.get(kind, 0) + 1
    read = dict.fromkeys(total, 0)
    matcher = SequenceMatcher(None, reference, hypothesis, autojunk=False)
    for block in matcher.get_matching_blocks():
        for char in reference[block.a : block.a + block.size]:
            read[character_kind(char)] += 1
    return {kind: (read[kind], n) for kind, n in total.items()}
