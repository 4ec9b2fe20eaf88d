"""Text token counting: a pluggable counter and a sensible offline default.

Budgets are counted in the consumer's tokens. A :class:`TextCounter` is anything with a
``name`` (used in cache keys) and ``count(text) -> int``. The default,
:class:`ApproxCounter`, needs no vocabulary file: it approximates modern byte-level BPE
vocabularies (cl100k/o200k-like) closely enough for budgeting, deterministically and fast.
For exact counts wrap a real tokenizer with :func:`text_counter`:

>>> counter = text_counter(None)          # the offline default
>>> counter.count("Let's plan Project Titan for March.")
7
>>> text_counter(lambda s: len(s.split())).count("three short words")
3
"""

from __future__ import annotations

import inspect
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from opticmem.errors import ConfigurationError
from opticmem.lru import LRU


@runtime_checkable
class TextCounter(Protocol):
    """Counts the tokens a consumer model spends on a text."""

    @property
    def name(self) -> str:
        """Identifies the counter (cache keys and reports use it)."""
        ...

    def count(self, text: str) -> int:
        """Tokens of ``text``; must be deterministic and ≥ 0."""
        ...


# Ideographs, kana, Hangul jamo and syllables, fullwidth forms: about one token each.
_CJK = (
    "\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7a3\uf900-\ufaff\uff00-\uffef"
)
# One alternation, tried left to right at each position (like a BPE pre-tokenizer).
_PIECES = re.compile(
    rf"(?P<cjk> ?[{_CJK}])"
    r"|(?P<word> ?[A-Za-z\u00c0-\u024f]+(?:'[A-Za-z]+)?)"
    rf"|(?P<other_word> ?(?:(?![{_CJK}])[^\W\d_])+)"
    r"|(?P<digits> ?\d+)"
    r"|(?P<space>\s+)"
    r"|(?P<punct> ?[^\w\s]+)"
    r"|(?P<underscore>_+)"
)


def _approx(text: str) -> int:
    n = 0
    for m in _PIECES.finditer(text):
        kind = m.lastgroup
        s = m.group()
        if kind == "cjk":
            n += 1
        elif kind == "word":
            letters = len(s) - (s[0] == " ")
            # Common English words are one token; long ones split into ~6-letter pieces.
            n += 1 if letters <= 7 else (letters + 5) // 6
        elif kind == "other_word":
            letters = len(s) - (s[0] == " ")
            # Cyrillic, Greek, Arabic, Hebrew, Devanagari…: ~2.5 characters per token.
            n += max(1, (2 * letters + 4) // 5)
        elif kind == "digits":
            digits = len(s) - (s[0] == " ")
            n += (digits + 2) // 3  # numbers split into groups of three digits
        elif kind == "space":
            n += s.count("\n") + (1 if len(s) - s.count("\n") > 1 else 0)
        elif kind == "punct":
            chars = len(s) - (s[0] == " ")
            # Emoji and other astral symbols cost ~2 tokens each; ASCII punctuation pairs up.
            astral = sum(1 for c in s if ord(c) > 0xFFFF)
            n += 2 * astral + max(0 if astral else 1, (chars - astral + 1) // 2)
        else:
            n += (len(s) + 3) // 4
    return n


@dataclass(frozen=True)
class ApproxCounter:
    """Deterministic approximation of byte-level BPE counts, with an LRU cache.

    Rules: English words of up to 7 letters are one token, longer ones ~6 letters a
    token; digits go in groups of three; each CJK ideograph, kana or Hangul syllable is
    one token; other letters (Cyrillic, Greek, Arabic, …) ~2.5 characters a token;
    punctuation ~2 characters a token; emoji 2; each newline 1. On English prose this
    comes to ~4.3 characters a token, within ~10% of cl100k.
    """

    name: str = "approx-bpe-v1"
    cache_entries: int = 16_384

    def __post_init__(self) -> None:
        cache = LRU[str, int](self.cache_entries, max_size=64_000_000, size=lambda k, v: len(k))
        object.__setattr__(self, "_cache", cache)

    def count(self, text: str) -> int:
        if len(text) < 64:
            return _approx(text)
        cache: LRU[str, int] = object.__getattribute__(self, "_cache")
        return cache.get_or_compute(text, lambda: _approx(text))


@dataclass(frozen=True)
class CallableCounter:
    """Wraps ``fn(text) -> int`` (any user function) as a :class:`TextCounter`."""

    fn: Callable[[str], int]
    name: str = "callable"

    def count(self, text: str) -> int:
        """``fn(text)``, which must be a whole number ≥ 0 (any integer type, not ``bool``),
        else :class:`~opticmem.errors.ConfigurationError`: ``int()`` of it truncated 2.7 to
        2 (under-counting every text, so contexts ran over their budget), took ``"5"`` and
        ``True``, and failed on NaN or infinity with a bare ``ValueError`` or
        ``OverflowError``."""
        got = self.fn(text)
        try:
            if isinstance(got, bool):
                raise TypeError
            n = operator.index(got)
        except TypeError:
            raise ConfigurationError(
                f"token counter {self.name!r} returned {got!r}; it must return a whole "
                "number of tokens (an int; round a fractional estimate up with math.ceil)"
            ) from None
        if n < 0:
            raise ConfigurationError(
                f"token counter {self.name!r} returned a negative count {n}")
        return n


def _encoder_len(obj: Any) -> Callable[[str], int]:
    """A length function for ``tokenizers.Tokenizer`` or anything with ``.encode(str)``."""
    encode = obj.encode
    try:  # tokenizers.Tokenizer: encode(text, add_special_tokens=False) -> Encoding(.ids)
        import tokenizers

        if isinstance(obj, tokenizers.Tokenizer):
            return lambda s: len(encode(s, add_special_tokens=False).ids)
    except ImportError:  # pragma: no cover - tokenizers is a dependency
        pass

    ordinary = getattr(obj, "encode_ordinary", None)
    if callable(ordinary):  # tiktoken: encode() raises on text that spells a special token
        return lambda s: len(ordinary(s))
    # transformers' tokenizers add their special tokens (BOS, EOS, CLS/SEP) to every
    # encode() unless told not to: every text counted (each turn, caption, facts line) came
    # to 1-2 tokens more than it costs, and "" to 2
    plain = {"add_special_tokens": False} if _takes(encode, "add_special_tokens") else {}

    def length(s: str) -> int:
        out = encode(s, **plain)
        ids = getattr(out, "ids", out)  # an Encoding-like object, or a plain list of ids
        return len(ids)

    return length


def _takes(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` takes a keyword argument ``name`` by that name."""
    try:
        param = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD,
                                                param.KEYWORD_ONLY)


def text_counter(spec: TextCounter | Callable[[str], int] | Any | None = None) -> TextCounter:
    """Make a :class:`TextCounter` from a counter, a tokenizer, a callable or ``None``.

    * ``None`` → :class:`ApproxCounter` (offline default);
    * a :class:`TextCounter` → itself;
    * a ``tokenizers.Tokenizer`` or any object with ``.encode(str)`` (tiktoken encodings,
      Hugging Face tokenizers) → counts the ids it returns;
    * a callable ``fn(str) -> int`` → wrapped.

    A string (a tokenizer's or an encoding's name, such as ``"cl100k_base"``) is refused
    with a ``TypeError`` here: it has an ``encode`` method, so it would pass for a
    tokenizer and fail only at the first count, far from the call that configured it.
    """
    if spec is None:
        return ApproxCounter()
    if isinstance(spec, (str, bytes, bytearray)):
        raise TypeError(
            f"cannot count tokens with the {type(spec).__name__} {spec!r}: a tokenizer's name "
            "is not a tokenizer; pass the tokenizer itself (e.g. "
            "tiktoken.get_encoding(name)), a TextCounter, or a callable str -> int"
        )
    if isinstance(spec, TextCounter):
        return spec
    if hasattr(spec, "encode"):
        name = getattr(spec, "name", None) or type(spec).__name__
        return CallableCounter(_encoder_len(spec), name=f"encoder:{name}")
    if callable(spec):
        name = getattr(spec, "__qualname__", None) or type(spec).__name__
        return CallableCounter(spec, name=f"callable:{name}")
    raise TypeError(
        f"cannot count tokens with {type(spec).__name__}; pass a TextCounter, a tokenizer "
        "with .encode(str), or a callable str -> int"
    )
