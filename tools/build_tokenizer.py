"""Build the decoder's tokenizer: a byte-level BPE of exactly 4,096 tokens.

Trained on page transcripts of the synthetic generator's **train** split only (the text
the decoder learns to emit), so evaluation text never shapes the vocabulary::

    python tools/build_tokenizer.py                # → encoder/weights/tokenizer.json
    python tools/build_tokenizer.py --check        # rebuild and compare with the shipped one

Choices, and why:

- byte-level (GPT-2 byte alphabet, no normaliser): every string, including control
  characters and characters no font has, encodes and decodes back exactly;
- digits are split into single tokens (GPT-2's pattern with ``\\p{N}`` instead of
  ``\\p{N}+``): a number is read one cell at a time, which is
  what the exact-match rate of numbers and ids depends on;
- ``max_token_length=8``: no token spans more than 8 bytes (two Hangul syllables, a few
  Latin letters), because the decoder reads each token from the page cells under it;
- special tokens ``<bos>``=0, ``<eos>``=1, ``<pad>``=2, ``<image>``=3.

Reproducible: the corpus is a fixed number of pages of the seeded generator, and BPE
training is deterministic for a given corpus (``--check`` verifies it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from opticmem.encoder.synth import page_stream
from opticmem.encoder.tokenizer import MAX_TOKEN_BYTES, SPECIAL_TOKENS, VOCAB_SIZE
from opticmem.render import RenderSettings

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "encoder" / "weights" / "tokenizer.json"
SEED = 20_240_917
CORPUS_CHARS = 6_000_000
PRETOKENIZE = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
"""GPT-2's pre-tokenisation pattern, except that a number splits into single digits (each
with its leading space, if any)."""

log = logging.getLogger("build_tokenizer")


def corpus(chars: int = CORPUS_CHARS, seed: int = SEED) -> list[str]:
    """Page transcripts of the train split, about ``chars`` characters in all."""
    out: list[str] = []
    n = 0
    for page in page_stream(seed, "train", RenderSettings(), partial_rate=1.0):
        text = page.transcript
        out.append(text)
        n += len(text)
        if n >= chars:
            break
    return out


def train(texts: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        max_token_length=MAX_TOKEN_BYTES,
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def stats(tok: Tokenizer, seed: int = 7) -> dict[str, float]:
    """Characters per token on held-out (eval split) text: English chat pages, Korean
    turns, and Python code snippets."""
    from opticmem.encoder.synth import conversations, load_sources

    def cpt(texts: list[str]) -> float:
        chars = sum(len(t) for t in texts)
        toks = sum(len(tok.encode(t, add_special_tokens=False).ids) for t in texts)
        return chars / max(toks, 1)

    english: list[str] = []
    for page in page_stream(seed, "eval", RenderSettings()):
        if not any("\uac00" <= c <= "\ud7a3" for c in page.transcript):
            english.append(page.transcript)
        if len(english) >= 300:
            break
    korean: list[str] = []
    for conv in conversations(seed, "eval"):
        korean += [t.text for t in conv
                   if sum("\uac00" <= c <= "\ud7a3" for c in t.text) > 0.3 * len(t.text)]
        if len(korean) >= 400:
            break
    code = list(load_sources("eval").code[:800])
    return {"english_chat": cpt(english), "korean": cpt(korean), "python_code": cpt(code)}


def digest(tok: Tokenizer) -> str:
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--chars", type=int, default=CORPUS_CHARS, help="corpus size in characters")
    ap.add_argument("--check", action="store_true",
                    help="rebuild and report whether it equals the file at --out")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    t0 = time.perf_counter()
    texts = corpus(args.chars)
    corpus_hash = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    log.info("corpus: %d pages, %d chars (sha256 %s) in %.1f s", len(texts),
             sum(map(len, texts)), corpus_hash, time.perf_counter() - t0)
    t1 = time.perf_counter()
    tok = train(texts)
    log.info("trained %d tokens in %.1f s, vocab digest %s", tok.get_vocab_size(),
             time.perf_counter() - t1, digest(tok))
    if tok.get_vocab_size() != VOCAB_SIZE:
        log.error("vocabulary has %d tokens, expected %d", tok.get_vocab_size(), VOCAB_SIZE)
        return 1
    for kind, value in stats(tok).items():
        log.info("chars/token on eval %-13s %.2f", kind, value)
    if args.check:
        shipped = Tokenizer.from_file(str(args.out))
        same = digest(shipped) == digest(tok)
        log.info("shipped %s: %s", args.out, "identical" if same else
                 f"DIFFERENT (shipped digest {digest(shipped)})")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(args.out), pretty=False)
    log.info("wrote %s (%.0f KB)", args.out, args.out.stat().st_size / 1024)
    return 0


if __name__ == "__main__":
    sys.exit(main())
