"""Refit the weights an int8 checkpoint keeps in floating point, after they were quantized.

Run 42's export (the first grown model) stored every weight matrix as int8, including the
aligner's ``point`` and reader input layers, which int8 rows cannot hold
(``LayoutAligner.FLOAT_WEIGHTS``); the training state they came from stayed on the GPU
machine. This trains those layers alone (everything else frozen), on the CPU, on
training-split pages at every tier, with the training loss (teacher-forced next token
plus the aligner read-out), until the damage of their rounding is undone; then saves the
model as ``export_bundled(..., quantize="int8")`` would. The held-out evaluation is run
separately. Batches, optimiser and step are the trainer's own (``PageBatches``,
``make_optimizer``, ``update``); run 42's refit drew its pages through an earlier copy of
them (commit ``bca0316``).

Usage: python tools/refit_float_weights.py SRC_DIR OUT_DIR [--steps N] [--pages-per-step P]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from tqdm import tqdm

from opticmem.encoder.bundled import BUNDLED_TOKENIZER, special_ids, training_step
from opticmem.encoder.checkpoint import float_weights, load_checkpoint, save_checkpoint
from opticmem.encoder.train import PageBatches, TrainConfig, make_optimizer, update
from opticmem.render import ORDER, RenderSettings

TIERS = {"large": 0.05, "base": 0.05, "small": 0.55, "tiny": 0.35}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--pages-per-step", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=4242)
    args = ap.parse_args()
    model = load_checkpoint(args.src, device="cpu", dtype=torch.float32)
    refit = float_weights(model)
    for name, p in model.named_parameters():
        p.requires_grad_(name in refit)
    # The trainer's own batches, optimiser and step (losses, clipping), on these layers.
    cfg = TrainConfig(out_dir=args.out, peak_lr=args.lr, seed=args.seed, workers=0,
                      tier_weights=dict(TIERS), pseudo_word_rate=0.2, pseudo_symbol_rate=0.2,
                      batch_pages=dict.fromkeys(TIERS, args.pages_per_step))
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    batches = iter(PageBatches(cfg, BUNDLED_TOKENIZER, special_ids(model.cfg.decoder),
                               run_index=0))
    settings = RenderSettings()
    model.train()
    log = []
    start = time.time()
    bar = tqdm(range(args.steps), desc="refit", unit="step")
    for step in bar:
        batch = next(batches)
        tier = next(t.value for t in ORDER if t.pixels == batch["images"].shape[1])
        loss = float(update(model, opt, batch,
                            lambda b: training_step(model, b, settings), cfg).loss)
        log.append({"step": step, "tier": tier, "loss": round(loss, 4)})
        bar.set_postfix(tier=tier, loss=f"{loss:.3f}")
    model.eval()
    save_checkpoint(model, args.out, dtype=torch.bfloat16, quantize="int8")
    shutil.copyfile(BUNDLED_TOKENIZER, args.out / "tokenizer.json")
    for record in ("progress.json", "training_log.json"):
        if (args.src / record).is_file():
            shutil.copyfile(args.src / record, args.out / record)
    (args.out / "refit_log.json").write_text(json.dumps(
        {"refit": sorted(refit), "steps": args.steps, "pages_per_step": args.pages_per_step,
         "lr": args.lr, "seed": args.seed, "cpu_minutes": round((time.time() - start) / 60, 1),
         "log": log}, indent=1))


if __name__ == "__main__":
    main()
