"""Grow a trained model deeper without changing what it computes.

The bundled codec stopped improving at its size (the model card's phase table): more
training minutes no longer bought precision at Small and Tiny. Training a larger model
from scratch would cost the ~300 GPU-minutes the present one took, so instead the trained
model is grown: new blocks are appended to the SAM stage, the CLIP stage and the decoder,
each a pre-norm residual block whose output projections start at zero, and the aligner
may get a reader whose last layer starts at zero. A block that adds zero to its input is
the identity, so the grown model reads every page exactly as the trained one did, and
training goes on from there with room to improve. (Phase 12 did this: its training loss
fell, held-out precision did not move; ``benchmarks/results/codec_eval_phase12/``.)
"""

from __future__ import annotations

from dataclasses import replace

import torch

from opticmem.encoder.config import ModelConfig
from opticmem.encoder.errors import InputError
from opticmem.encoder.model import OCRModel, build_model


def grow(
    model: OCRModel,
    *,
    sam_depth: int | None = None,
    clip_depth: int | None = None,
    decoder_layers: int | None = None,
    reader_points: int | None = None,
    reader_hidden: int = 768,
    seed: int = 0,
) -> OCRModel:
    """A deeper copy of ``model`` (fp32, on the CPU) that computes the same function.

    Each depth given must be at least the stage's present one (``None`` keeps it). New
    SAM blocks attend within windows (the global ones stay where they are), new decoder
    layers are MoE layers when the decoder has experts; their other weights are drawn
    with ``seed`` as a fresh model's are. ``reader_points`` gives an aligner without one
    a reader (:attr:`~opticmem.encoder.align.AlignConfig.reader_points`) of
    ``reader_hidden`` units. Raises :class:`InputError` for a smaller depth, or a reader
    for a model without aligner or with a reader already.
    """
    cfg = model.cfg
    align = cfg.align
    if reader_points is not None:
        if align is None or align.reader_points:
            raise InputError("a reader is added to an aligner that has none; this model "
                             + ("has no aligner" if align is None else "has a reader"))
        align = replace(align, reader_points=reader_points, reader_hidden=reader_hidden)
    depths = {"sam_depth": (sam_depth, cfg.sam.depth), "clip_depth": (clip_depth, cfg.clip.depth),
              "decoder_layers": (decoder_layers, cfg.decoder.layers)}
    for name, (new, old) in depths.items():
        if new is not None and (isinstance(new, bool) or not isinstance(new, int) or new < old):
            raise InputError(f"{name} must be a whole number ≥ the present {old}, got {new!r}")
    grown_cfg = replace(
        cfg,
        sam=replace(cfg.sam, depth=sam_depth or cfg.sam.depth),
        clip=replace(cfg.clip, depth=clip_depth or cfg.clip.depth),
        decoder=replace(cfg.decoder, layers=decoder_layers or cfg.decoder.layers),
        align=align,
    )
    grown = build_model(grown_cfg, device="cpu", dtype=torch.float32, seed=seed)
    target = grown.state_dict()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            target[name].copy_(tensor)
        for name in _residual_outputs(cfg, grown_cfg, target):
            target[name].zero_()
    return grown


def _residual_outputs(
    old: ModelConfig, new: ModelConfig, names: dict[str, torch.Tensor]
) -> list[str]:
    """The weights and biases that write each new block's output into the residual stream."""
    prefixes = (
        [f"vision.sam.blocks.{i}.{p}." for i in range(old.sam.depth, new.sam.depth)
         for p in ("attn.proj", "mlp.fc2")]
        + [f"vision.clip.blocks.{i}.{p}." for i in range(old.clip.depth, new.clip.depth)
           for p in ("attn.proj", "mlp.fc2")]
        + [f"decoder.layers.{i}.attn.o_proj." for i in range(old.decoder.layers,
                                                             new.decoder.layers)]
    )
    if new.align is not None and new.align.reader_points and not (
            old.align is not None and old.align.reader_points):
        prefixes.append("aligner.reader.4.")  # its last layer
    out = [n for n in names if n.startswith(tuple(prefixes))]
    for i in range(old.decoder.layers, new.decoder.layers):
        layer = f"decoder.layers.{i}.mlp."
        out += [n for n in names if n.startswith(layer) and n.endswith("down_proj.weight")]
    return out
