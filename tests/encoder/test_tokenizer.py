"""The shipped tokenizer: exact size and special ids, exact round trips, short tokens."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opticmem.encoder.codec import CodecError
from opticmem.encoder.examples import byte_decoder
from opticmem.encoder.tokenizer import (
    BOS_ID,
    EOS_ID,
    IMAGE_ID,
    MAX_TOKEN_BYTES,
    PAD_ID,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    TokenizerError,
    count_tokens,
    decode,
    encode,
    load_tokenizer,
)


def test_vocabulary_size_and_special_ids() -> None:
    tok = load_tokenizer()
    assert tok.get_vocab_size() == VOCAB_SIZE == 4096
    assert [tok.token_to_id(s) for s in SPECIAL_TOKENS] == [BOS_ID, EOS_ID, PAD_ID, IMAGE_ID]
    assert (BOS_ID, EOS_ID, PAD_ID, IMAGE_ID) == (0, 1, 2, 3)
    assert SPECIAL_TOKENS == ("<bos>", "<eos>", "<pad>", "<image>")


def test_no_normaliser_and_byte_alphabet() -> None:
    tok = load_tokenizer()
    assert tok.normalizer is None
    vocab = tok.get_vocab()
    dec = byte_decoder()
    assert all(ch in vocab for ch in dec), "every byte must be a token"


def test_no_token_longer_than_eight_bytes() -> None:
    tok = load_tokenizer()
    dec = byte_decoder()
    lengths = [len(t) for t, i in tok.get_vocab().items() if i >= len(SPECIAL_TOKENS)]
    assert all(all(c in dec for c in t) for t, i in tok.get_vocab().items()
               if i >= len(SPECIAL_TOKENS))
    assert max(lengths) <= MAX_TOKEN_BYTES
    assert len(lengths) == VOCAB_SIZE - len(SPECIAL_TOKENS)


@pytest.mark.parametrize("text", [
    "User: Let's plan Project Titan for March 3, 2025 — budget $1,250,000.\n",
    "서울 파트너와 3월 15일(금) 오후 2시에 회의합니다. 담당: 김민아 (mina.kim@example.co.kr)",
    "漢字とひらがな、カタカナ 混在テキスト",
    "emoji 🙂👍🏽🇰🇷 and ZWJ 👩‍💻 and variation ⚠️",
    "control \x00\x01\x07\x1b[31m\x7f and \r\n CRLF and \t tabs\n\n\n",
    "  leading spaces, trailing spaces   ",
    "def f(x):\n    return {'a': [1, 2, 3]}  # comment\n",
    "https://example.com/a/b?c=1&d=%20e#frag ORD-48213-XK 3fa9c0d2e1b4a5f6",
    "\u200b\u200d\ufeff zero-width and BOM, \ufffd replacement, \U0010ffff last code point",
])
def test_round_trip_examples(text: str) -> None:
    assert decode(encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_round_trip_any_text(text: str) -> None:
    assert decode(encode(text)) == text


def test_special_token_strings_in_text_are_plain_text() -> None:
    ids = encode("a <eos> b <image> <bos><pad>")
    assert not set(ids) & {BOS_ID, EOS_ID, PAD_ID, IMAGE_ID}
    assert decode(ids) == "a <eos> b <image> <bos><pad>"


def test_digits_are_single_tokens() -> None:
    tok = load_tokenizer()
    enc = tok.encode("Total 1234567.89 on 2025-03-15", add_special_tokens=False)
    digit_tokens = [t.lstrip("Ġ") for t in enc.tokens if any(c.isdigit() for c in t)]
    assert digit_tokens and all(len(t) == 1 for t in digit_tokens)


def test_count_tokens_matches_encode() -> None:
    text = "Assistant: The Titan launch moves to May 6.\nUser: 좋아요, 감사합니다!"
    assert count_tokens(text) == len(encode(text)) > 0
    # common English words are single tokens: the vocabulary learned something
    assert len(encode(" the")) == 1 and len(encode(" and")) == 1


def test_shipped_vocabulary_is_pinned() -> None:
    """A decoder is trained against this exact vocabulary: replacing the file (e.g. by
    re-running tools/build_tokenizer.py after the generator changed) must be deliberate."""
    vocab = sorted(load_tokenizer().get_vocab().items(), key=lambda kv: kv[1])
    got = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
    assert got == "0a75e73ccf95635d"


def test_an_unreadable_shipped_tokenizer_is_a_codec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # errors.py promises `except CodecError` catches whatever the codec's files raise;
    # TokenizerError was a RuntimeError only, so `opticmem eval`'s count escaped it.
    class Broken:
        @staticmethod
        def from_file(path: str) -> None:
            raise Exception("data did not match any variant")

    monkeypatch.setattr("opticmem.encoder.tokenizer.Tokenizer", Broken)
    load_tokenizer.cache_clear()
    try:
        with pytest.raises(CodecError, match=r"tokenizer\.json") as info:
            count_tokens("hello")
        assert isinstance(info.value, TokenizerError) and isinstance(info.value, RuntimeError)
    finally:
        load_tokenizer.cache_clear()
