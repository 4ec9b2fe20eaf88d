"""Where a greedy decoding step's time goes: per-step ms and the top ops per step.

For each batch size, the script decodes ``--steps`` tokens per row after a prompt of one
page's vision slots (random model weights and slots: speed does not depend on them; EOS is
ignored so every row runs every step; the reference's 30/90 no-repeat guard stays on) and
reports

* the wall time of one step (median over ``--repeats`` runs of (time of N+1 tokens − time
  of 1 token) / N, so the prefill is not counted);
* from ``torch.profiler``, per step: ops dispatched from Python (top-level ``aten::`` calls),
  all ``aten::`` calls, CUDA kernel launches, the GPU's busy time, and the top ops by self
  CPU time and by call count — each again the difference of an N+1-token and a 1-token run,
  divided by N;
* optionally (``--cprofile``) the Python functions with the most own time per step.

The table is printed and written as Markdown to ``--out``.

On a fresh GPU machine with only this repository (no network), from the repository root::

    python3 benchmarks/decode_profile.py --out benchmarks/results/decode_profile_h100.md

That profiles the ``official`` preset (3.3B parameters, random weights, bf16) at batches
1, 32 and 128 for 32 steps after a Base-tier page (274 prompt positions): about a minute
and under 15 GB of GPU memory on an H100. ``opticmem`` need not be installed: the script
imports the encoder from the checkout it sits in (see :func:`_bootstrap_package`).

On CPU (set ``OMP_NUM_THREADS=1`` on small shared machines)::

    # the bundled codec's decoder, with the layout aligner's step hook as the codec runs it
    python benchmarks/decode_profile.py --device cpu --preset bundled --tier small \
        --batches 1,32 --aligner --out /tmp/decode_bundled.md
    # the official layer/expert structure at width 64: compute ≈ 0, time ≈ overhead;
    # --dispatch picks the MoE path CUDA would use (gather at batch 1, dense at 32/128)
    python benchmarks/decode_profile.py --device cpu --tiny-width --dispatch cuda \
        --batches 1,32 --out /tmp/decode_tiny.md
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import platform
import pstats
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _bootstrap_package() -> None:
    """Import ``opticmem`` from this checkout, installed or not (a fresh GPU machine).

    When ``opticmem.encoder`` already imports from this checkout nothing changes. Otherwise
    (not installed, or installed from elsewhere) the repository's folders are mapped onto
    the package names — ``memory/`` is ``opticmem``, ``encoder/`` ``opticmem.encoder``,
    ``render/`` ``opticmem.render`` — with ``opticmem`` itself an empty stand-in whose
    submodules still resolve under ``memory/``: only the encoder and renderer are needed.
    """
    try:
        import opticmem.encoder as installed

        if Path(str(installed.__file__)).resolve().is_relative_to(ROOT):
            return
    except ImportError:
        pass
    import types

    for name in [m for m in sys.modules if m == "opticmem" or m.startswith("opticmem.")]:
        del sys.modules[name]
    top = types.ModuleType("opticmem")
    top.__path__ = [str(ROOT / "memory")]
    sys.modules["opticmem"] = top
    for sub in ("render", "encoder"):
        spec = importlib.util.spec_from_file_location(
            f"opticmem.{sub}", ROOT / sub / "__init__.py",
            submodule_search_locations=[str(ROOT / sub)],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        setattr(top, sub, module)
        spec.loader.exec_module(module)


_bootstrap_package()

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from benchmarks import publish  # noqa: E402
from opticmem.encoder.config import ModelConfig, preset  # noqa: E402
from opticmem.encoder.generate import GenerationConfig, Prompt, TokenHook, generate  # noqa: E402
from opticmem.encoder.model import OCRModel, build_model  # noqa: E402
from opticmem.encoder.moe import MoE  # noqa: E402
from opticmem.render.tiers import Tier  # noqa: E402

DEFAULT_OUT = Path("benchmarks/results/decode_profile.md")


def tiny_width(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the decoder's widths cut to 64 and the vocabulary to 4,096.

    Layers, dense/MoE split, routed and shared expert counts and top-k stay, so the number
    of ops (and the dispatch logic) per step is the full model's while the arithmetic is
    nearly free: a CPU step then measures host overhead. The vision side (unused when
    decoding) is the ``test`` preset's.
    """
    small = preset("test")
    d = cfg.decoder
    decoder = replace(
        d, hidden_size=64, heads=2, head_dim=32, dense_intermediate=128, moe_intermediate=32,
        vocab_size=4096, bos_token_id=0, eos_token_id=1, pad_token_id=2, image_token_id=3,
    )
    return replace(small, name=f"{cfg.name}-tiny-width", decoder=decoder, align=None)


@dataclass
class OpStats:
    count: float = 0.0
    self_cpu_us: float = 0.0
    self_device_us: float = 0.0


@dataclass
class StepProfile:
    """Per-step figures from the profiler (difference of two runs, divided by N)."""

    python_ops: float
    aten_ops: float
    launches: float
    device_ms: float | None
    ops: dict[str, OpStats] = field(default_factory=dict)
    python: list[tuple[str, float, float]] = field(default_factory=list)
    """(function, calls per step, own ms per step) from cProfile, when asked for."""


@dataclass
class Row:
    mode: str
    batch: int
    step_ms: float
    tokens_per_s: float
    prof: StepProfile | None


@dataclass
class Case:
    """One thing to time: a model, its prompts, the decoding settings and an optional hook."""

    model: OCRModel
    prompts: list[Prompt]
    generation: GenerationConfig
    hook_factory: Callable[[bool], Any] | None
    device: torch.device


def make_prompts(
    model: OCRModel, tier: Tier, batch: int, ragged: bool, device: torch.device,
    dtype: torch.dtype, context: int = 0,
) -> list[Prompt]:
    D = model.cfg.embed_dim
    g = torch.Generator(device="cpu").manual_seed(batch)
    lower = Tier.parse("tiny") if tier.value != "tiny" else tier
    out = []
    for i in range(batch):
        n = lower.slots if ragged and i % 2 else (context or tier.slots)
        slots = torch.randn(n, D, generator=g) * 0.02
        out.append(Prompt(slots=slots.to(device=device, dtype=dtype)))
    return out


def aligner_hook(
    model: OCRModel, tier: Tier, batch: int, device: torch.device, cuda_graph: bool
) -> Any:
    """The bundled codec's :class:`AlignerFeed` on random page grids (a token hook)."""
    from opticmem.encoder.bundled import BUNDLED_TOKENIZER
    from opticmem.encoder.examples import token_bytes
    from opticmem.encoder.ocr import AlignerFeed
    from opticmem.encoder.token_cursor import TokenCursor
    from opticmem.render import RenderSettings

    try:
        from tokenizers import Tokenizer

        table = token_bytes(Tokenizer.from_file(str(BUNDLED_TOKENIZER)))
    except Exception:  # no tokenizers package or file: one byte per id
        table = [bytes([32 + i % 95]) for i in range(model.cfg.decoder.vocab_size)]
    param = next(model.parameters())
    g = tier.grid
    grid = torch.randn(batch, g, g, model.cfg.embed_dim, generator=torch.Generator().manual_seed(0))
    return AlignerFeed(model, grid.to(device=device, dtype=param.dtype), RenderSettings(),
                       TokenCursor(table, device), cuda_graph=cuda_graph)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


BASE_TOKENS = 2
"""Tokens of the reference run subtracted from every timing: prefill, the first choice and
one decoding step (with ``--modes graphs`` that step records the first graph)."""


def run_decode(case: Case, tokens: int) -> float:
    """Seconds for one :func:`generate` call of ``tokens`` new tokens per row."""
    cfg = replace(case.generation, max_new_tokens=tokens)
    hook: TokenHook | None = None
    extra = None
    if case.hook_factory is not None:
        feed = case.hook_factory(cfg.cuda_graphs)
        hook = feed
        extra = feed.prompt_extra(1 + case.prompts[0].slots.shape[0])
    sync(case.device)
    t0 = time.perf_counter()
    generate(case.model, case.prompts, cfg, token_hook=hook, prompt_extra=extra)
    sync(case.device)
    return time.perf_counter() - t0


def op_table(prof: Any) -> tuple[dict[str, OpStats], float, float, float, float]:
    """Per-name stats, top-level aten calls, all aten calls, kernel launches, device µs."""
    stats: dict[str, OpStats] = defaultdict(OpStats)
    python_ops = aten = launches = 0.0
    device_us = 0.0
    for ev in prof.events():
        name = ev.name
        dev = float(getattr(ev, "self_device_time_total", 0.0) or 0.0)
        if getattr(ev, "device_type", None) is not None and str(ev.device_type).endswith("CUDA"):
            device_us += dev
            continue
        s = stats[name]
        s.count += 1
        s.self_cpu_us += float(ev.self_cpu_time_total)
        s.self_device_us += dev
        if name.startswith("aten::"):
            aten += 1
            parent = ev.cpu_parent
            if parent is None or not parent.name.startswith("aten::"):
                python_ops += 1
        if "LaunchKernel" in name or name in ("cudaLaunchKernelExC", "cuLaunchKernelEx"):
            launches += 1
    return dict(stats), python_ops, aten, launches, device_us


def profile_steps(case: Case, steps: int, use_cprofile: bool) -> StepProfile:
    activities = [ProfilerActivity.CPU]
    if case.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    tables = []
    for n in (BASE_TOKENS, BASE_TOKENS + steps):
        with profile(activities=activities) as prof:
            run_decode(case, n)
        tables.append(op_table(prof))
    (a, pa, aa, la, da), (b, pb, ab, lb, db) = tables
    per: dict[str, OpStats] = {}
    for name in set(a) | set(b):
        x, y = a.get(name, OpStats()), b.get(name, OpStats())
        per[name] = OpStats(
            (y.count - x.count) / steps, (y.self_cpu_us - x.self_cpu_us) / steps,
            (y.self_device_us - x.self_device_us) / steps,
        )
    out = StepProfile(
        python_ops=(pb - pa) / steps, aten_ops=(ab - aa) / steps, launches=(lb - la) / steps,
        device_ms=(db - da) / steps / 1e3 if case.device.type == "cuda" else None, ops=per,
    )
    if use_cprofile:
        runs = []
        for n in (BASE_TOKENS, BASE_TOKENS + steps):
            pr = cProfile.Profile()
            pr.enable()
            run_decode(case, n)
            pr.disable()
            runs.append(pstats.Stats(pr).stats)  # type: ignore[attr-defined]
        first, last = runs
        rows = []
        for func, (_cc, nc, tt, _ct, _callers) in last.items():
            _, nc0, tt0, _, _ = first.get(func, (0, 0, 0.0, 0.0, {}))
            fname, line, fn = func
            where = f"{Path(fname).name}:{line}({fn})" if line else fn
            rows.append((where, (nc - nc0) / steps, (tt - tt0) / steps * 1e3))
        rows.sort(key=lambda r: -r[2])
        out.python = rows[:15]
    return out


def bench(case: Case, mode: str, steps: int, repeats: int, use_profiler: bool,
          use_cprofile: bool) -> Row:
    run_decode(case, BASE_TOKENS + 2)  # warm-up (allocator, kernels, packed weights)
    per_step = []
    for _ in range(repeats):
        # Both runs take the same path up to the reference length (prefill, the first
        # step's graph capture): their difference is ``steps`` steady decoding steps.
        t1 = run_decode(case, BASE_TOKENS + steps)
        tn = run_decode(case, BASE_TOKENS + 2 * steps)
        per_step.append((tn - t1) / steps)
    step = statistics.median(per_step)
    prof = profile_steps(case, steps, use_cprofile) if use_profiler else None
    return Row(mode, len(case.prompts), step * 1e3, len(case.prompts) / step, prof)


def report(rows: list[Row], header: str, top: int) -> str:
    lines = [header, ""]
    lines += [
        "| step | batch | ms / step | tokens/s | Python-level ops / step | aten ops / step "
        "| kernel launches / step | GPU busy ms / step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        p = r.prof
        dev = f"{p.device_ms:.2f}" if p is not None and p.device_ms is not None else "–"
        lines.append(
            f"| {r.mode} | {r.batch} | {r.step_ms:.2f} | {r.tokens_per_s:,.0f} | "
            + (f"{p.python_ops:.0f} | {p.aten_ops:.0f} | {p.launches:.0f} | {dev} |"
               if p is not None else "– | – | – | – |")
        )
    for r in rows:
        if r.prof is None:
            continue
        what = f"{r.mode}, batch {r.batch}"
        ops = [(n, s) for n, s in r.prof.ops.items() if s.count > 0.01]
        lines += ["", f"### {what}: top ops per step by self CPU time", "",
                  "| op | calls / step | self CPU µs / step | self GPU µs / step |",
                  "|---|---|---|---|"]
        for n, s in sorted(ops, key=lambda t: -t[1].self_cpu_us)[:top]:
            lines.append(
                f"| `{n}` | {s.count:.1f} | {s.self_cpu_us:.0f} | {s.self_device_us:.0f} |"
            )
        lines += ["", f"### {what}: top ops per step by calls", "",
                  "| op | calls / step | self CPU µs / step |", "|---|---|---|"]
        for n, s in sorted(ops, key=lambda t: -t[1].count)[:top]:
            lines.append(f"| `{n}` | {s.count:.1f} | {s.self_cpu_us:.0f} |")
        if r.prof.python:
            lines += ["", f"### {what}: Python functions by own time per step (cProfile)",
                      "", "| function | calls / step | own ms / step |", "|---|---|---|"]
            for where, calls, ms in r.prof.python:
                lines.append(f"| `{where}` | {calls:.1f} | {ms:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="official", help="official, bundled or test")
    ap.add_argument("--tiny-width", action="store_true",
                    help="decoder widths cut to 64 (same layers/experts/top-k): overhead only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bfloat16 (CUDA default) or float32 (CPU)")
    ap.add_argument("--batches", default="1,32,128")
    ap.add_argument("--steps", type=int, default=32, help="decoding steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default=None,
                    help="eager and/or graphs (GenerationConfig.cuda_graphs); "
                         "default: eager,graphs on CUDA, eager on CPU")
    ap.add_argument("--graph-width", type=int, default=256, help="GenerationConfig.graph_width")
    ap.add_argument("--tier", default="base", help="prompt: one page's slots at this tier")
    ap.add_argument("--context", type=int, default=0,
                    help="prompt length in vision slots instead of the tier's (a long context)")

    ap.add_argument("--ragged", action="store_true",
                    help="every other row a Tiny page (left padding, masked attention)")
    ap.add_argument("--aligner", action="store_true",
                    help="feed the model's layout aligner per step (bundled codec path)")
    ap.add_argument("--dispatch", default="auto",
                    choices=["auto", "cuda", "few", "gather", "dense", "grouped"],
                    help="MoE path; 'cuda' forces what auto picks on CUDA, on any device")
    ap.add_argument("--no-profile", action="store_true", help="timings only")
    ap.add_argument("--cprofile", action="store_true", help="also Python functions per step")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (
        torch.bfloat16 if device.type == "cuda" else torch.float32)
    modes = (args.modes or ("eager,graphs" if device.type == "cuda" else "eager")).split(",")
    if any(m not in ("eager", "graphs") for m in modes):
        ap.error(f"--modes takes eager and/or graphs, got {args.modes!r}")
    cfg = preset(args.preset)
    if args.tiny_width:
        cfg = tiny_width(cfg)
    if args.aligner and cfg.align is None:
        ap.error(f"preset {cfg.name} has no layout aligner")
    model = build_model(cfg, device=device, dtype=dtype, seed=0)
    tier = Tier.parse(args.tier)
    positions = (args.context or tier.slots) + 1
    batches = [int(b) for b in args.batches.split(",") if b]
    rows: list[Row] = []
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    header = (
        f"## Decode step profile — preset `{cfg.name}` "
        f"({model.num_parameters():,} params, random weights)\n\n"
        f"device: {where}; dtype {str(dtype).removeprefix('torch.')}; torch {torch.__version__}; "
        f"prompt: one {tier.value} page ({positions} positions)"
        f"{', ragged' if args.ragged else ''}; {args.steps} steps timed after {BASE_TOKENS} "
        f"(subtracted); MoE dispatch `{args.dispatch}`"
        f"{'; layout aligner fed per step' if args.aligner else ''}; no-repeat guard 30/90; "
        f"graph width {args.graph_width}"
    )
    print(header, flush=True)
    for batch in batches:
        if args.dispatch == "cuda":
            n_experts, top_k = cfg.decoder.routed_experts, cfg.decoder.experts_per_token
            MoE.dispatch = (
                "gather" if 2 * batch * top_k < n_experts
                else "dense" if batch <= MoE.dense_max_tokens else "grouped"
            )
        elif args.dispatch != "auto":
            MoE.dispatch = args.dispatch
        prompts = make_prompts(model, tier, batch, args.ragged, device, dtype, args.context)
        factory = (
            (lambda graphed, b=batch: aligner_hook(model, tier, b, device, graphed))
            if args.aligner
            else None
        )
        for mode in modes:
            generation = GenerationConfig(
                no_repeat_ngram_size=30, no_repeat_window=90, stop_token_ids=(-1,),
                cuda_graphs=mode == "graphs", graph_width=args.graph_width,
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            case = Case(model, prompts, generation, factory, device)
            row = bench(case, mode, args.steps, args.repeats, not args.no_profile, args.cprofile)
            rows.append(row)
            mem = (f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
                   if device.type == "cuda" else "")
            print(f"{mode} batch {batch}: {row.step_ms:.2f} ms/step, "
                  f"{row.tokens_per_s:,.0f} tokens/s{mem}", flush=True)
        MoE.dispatch = "auto"
    text = report(rows, header, args.top)
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
