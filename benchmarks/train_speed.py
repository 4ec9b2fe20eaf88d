"""What sets the codec's training pace — the data workers or the step — and which step is fastest.

The bundled codec's training logs showed 150–250 page-tiers/s on an H100 and an H200 alike,
whatever the tier, for a 21.6M-parameter model whose FLOPs would allow far more. This
measures the two sides of :func:`opticmem.encoder.train.train` apart:

* **loader**: :func:`~opticmem.encoder.train.page_loader` with ``--workers`` processes,
  exactly as the trainer builds it (pages drawn, resampled to their tiers, tokenised,
  batched), in page-tiers/s under ``--tier-mix``;
* **step**: :func:`~opticmem.encoder.train.update` — forward under bf16 autocast, losses,
  backward, clipping, fused AdamW, the host-to-device copy included — on batches made
  before the timing starts, per tier and per variant: ``--moe`` (``grouped``: each expert
  on its tokens, one host sync per MoE layer; ``dense``: every expert on every token, no
  sync) × ``--scales`` (pages per step, times :data:`~opticmem.encoder.train.BATCH_PAGES`)
  × ``--buckets`` (``0``: the decoder eager on batches padded to their longest row; ``N``:
  padded to a multiple of ``N`` steps with the decoder layers compiled,
  :func:`~opticmem.encoder.train.compile_decoder` — with the ``dense`` MoE path only, and
  compiled during the warm-up steps, so the rows time compiled steps, padding included).

A variant's mix rate is the page-tiers/s of steps drawn in the tier mix's proportions
(pages at each tier in proportion to its weight: the harmonic mean of the tier rates so
weighted). Training runs at about the lower of the loader's rate and the step's mix rate;
the trainer's own log says which with ``data_wait``.

Reproduce on the GPU machine (after ``tools/device_setup.sh``, with ``data/synth``)::

    OPTICMEM_SYNTH_DIR=data/synth python3 -m benchmarks.train_speed --workers 14 \\
        --out $OUT/train_speed_h200.md

and the compiled decoder against the eager one (``tools/device_bench.sh traincompile``)::

    OPTICMEM_SYNTH_DIR=data/synth python3 -m benchmarks.train_speed --no-loader \\
        --moe dense --scales 1 --buckets 0,128 --out $OUT/train_speed_compile_h200.md

``--smoke`` runs the ``test`` preset on the CPU with tiny batches: it proves the wiring,
not the speed.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import torch
from tqdm import tqdm

from benchmarks import publish
from benchmarks.encoder_speed import Timer, peak_mib, reset_memory
from opticmem.encoder.bundled import BUNDLED_TOKENIZER, StepOutput, special_ids, training_step
from opticmem.encoder.config import preset
from opticmem.encoder.model import build_model
from opticmem.encoder.moe import TrainDispatch
from opticmem.encoder.train import (
    PageBatches,
    TrainConfig,
    compile_decoder,
    make_optimizer,
    page_loader,
    parse_tier_mix,
    scaled_batches,
    update,
    use_moe_dispatch,
)
from opticmem.render import ORDER, RenderSettings, Tier

RESULTS = Path(__file__).parent / "results" / "train_speed.md"
Batch = dict[str, torch.Tensor]


@dataclass
class StepRow:
    moe: str
    scale: float
    bucket: int
    """Length bucket of a compiled decoder; 0 for the eager decoder, unbucketed."""
    tier: Tier
    pages: int
    median_ms: float
    peak_gib: float | None

    @property
    def rate(self) -> float:
        """Page-tiers per second."""
        return self.pages / (self.median_ms / 1e3)


def loader_rate(cfg: TrainConfig, seconds: float, warmup_batches: int) -> tuple[float, int]:
    """Page-tiers/s of the trainer's loader over ``seconds``, after ``warmup_batches``
    batches (worker start-up); also how many page-tiers were counted."""
    loader = page_loader(cfg, BUNDLED_TOKENIZER, special_ids(preset(cfg.preset).decoder),
                         run_index=0,
                         pin_memory=torch.cuda.is_available())
    batches: Iterator[Batch] = iter(loader)
    for _ in range(warmup_batches):
        next(batches)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += int(next(batches)["images"].shape[0])
    rate = count / (time.perf_counter() - start)
    del batches, loader  # stops the workers
    return rate, count


def make_batches(cfg: TrainConfig, tier: Tier, pages: int, count: int) -> list[Batch]:
    """``count`` batches of ``pages`` pages at ``tier``, made as the trainer makes them
    (:class:`~opticmem.encoder.train.PageBatches`, in this process), pinned on CUDA."""
    one_tier = replace(cfg, tier_weights={t.value: float(t is tier) for t in ORDER},
                       tiers_per_page=1, batch_pages={**cfg.batch_pages, tier.value: pages})
    batches = iter(PageBatches(one_tier, BUNDLED_TOKENIZER,
                               special_ids(preset(cfg.preset).decoder), run_index=0))
    out = [next(batches) for _ in range(count)]  # padded to cfg.length_bucket
    if torch.cuda.is_available():
        out = [{k: v.pin_memory() for k, v in batch.items()} for batch in out]
    return out


def time_steps(cfg: TrainConfig, device: torch.device, batches: list[Batch], warmup: int,
               steps: int, rounds: int = 3) -> tuple[float, float | None]:
    """Seconds per :func:`update` cycling through ``batches``, and the peak GPU memory in
    GiB (None on CPU). After ``warmup`` steps, ``rounds`` runs of ``steps`` back-to-back
    steps are timed whole — so the host queues a step while the GPU runs the last one, as
    in training — and the median run's time per step is returned."""
    model = build_model(preset(cfg.preset), device="cpu", seed=0).to(device).train()
    use_moe_dispatch(model, cfg.moe_dispatch)
    if cfg.compile_decoder:
        compile_decoder(model, cfg.length_bucket)
    opt = make_optimizer(model, cfg, device)
    settings = RenderSettings()

    def step_fn(batch: Batch) -> StepOutput:
        return training_step(model, batch, settings)

    def run(first: int, count: int) -> Callable[[], None]:
        def go() -> None:
            for i in range(first, first + count):
                batch = {k: v.to(device, non_blocking=True)
                         for k, v in batches[i % len(batches)].items()}
                update(model, opt, batch, step_fn, cfg)
        return go

    timer = Timer(device)
    timer(run(0, warmup))
    reset_memory(device)
    times = [timer(run(warmup + r * steps, steps)) / steps for r in range(rounds)]
    peak = peak_mib(device)
    return statistics.median(times), None if peak is None else peak / 1024


def mix_rate(rows: list[StepRow], weights: dict[str, float]) -> float:
    """Page-tiers/s of steps whose pages fall on the tiers in ``weights``' proportions."""
    total = sum(weights[r.tier.value] for r in rows)
    return total / sum(weights[r.tier.value] / r.rate for r in rows if weights[r.tier.value] > 0)


def decoder_label(bucket: int) -> str:
    return "eager" if bucket == 0 else f"compiled, bucket {bucket}"


def report(device: torch.device, cfg: TrainConfig, loader: tuple[float, int] | None,
           rows: list[StepRow], args: argparse.Namespace) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    lines = [
        "# Training throughput: loader and step apart",
        "",
        f"Device: {name or device.type}; {os.cpu_count()} CPUs; torch {torch.__version__}; "
        f"preset `{cfg.preset}`; tier mix "
        f"{', '.join(f'{t}={w:g}' for t, w in cfg.tier_weights.items())}; "
        f"per row, the median of 3 runs of {args.steps} back-to-back steps after "
        f"{args.warmup} warm-up steps.",
        "",
    ]
    if loader is not None:
        rate, count = loader
        lines += [f"**Loader** ({cfg.workers} workers, {count} page-tiers in "
                  f"{args.seconds:g} s): **{rate:.0f} page-tiers/s**.", ""]
    lines += ["| MoE | batch scale | decoder | tier | pages/step | ms/step | page-tiers/s "
              "| peak GiB |",
              "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = "–" if r.peak_gib is None else f"{r.peak_gib:.1f}"
        lines.append(f"| {r.moe} | {r.scale:g} | {decoder_label(r.bucket)} | {r.tier.value} | "
                     f"{r.pages} | {r.median_ms:.1f} | {r.rate:.0f} | {peak} |")
    lines += ["", "| MoE | batch scale | decoder | step mix rate (page-tiers/s) "
              "| bound with the loader |",
              "|---|---|---|---|---|"]
    for key in dict.fromkeys((r.moe, r.scale, r.bucket) for r in rows):
        group = [r for r in rows if (r.moe, r.scale, r.bucket) == key]
        rate = mix_rate(group, cfg.tier_weights)
        bound = "–" if loader is None else ("loader" if loader[0] < rate else "step")
        lines.append(f"| {key[0]} | {key[1]:g} | {decoder_label(key[2])} | {rate:.0f} "
                     f"| {bound} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=14, help="loader processes (the trainer's)")
    ap.add_argument("--seconds", type=float, default=30.0, help="loader timing window")
    ap.add_argument("--tier-mix", default="large=0.05,base=0.05,small=0.55,tiny=0.35")
    ap.add_argument("--moe", default="grouped,dense", help="comma-separated MoE train paths")
    ap.add_argument("--scales", default="1,2", help="comma-separated batch scales")
    ap.add_argument("--buckets", default="0",
                    help="comma-separated decoder variants: 0 eager, N > 0 lengths padded to "
                         "multiples of N and the decoder layers compiled (dense MoE only)")
    ap.add_argument("--tiers", default=",".join(t.value for t in ORDER))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--no-loader", action="store_true", help="time the steps only")
    ap.add_argument("--smoke", action="store_true",
                    help="test preset, CPU, 2-page Tiny batches, 2 s of loader: wiring only")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    cfg = TrainConfig(out_dir=Path(".train-bench"), workers=args.workers,
                      tier_weights=parse_tier_mix(args.tier_mix))
    tiers = [Tier.parse(t) for t in args.tiers.split(",")]
    scales = [float(s) for s in args.scales.split(",")]
    try:
        buckets = [int(b) for b in args.buckets.split(",")]
    except ValueError:
        ap.error("--buckets must be whole numbers")
    if any(b < 0 for b in buckets):
        ap.error("--buckets must be ≥ 0")
    if args.smoke:
        cfg = replace(cfg, preset="test", workers=0, batch_pages=dict.fromkeys(
            cfg.batch_pages, 2))
        tiers, scales, args.seconds, args.warmup, args.steps = [Tier.TINY], [1.0], 2.0, 1, 1
    if any(not math.isfinite(s) or s <= 0 for s in scales):
        ap.error("--scales must be positive numbers")
    loader = None if args.no_loader else loader_rate(cfg, args.seconds, warmup_batches=2)
    rows: list[StepRow] = []
    # The decoder compiles only with the dense MoE path (compile_decoder).
    jobs = [(moe, scale, bucket, tier) for moe in args.moe.split(",") for scale in scales
            for bucket in buckets if bucket == 0 or moe == "dense" for tier in tiers]
    made: dict[tuple[Tier, int, int], list[Batch]] = {}
    for moe, scale, bucket, tier in tqdm(jobs, desc="steps", unit="variant"):
        pages = (cfg.batch_pages if args.smoke else scaled_batches(scale))[tier.value]
        run_cfg = replace(cfg, moe_dispatch=cast(TrainDispatch, moe), length_bucket=bucket,
                          compile_decoder=bucket > 0)
        if (tier, pages, bucket) not in made:
            made[(tier, pages, bucket)] = make_batches(run_cfg, tier, pages, count=2)
        median_s, peak = time_steps(run_cfg, device, made[(tier, pages, bucket)], args.warmup,
                                    args.steps)
        rows.append(StepRow(moe, scale, bucket, tier, pages, median_s * 1e3, peak))
    publish(report(device, cfg, loader, rows, args), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
