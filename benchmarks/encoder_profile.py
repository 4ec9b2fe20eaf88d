"""Where the compiled DeepEncoder's time goes, and what compiler options change it.

Issue 3 asks for ≥ 40% MFU at Base, batch ≥ 32; the compiled encoder sits just under it.
This benchmark times ``encode_grid`` under ``torch.compile`` at one tier and batch for a
set of variants — inductor options and SAM attention forms — and profiles the first one
kernel by kernel on CUDA, grouped into GEMMs, attention, fused Triton kernels, convs and the
rest, so a change is chosen by measurement rather than by guess.

Variants (``--variants``, comma-separated):

* ``default``: ``torch.compile(encode_grid, dynamic=False)``, SAM attention ``auto``;
* ``coordinate-descent``: inductor's ``coordinate_descent_tuning`` (tunes the generated
  Triton kernels' launch parameters by search);
* ``freezing``: inductor's ``freezing`` (weights become constants: folding, and layouts
  chosen for the convs);
* ``global-bias``: SAM's global blocks take the explicit bias too (``SamAttention.impl =
  "bias"``) instead of the folded head dims;
* any ``+``-joined combination, e.g. ``coordinate-descent+freezing``.

Reproduce on the GPU machine (after ``tools/device_setup.sh``)::

    python3 -m benchmarks.encoder_profile --out $OUT/encoder_profile_h200.md

``--smoke`` runs the ``test`` preset at Tiny on the CPU: it proves the wiring, not the speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from benchmarks import publish
from benchmarks.encoder_speed import Timer, peak_mib, reset_memory
from opticmem.encoder.config import preset
from opticmem.encoder.flops import encoder_flops
from opticmem.encoder.model import OCRModel, build_model
from opticmem.encoder.sam import AttentionForm, SamAttention
from opticmem.render.tiers import Tier

DEFAULT_OUT = Path("benchmarks/results/encoder_profile.md")
INDUCTOR_OPTIONS = {
    "coordinate-descent": {"coordinate_descent_tuning": True},
    "freezing": {"freezing": True},
}
FORMS: dict[str, AttentionForm] = {"global-bias": "bias"}
KERNEL_GROUPS = (  # first match wins; names are lower-cased
    ("conv", ("conv", "implicit", "winograd")),
    ("attention", ("flash", "fmha", "cudnn", "attention", "sdpa")),
    ("GEMM", ("gemm", "cutlass", "xmma", "nvjet", "cublas", "sm90_", "sm80_")),
    ("fused Triton", ("triton",)),
)


@dataclass
class Result:
    variant: str
    compile_s: float
    median_ms: float
    pages_s: float
    mfu: float
    peak_mib: float | None


def parse_variant(name: str) -> tuple[dict[str, Any], AttentionForm]:
    """A variant's inductor options and SAM attention form."""
    options: dict[str, Any] = {}
    form: AttentionForm = "auto"
    for part in name.split("+"):
        if part == "default":
            continue
        if part in INDUCTOR_OPTIONS:
            options.update(INDUCTOR_OPTIONS[part])
        elif part in FORMS:
            form = FORMS[part]
        else:
            known = ["default", *INDUCTOR_OPTIONS, *FORMS]
            raise SystemExit(f"unknown variant part {part!r}; known: {', '.join(known)}")
    return options, form


def compiled(model: OCRModel, name: str, backend: str) -> Any:
    options, form = parse_variant(name)
    torch._dynamo.reset()
    SamAttention.impl = form
    return torch.compile(model.encode_grid, dynamic=False, backend=backend,
                         options=options or None)


def measure(model: OCRModel, name: str, pixels: torch.Tensor, repeats: int, peak: float,
            device: torch.device, backend: str) -> tuple[Result, Callable[[], None]]:
    encode = compiled(model, name, backend)
    timer = Timer(device)
    reset_memory(device)

    def run() -> None:
        with torch.inference_mode():
            encode(pixels)

    t0 = time.perf_counter()
    timer(run)  # compiles
    compile_s = time.perf_counter() - t0
    timer(run)
    seconds = statistics.median(timer(run) for _ in range(repeats))
    batch, size = pixels.shape[0], pixels.shape[-1]
    flops = encoder_flops(model.cfg, size) * batch
    result = Result(name, compile_s, seconds * 1e3, batch / seconds,
                    flops / seconds / peak, peak_mib(device))
    print(f"{name}: {result.pages_s:,.1f} pages/s, {result.mfu:.1%} MFU "
          f"(compiled in {compile_s:.0f} s)", flush=True)
    return result, run


def kernel_group(name: str) -> str:
    low = name.lower()
    return next((group for group, keys in KERNEL_GROUPS if any(k in low for k in keys)),
                "other")


def kernel_profile(run: Callable[[], None], top: int) -> str:
    """One run's CUDA kernels: time per group, and the ``top`` kernels by time."""
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        run()
        torch.cuda.synchronize()
    kernels = [(e.key, e.self_device_time_total, e.count) for e in prof.key_averages()
               if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    total = sum(t for _, t, _ in kernels) or 1.0
    groups: dict[str, float] = defaultdict(float)
    for name, t, _ in kernels:
        groups[kernel_group(name)] += t
    lines = [f"GPU kernel time in one run: {total / 1e3:.2f} ms", "",
             "| group | ms | share |", "|---|---|---|"]
    lines += [f"| {g} | {t / 1e3:.2f} | {t / total:.1%} |"
              for g, t in sorted(groups.items(), key=lambda kv: -kv[1])]
    lines += ["", "| kernel | group | calls | ms | share |", "|---|---|---|---|---|"]
    for name, t, count in sorted(kernels, key=lambda k: -k[1])[:top]:
        short = name if len(name) <= 90 else name[:87] + "…"
        lines.append(f"| `{short}` | {kernel_group(name)} | {count} | {t / 1e3:.2f} | "
                     f"{t / total:.1%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--preset", default="official")
    ap.add_argument("--tier", default="base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default="default,coordinate-descent,freezing,global-bias")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=20, help="kernels listed in the profile")
    ap.add_argument("--peak-tflops", type=float, default=790.0, help="bf16 dense peak")
    ap.add_argument("--backend", default="inductor",
                    help="torch.compile backend (eager: a quick wiring check)")
    ap.add_argument("--smoke", action="store_true",
                    help="test preset, Tiny, CPU, backend eager: proves the wiring")
    args = ap.parse_args(argv)
    if args.smoke:
        args.preset, args.tier, args.batch, args.variants, args.repeats, args.backend = (
            "test", "tiny", 2, "default,global-bias", 1, "eager")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(preset(args.preset), device=device, dtype=dtype, seed=0).eval()
    tier = Tier.parse(args.tier)
    pixels = torch.randn(args.batch, 3, tier.pixels, tier.pixels, device=device, dtype=dtype)
    names = args.variants.split(",")
    for name in names:
        parse_variant(name)  # fail before the first compile, not after it
    results: list[Result] = []
    profiled = ""
    form = SamAttention.impl
    try:
        for i, name in enumerate(names):
            result, run = measure(model, name, pixels, args.repeats, args.peak_tflops * 1e12,
                                  device, args.backend)
            results.append(result)
            if i == 0 and device.type == "cuda":
                profiled = f"### Kernels, variant `{name}`\n\n" + kernel_profile(run, args.top)
    finally:
        SamAttention.impl = form
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    lines = [f"## Compiled DeepEncoder: variants and kernels — preset `{args.preset}`, "
             f"{tier.value}, batch {args.batch}", "",
             f"Device: {name}; torch {torch.__version__}; {str(dtype).removeprefix('torch.')}; "
             f"torch.compile backend {args.backend}; MFU vs {args.peak_tflops:g} TFLOP/s; "
             f"medians of {args.repeats} runs after one warm run.", "",
             "| variant | compile s | median ms | pages/s | MFU | peak MiB |",
             "|---|---|---|---|---|---|"]
    for r in results:
        mem = f"{r.peak_mib:,.0f}" if r.peak_mib is not None else "–"
        lines.append(f"| {r.variant} | {r.compile_s:.0f} | {r.median_ms:.2f} | "
                     f"{r.pages_s:,.1f} | {r.mfu:.1%} | {mem} |")
    if profiled:
        lines += ["", profiled]
    publish("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
