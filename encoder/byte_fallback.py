"""A byte-level fallback tokenizer for models no tokenizer file fits, and file loading.

The codec uses a model's own ``tokenizer.json`` when it has one, else the shipped BPE
(:mod:`opticmem.encoder.tokenizer`) when the model's vocabulary and special ids match it.
For anything else (e.g. a randomly initialised ``official``-size model) a model still
needs *some* tokenizer whose ids fit its vocabulary. :func:`byte_fallback_tokenizer`
builds one in code: the config's special tokens at their configured ids (bos, eos, pad,
``<image>``, marked special so ``decode`` skips them), the 256 byte tokens on the next free
ids, and plain ``<unused_i>`` entries padding the vocabulary to the model's size
(:func:`placeholder_ids` lists them so a decoder can drop them). Every string round-trips
(it is UTF-8 bytes), but at one token per byte it is ~4× longer than a trained BPE, so it
is only used when no tokenizer file fits.

>>> from opticmem.encoder.config import preset
>>> tok = byte_fallback_tokenizer(preset("bundled").decoder)
>>> tok.get_vocab_size(), tok.encode("hé").ids, tok.decode(tok.encode("hé").ids)
(4096, [108, 199, 173], 'hé')
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from opticmem.encoder.config import DecoderConfig
from opticmem.encoder.errors import CheckpointError

BOS, EOS, PAD, IMAGE = "<bos>", "<eos>", "<pad>", "<image>"
UNUSED_PREFIX = "<unused_"


@cache
def _bytes_to_unicode() -> tuple[str, ...]:
    """The printable character GPT-2's byte-level scheme uses for each byte 0..255."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return tuple(chr(chars[b]) for b in range(256))


def byte_fallback_tokenizer(cfg: DecoderConfig) -> Tokenizer:
    """A byte-level tokenizer sized and numbered for ``cfg`` (see the module docstring)."""
    specials = {
        cfg.bos_token_id: BOS,
        cfg.eos_token_id: EOS,
        cfg.pad_token_id: PAD,
        cfg.image_token_id: IMAGE,
    }
    if len(specials) != 4:
        raise ValueError("bos, eos, pad and image token ids must be distinct")
    if cfg.vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size {cfg.vocab_size} cannot hold 256 bytes and 4 specials")
    vocab: dict[str, int] = {tok: i for i, tok in specials.items()}
    free = (i for i in range(cfg.vocab_size) if i not in specials)
    for ch in _bytes_to_unicode():
        vocab[ch] = next(free)
    for i in free:
        vocab[f"{UNUSED_PREFIX}{i}>"] = i
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    ordered = [specials[i] for i in sorted(specials)]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ordered])
    return tokenizer


def placeholder_ids(tokenizer: Tokenizer) -> frozenset[int]:
    """Ids of the fallback's ``<unused_i>`` padding entries (empty for real tokenizers)."""
    return frozenset(
        i for tok, i in tokenizer.get_vocab(with_added_tokens=False).items()
        if tok.startswith(UNUSED_PREFIX)
    )


def read_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizer.json`` file; :class:`CheckpointError` naming the file if unreadable."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception
        raise CheckpointError(f"cannot read tokenizer: {exc}", path=str(path)) from exc
