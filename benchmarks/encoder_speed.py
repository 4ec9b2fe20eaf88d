"""Encoder and decoder speed of the official-size model with random weights (GPU, bf16).

Measures, at the ``official`` preset (speed does not depend on the weight values):

* encode pages/s per tier (Tiny, Small, Base, Large) at batch 1, 8, 32, 128, with
  model-FLOPs utilisation from the analytic count in :mod:`opticmem.encoder.flops`
  against the H100's bf16 dense peak (790 TFLOP/s by default, ``--peak-tflops``);
* greedy decode tokens/s summed over the batch at batch 1, 32, 128 for ~1,000-token
  pages (the prompt is ``[bos] + <image>·slots`` of one page at ``--decode-tier``; EOS is
  ignored so every row produces exactly ``--decode-tokens`` tokens; the reference's
  no-repeat 30/90 guard stays on), plus the time of one decoding step: (median total −
  median of a prefill-only run) / steps;
* peak GPU memory per configuration.

Timing uses CUDA events after warm-up runs and reports medians. The table is printed
and written as Markdown to ``--out``. ``--smoke`` runs tiny sizes on whatever device
exists (CPU included), so the script itself is testable without a GPU::

    python benchmarks/encoder_speed.py                 # on the GPU machine
    python benchmarks/encoder_speed.py --smoke --out /tmp/speed.md
    # the bundled model's CPU decoding step (run with OMP_NUM_THREADS=1 on small machines):
    python benchmarks/encoder_speed.py --preset bundled --skip-encode --decode-batches 1,8 \
        --decode-tokens 200 --decode-tier small --out /tmp/bundled_cpu.md

``--sam-attention FORM`` picks how SAM adds its relative-position bias (``bias``, the
reference's explicit mask; the folded ``augment`` forms; the default ``auto`` picks per
block, see :mod:`opticmem.encoder.sam`).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from benchmarks import publish
from opticmem.encoder.config import preset
from opticmem.encoder.flops import decoder_flops_per_token, encoder_flops
from opticmem.encoder.generate import GenerationConfig, Prompt, generate
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.sam import ATTENTION_FORMS, SamAttention
from opticmem.render.tiers import Tier

DEFAULT_OUT = Path("benchmarks/results/encoder_speed.md")
SDP_BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
}


@dataclass
class Row:
    kind: str
    tier: str
    batch: int
    median_ms: float
    throughput: float
    unit: str
    mfu: float | None
    peak_mib: float | None
    note: str = ""


class Timer:
    """Wall time of a callable: CUDA events on GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def reset_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def bench_encode(
    model: OCRModel,
    tiers: list[Tier],
    batches: list[int],
    repeats: int,
    warmup: int,
    peak_flops: float,
    device: torch.device,
    dtype: torch.dtype,
    compile_mode: str | None = None,
) -> list[Row]:
    timer = Timer(device)
    rows: list[Row] = []
    encode = (model.encode_grid if compile_mode is None
              else torch.compile(model.encode_grid, dynamic=False, mode=compile_mode))
    for tier in tiers:
        for batch in batches:
            reset_memory(device)
            try:
                pixels = torch.randn(batch, 3, tier.pixels, tier.pixels, device=device, dtype=dtype)

                def run(pixels: torch.Tensor = pixels) -> None:
                    with torch.inference_mode():
                        encode(pixels)

                for _ in range(warmup):
                    timer(run)
                times = [timer(run) for _ in range(repeats)]
            except torch.cuda.OutOfMemoryError:
                rows.append(Row("encode", tier.value, batch, float("nan"), float("nan"),
                                "pages/s", None, peak_mib(device), "out of memory"))
                continue
            med = statistics.median(times)
            flops = encoder_flops(model.cfg, tier.pixels) * batch
            rows.append(Row(
                "encode", tier.value, batch, med * 1e3, batch / med, "pages/s",
                flops / med / peak_flops if peak_flops else None, peak_mib(device),
            ))
            print(format_row(rows[-1]), flush=True)
    return rows


def bench_decode(
    model: OCRModel,
    tier: Tier,
    batches: list[int],
    tokens: int,
    repeats: int,
    peak_flops: float,
    device: torch.device,
    dtype: torch.dtype,
    cuda_graphs: bool = False,
) -> list[Row]:
    timer = Timer(device)
    D = model.cfg.embed_dim
    slots = tier.slots
    config = GenerationConfig(
        max_new_tokens=tokens, no_repeat_ngram_size=30, no_repeat_window=90, stop_token_ids=(-1,),
        cuda_graphs=cuda_graphs,
    )
    warm = GenerationConfig(max_new_tokens=8, stop_token_ids=(-1,), cuda_graphs=cuda_graphs)
    rows: list[Row] = []
    for batch in batches:
        reset_memory(device)
        g = torch.Generator(device="cpu").manual_seed(batch)
        prompts = [
            Prompt(slots=(torch.randn(slots, D, generator=g) * 0.02).to(device=device, dtype=dtype))
            for _ in range(batch)
        ]
        first = replace(config, max_new_tokens=1)  # prefill and the first choice only

        def runner(
            cfg: GenerationConfig, prompts: list[Prompt] = prompts
        ) -> Callable[[], object]:
            # No step_hook: a hook needs the tokens on the host, one sync per step.
            return lambda: generate(model, prompts, cfg)

        try:
            runner(warm)()
            totals, prefills = [], []
            for _ in range(repeats):
                totals.append(timer(runner(config)))
                prefills.append(timer(runner(first)))
        except torch.cuda.OutOfMemoryError:
            rows.append(Row("decode", tier.value, batch, float("nan"), float("nan"), "tokens/s",
                            None, peak_mib(device), "out of memory"))
            continue
        total = statistics.median(totals)
        steps = max(tokens - 1, 1)
        step = (total - statistics.median(prefills)) / steps
        context = slots + 1 + tokens // 2
        flops = decoder_flops_per_token(model.cfg, context) * batch / step if step > 0 else 0.0
        rows.append(Row(
            "decode", tier.value, batch, step * 1e3, batch * tokens / total, "tokens/s",
            flops / peak_flops if peak_flops and step > 0 else None, peak_mib(device),
            f"{tokens} tokens/page incl. prefill of {slots + 1}; ms = (total − prefill) / "
            f"{steps} steps" + ("; CUDA graphs" if cuda_graphs else ""),
        ))
        print(format_row(rows[-1]), flush=True)
    return rows


def format_row(r: Row) -> str:
    mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "–"
    mem = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "–"
    return (f"| {r.kind} | {r.tier} | {r.batch} | {r.median_ms:.2f} | {r.throughput:,.1f} "
            f"{r.unit} | {mfu} | {mem} | {r.note} |")


def table(rows: list[Row], header: str) -> str:
    lines = [
        header,
        "",
        "| what | tier | batch | median ms | throughput | MFU | peak MiB | note |",
        "|---|---|---|---|---|---|---|---|",
        *[format_row(r) for r in rows],
        "",
    ]
    return "\n".join(lines)


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--preset", default="official")
    ap.add_argument("--tiers", default="tiny,small,base,large")
    ap.add_argument("--encode-batches", default="1,8,32,128")
    ap.add_argument("--decode-batches", default="1,32,128")
    ap.add_argument("--decode-tokens", type=int, default=1000)
    ap.add_argument("--decode-tier", default="base")
    ap.add_argument("--repeats", type=int, default=5, help="timed encode runs per point")
    ap.add_argument("--decode-repeats", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak")
    ap.add_argument("--sam-attention", choices=ATTENTION_FORMS,
                    default="auto",
                    help="rel-pos attention form in SAM (see opticmem.encoder.sam)")
    ap.add_argument("--sdpa-backend", choices=["auto", "cudnn", "flash", "efficient"],
                    default="auto", help="restrict every SDPA call to one kernel")
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="decode with GenerationConfig(cuda_graphs=True)")
    ap.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                    help="encode through torch.compile(encode_grid, mode=MODE) "
                         "(one compile per shape; MODE default, max-autotune-no-cudagraphs…)")
    ap.add_argument("--skip-encode", action="store_true")
    ap.add_argument("--skip-decode", action="store_true")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny model and sizes on any device (tests the script)")
    args = ap.parse_args(argv)

    if args.smoke:
        args.preset, args.tiers = "test", "tiny,small"
        args.encode_batches, args.decode_batches = "1,2", "1,2"
        args.decode_tokens, args.repeats, args.warmup, args.decode_tier = 6, 2, 1, "tiny"

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    SamAttention.impl = args.sam_attention
    cfg = preset(args.preset)
    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    peak = args.peak_tflops * 1e12 if device.type == "cuda" else 0.0
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    header = (
        f"## opticmem encoder speed — preset `{cfg.name}` "
        f"({model.num_parameters():,} params, random weights)\n\n"
        f"device: {gpu or device.type}; dtype {str(dtype).removeprefix('torch.')}; "
        f"torch {torch.__version__}; SAM attention `{args.sam_attention}`; "
        + (f"SDPA kernel `{args.sdpa_backend}`; " if args.sdpa_backend != "auto" else "")
        + (f"encoder under torch.compile (mode {args.compile}); " if args.compile else "")
        + f"MFU vs {args.peak_tflops:g} TFLOP/s"
        + ("" if device.type == "cuda" else " (not computed on CPU)")
    )
    print(header, flush=True)
    rows: list[Row] = []
    kernels = (
        sdpa_kernel([SDP_BACKENDS[args.sdpa_backend]])
        if args.sdpa_backend != "auto"
        else contextlib.nullcontext()
    )
    with kernels:
        if not args.skip_encode:
            tiers = [Tier.parse(t) for t in args.tiers.split(",") if t]
            rows += bench_encode(model, tiers, parse_ints(args.encode_batches), args.repeats,
                                 args.warmup, peak, device, dtype, args.compile)
        if not args.skip_decode:
            rows += bench_decode(model, Tier.parse(args.decode_tier),
                                 parse_ints(args.decode_batches), args.decode_tokens,
                                 args.decode_repeats, peak, device, dtype, args.cuda_graphs)
    text = table(rows, header)
    print()
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
