"""Does a codec read its pages, or guess them? Teacher-forced loss on four kinds of page.

A held-out evaluation (``opticmem eval``) greedy-decodes 40 pages per tier and takes
~10 CPU minutes; this takes ~30 seconds a codec and separates the abilities that the
precision mixes:

* **train**: pages of the training split's text — what the decoder's language prior
  knows best;
* **pseudo**: the same generator with every word drawn as random letters
  (``synth.pseudo_words`` at rate 1.0) — nothing to guess, only to read;
* **eval**: pages of the held-out split's text (other sources, other seed) — what
  ``opticmem eval`` measures;
* **eval-pseudo**: the held-out split's pages with every word random letters — reading
  on layouts, templates and entities training never drew. Below **pseudo**, the codec has
  learned the training pages' structure, not only their words.

A codec whose ``train`` accuracy is far above its ``pseudo`` accuracy leans on its prior,
and its ``eval`` accuracy sits between the two. Each row is the mean next-token loss
(nats/token) and top-1 accuracy over every labelled token of the same pages for every
codec, so codecs compare on identical input.

Usage: python tools/probe_reading.py DIR [DIR ...] [--pages 8] [--tiers small,tiny]
       [--out FILE]   (CPU; DIR: a checkpoint directory, or "bundled")
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from opticmem.encoder import synth
from opticmem.encoder.bundled import BUNDLED_TOKENIZER, special_ids, training_step
from opticmem.encoder.checkpoint import load_checkpoint
from opticmem.encoder.codec import weights_dir
from opticmem.encoder.examples import Example, collate, make_examples, token_bytes
from opticmem.encoder.model import OCRModel
from opticmem.render import RenderSettings, Tier, parse_tiers

KINDS: tuple[tuple[str, synth.Split, float], ...] = (
    ("train", "train", 0.0), ("pseudo", "train", 1.0), ("eval", "eval", 0.0),
    ("eval-pseudo", "eval", 1.0))
"""(name, split, pseudo-word rate) of each kind of page."""


def pages_of(split: synth.Split, pseudo: float, tiers: list[Tier], count: int, seed: int,
             tok: Tokenizer) -> dict[Tier, list[Example]]:
    """``count`` full pages of ``split`` at each tier, drawn once for every codec."""
    settings = RenderSettings()
    stream = synth.page_stream(seed, split, settings, pseudo_rate=pseudo, partial_rate=0.0)
    table = token_bytes(tok)
    out: dict[Tier, list[Example]] = {t: [] for t in tiers}
    for _ in range(count):
        for example in make_examples(next(stream), tiers, tok, table):
            out[example.tier].append(example)
    return out


@torch.no_grad()
def score(model: OCRModel, examples: list[Example], batch: int) -> tuple[float, float, int]:
    """Mean next-token loss, top-1 accuracy and token count over ``examples``."""
    settings = RenderSettings()
    ids = special_ids(model.cfg.decoder)
    loss = correct = tokens = 0.0
    for i in range(0, len(examples), batch):
        out = training_step(model, collate(examples[i:i + batch], **ids), settings)
        loss += float(F.cross_entropy(out.logits.float(), out.labels, reduction="sum"))
        correct += float((out.logits.argmax(-1) == out.labels).sum())
        tokens += len(out.labels)
    return loss / tokens, correct / tokens, int(tokens)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("codecs", nargs="+", help='checkpoint directories, or "bundled"')
    ap.add_argument("--pages", type=int, default=8, help="pages of each kind (default: 8)")
    ap.add_argument("--tiers", default="small,tiny")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", type=Path, help="also write the table to this file")
    args = ap.parse_args(argv)
    if args.pages < 1:
        ap.error("--pages must be at least 1")
    tiers = parse_tiers(args.tiers)
    tok = Tokenizer.from_file(str(BUNDLED_TOKENIZER))
    tok.encode_special_tokens = True
    data = {name: pages_of(split, rate, tiers, args.pages, args.seed, tok)
            for name, split, rate in KINDS}
    lines = [f"Teacher-forced next-token loss (nats/token) and top-1 accuracy, {args.pages} "
             f"pages of each kind (seed {args.seed}); `python tools/probe_reading.py`.", "",
             "| codec | tier | " + " | ".join(f"{k} loss | {k} acc" for k, _, _ in KINDS)
             + " |", "|---|---|" + "---|---|" * len(KINDS)]
    for name in args.codecs:
        src = weights_dir() if name == "bundled" else Path(name)
        model = load_checkpoint(src, device="cpu", dtype=torch.float32).eval()
        for tier in tiers:
            cells = []
            for kind, _, _ in KINDS:
                loss, acc, _ = score(model, data[kind][tier], args.batch)
                cells.append(f"{loss:.3f} | {acc:.2%}")
            lines.append(f"| {name} | {tier.value} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
