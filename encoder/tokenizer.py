"""The decoder's tokenizer: a byte-level BPE of 4,096 tokens, shipped as ``weights/tokenizer.json``.

Byte-level means every string round-trips exactly: ``decode(encode(s)) == s`` for any
Unicode text, control characters included (no normaliser, no prefix space). Digits are
single tokens and no token spans more than 8 bytes, because the decoder reads each token
from the page cells beneath it. The file is built by ``tools/build_tokenizer.py`` from the
synthetic generator's training split.

Special tokens have fixed ids: ``<bos>``=0, ``<eos>``=1, ``<pad>``=2, ``<image>``=3. Text
that happens to contain the string ``"<eos>"`` is encoded as ordinary bytes, never as the
special token, so a conversation cannot inject control tokens.

This is also the text-token count behind every compression ratio we report
(:func:`count_tokens`: tokens of the page transcript, no specials).

>>> tok = load_tokenizer()                             # doctest: +SKIP
>>> decode(encode("Hi 서울 <eos>\\n"))                  # doctest: +SKIP
'Hi 서울 <eos>\\n'
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from tokenizers import Tokenizer

from opticmem.encoder.codec import CodecError

TOKENIZER_FILE = "tokenizer.json"
VOCAB_SIZE = 4096
MAX_TOKEN_BYTES = 8
SPECIAL_TOKENS: tuple[str, ...] = ("<bos>", "<eos>", "<pad>", "<image>")
BOS_ID, EOS_ID, PAD_ID, IMAGE_ID = 0, 1, 2, 3


class TokenizerError(CodecError, RuntimeError):
    """The shipped tokenizer file is missing, unreadable or not the expected vocabulary.

    A :class:`~opticmem.encoder.codec.CodecError`, as every error of the codec's files is
    (``except CodecError`` around :func:`count_tokens` catches it), and still the
    ``RuntimeError`` it was."""


@cache
def load_tokenizer() -> Tokenizer:
    """Load the shipped tokenizer once per process; raise :class:`TokenizerError` naming
    the file if it is missing or does not have the expected size and special ids."""
    ref = resources.files("opticmem.encoder").joinpath("weights", TOKENIZER_FILE)
    try:
        with resources.as_file(ref) as path:
            tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a corrupt file
        raise TokenizerError(f"cannot read the tokenizer {ref}: {exc}") from exc
    if tok.get_vocab_size() != VOCAB_SIZE:
        raise TokenizerError(f"{ref} has {tok.get_vocab_size()} tokens, expected {VOCAB_SIZE}")
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise TokenizerError(f"{ref}: special token {s} has id {tok.token_to_id(s)}, "
                                 f"expected {i}")
    tok.encode_special_tokens = True  # "<eos>" typed in a chat is text, not a control token
    return tok


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (no special tokens added)."""
    return list(load_tokenizer().encode(text, add_special_tokens=False).ids)


def decode(ids: list[int]) -> str:
    """Text of ``ids``; special tokens are dropped."""
    return str(load_tokenizer().decode(ids, skip_special_tokens=True))


def count_tokens(text: str) -> int:
    """Text tokens in ``text``: the numerator of every compression ratio we report."""
    return len(load_tokenizer().encode(text, add_special_tokens=False).ids)
