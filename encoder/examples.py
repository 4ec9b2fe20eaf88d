"""Training examples: a rendered page at one tier, its transcript's tokens, and their cells.

The decoder sequence follows DeepSeek-OCR's plain template::

    position   0      1 … S          S+1 … S+n
    input      <bos>  <image> × S    t₁ … tₙ
    predicts   –      … t₁ (at S)    t₂ … tₙ, <eos>

where ``S`` is the tier's slot count. Steps ``S … S+n`` also carry the cell of the next
character (see :mod:`opticmem.encoder.align`). Images travel as uint8 greyscale and are
normalised on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from tokenizers import Tokenizer

from opticmem.encoder.align import step_cells
from opticmem.render import PageLayout, Tier, draw_page, to_tier

IGNORE = -100


@cache
def byte_decoder() -> dict[str, int]:
    """Inverse of the GPT-2 byte → printable-character map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def token_bytes(tokenizer: Tokenizer) -> list[bytes]:
    """The bytes each token id stands for (empty for special tokens)."""
    dec = byte_decoder()
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    special = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
    table = [b""] * (max(vocab.values()) + 1)
    for tok, i in vocab.items():
        if tok not in special:
            table[i] = bytes(dec[c] for c in tok)
    return table


@dataclass(frozen=True, slots=True)
class Example:
    """One page at one tier, ready to batch."""

    image: np.ndarray  # (S, S) uint8 at the tier's size
    tier: Tier
    ids: np.ndarray  # (n,) transcript token ids, no specials
    cells: np.ndarray  # (n+1, 2) next-character cell before each token and before <eos>
    transcript: str


def make_examples(
    page: PageLayout,
    tiers: Sequence[Tier],
    tokenizer: Tokenizer,
    table: Sequence[bytes],
    master: np.ndarray | None = None,
) -> list[Example]:
    """One example of ``page`` per tier in ``tiers``: drawn (or ``master`` reused) once at
    Large and resampled to each; the transcript is tokenised and its cells laid out once,
    since they do not depend on the tier (the examples share those arrays)."""
    master = draw_page(page) if master is None else master
    text = page.transcript
    ids = np.asarray(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    cells = step_cells(text, [len(table[i]) for i in ids])
    return [Example(image=np.asarray(to_tier(master, tier)), tier=tier, ids=ids, cells=cells,
                    transcript=text) for tier in tiers]


def bucketed(length: int, bucket: int) -> int:
    """``length`` rounded up to a multiple of ``bucket`` (``length`` itself for 0)."""
    if bucket < 0:
        raise ValueError(f"a length bucket is ≥ 0, got {bucket}")
    return -(-length // bucket) * bucket if bucket else length


def collate(
    examples: Sequence[Example], *, bos: int, eos: int, pad: int, image_id: int,
    bucket: int = 0,
) -> dict[str, torch.Tensor]:
    """Batch examples of ONE tier into padded tensors.

    Returns ``images`` (B, S, S) uint8, ``input_ids`` / ``labels`` (B, L) int64,
    ``cells`` (B, L, 2) int64, ``aligned`` (B, L) bool marking steps that carry a cell, and
    ``labelled`` (N, 2) int64: the ``(row, position)`` of those steps in row-major order,
    which are exactly the steps with a label. With it, a training step on a GPU indexes
    them without asking the device where they are (a host sync).

    Rows are padded to the longest one, ``L₀``; with ``bucket`` > 0, further to the next
    multiple of ``bucket`` (:func:`bucketed`), so that a compiled decoder sees a few fixed
    lengths instead of a new one every step. The extra steps are padding like any other:
    no label, no cell, and the decoder is causal, so no real step attends to them. The
    batch then also holds ``balanced`` (B, L) bool, true at every row's first ``L₀``
    steps: the steps the MoE load-balancing loss averages over, as it does over the whole
    of an unbucketed batch — with it, bucketing changes no loss and no gradient.
    """
    tier = examples[0].tier
    if any(e.tier is not tier for e in examples):
        raise ValueError("a batch holds pages of one tier")
    s = tier.slots
    natural = 1 + s + max(len(e.ids) for e in examples)
    length = bucketed(natural, bucket)
    b = len(examples)
    input_ids = torch.full((b, length), pad, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    cells = torch.zeros((b, length, 2), dtype=torch.long)
    aligned = torch.zeros((b, length), dtype=torch.bool)
    for i, e in enumerate(examples):
        n = len(e.ids)
        ids = torch.from_numpy(e.ids)
        input_ids[i, 0] = bos
        input_ids[i, 1 : 1 + s] = image_id
        input_ids[i, 1 + s : 1 + s + n] = ids
        labels[i, s : s + n] = ids
        labels[i, s + n] = eos
        cells[i, s : s + n + 1] = torch.from_numpy(e.cells)
        aligned[i, s : s + n + 1] = True
    images = torch.from_numpy(np.stack([e.image for e in examples]))
    batch = {"images": images, "input_ids": input_ids, "labels": labels, "cells": cells,
             "aligned": aligned, "labelled": aligned.nonzero()}
    if bucket:
        balanced = torch.zeros((b, length), dtype=torch.bool)
        balanced[:, :natural] = True
        batch["balanced"] = balanced
    return batch
