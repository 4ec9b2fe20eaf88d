"""Refit the weights an int8 checkpoint keeps in floating point, after they were quantized.

Run 42's export (the first grown model) stored every weight matrix as int8, including the
aligner's ``point`` and reader input layers, which int8 rows cannot hold
(``LayoutAligner.FLOAT_WEIGHTS``); the training state they came from stayed on the GPU
machine. This trains those layers alone (everything else frozen), on the CPU, on
training-split pages at every tier, with the training loss (teacher-forced next token
plus the aligner read-out), until the damage of their rounding is undone; then saves the
model as ``export_bundled`` would. The held-out evaluation is run separately.

Usage: python tools/refit_float_weights.py SRC_DIR OUT_DIR [--steps N] [--pages-per-step P]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from opticmem.encoder import synth
from opticmem.encoder.bundled import BUNDLED_TOKENIZER, special_ids, training_step
from opticmem.encoder.checkpoint import float_weights, load_checkpoint, save_checkpoint
from opticmem.encoder.examples import collate, make_examples, token_bytes
from opticmem.encoder.tokenizer import load_tokenizer
from opticmem.render import RenderSettings, Tier

TIERS = {Tier.LARGE: 0.05, Tier.BASE: 0.05, Tier.SMALL: 0.55, Tier.TINY: 0.35}


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
    params = dict(model.named_parameters())
    for name, p in params.items():
        p.requires_grad_(name in refit)
    opt = torch.optim.AdamW([params[n] for n in sorted(refit)], lr=args.lr, weight_decay=0.0)
    tok = load_tokenizer()
    table = token_bytes(tok)
    settings = RenderSettings()
    stream = synth.page_stream(args.seed, "train", settings, pseudo_rate=0.2, symbol_rate=0.2)
    rng = random.Random(args.seed)
    model.train()
    log = []
    start = time.time()
    bar = tqdm(range(args.steps), desc="refit", unit="step")
    for step in bar:
        tier = rng.choices(list(TIERS), weights=list(TIERS.values()))[0]
        examples = [make_examples(next(stream), [tier], tok, table)[0]
                    for _ in range(args.pages_per_step)]
        batch = collate(examples, **special_ids(model.cfg.decoder))
        out = training_step(model, batch, settings)
        loss = F.cross_entropy(out.logits.float(), out.labels)
        total = loss
        if out.readout is not None:
            total = total + 0.5 * F.cross_entropy(out.readout.float(), out.labels)
        opt.zero_grad()
        total.backward()
        opt.step()
        log.append({"step": step, "tier": tier.value, "loss": round(float(loss), 4)})
        bar.set_postfix(tier=tier.value, loss=f"{float(loss):.3f}")
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
