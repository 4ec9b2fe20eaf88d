"""Which CPU decoding path reads held-out pages fastest, and what it holds.

A decoding step on CPU can run through the modules or straight on the fp16 weight copies
(:class:`~opticmem.encoder.copy_step.CopyStep`, ``GenerationConfig.copy_step``).
Through the modules, the bundled codec's MoE layers have four CPU inference paths
(:mod:`opticmem.encoder.moe`): ``few``/``dense`` (the chosen experts' products one by one,
or every expert in fp32 batched matmuls), ``fused`` (every expert in two fp16 products)
and ``sets`` (a copy per set of experts a token can be routed to: the chosen experts and
the shared ones in two fp16 products); the copy step runs the same two. This decodes the same
held-out Small pages with each in turn, round after round in one process, so that a
machine whose speed drifts (shared cloud VMs do, by 30% or more within an hour) weighs on
every path alike; it reports each path's wall and CPU seconds per page (minimum and median
over the rounds), whether every path read the same text, and the fp16 copies each path
keeps.

Prints a table and writes ``benchmarks/results/cpu_decode_paths.md``::

    OMP_NUM_THREADS=2 python -m benchmarks.cpu_decode_paths [--batch 1] [--rounds 5]
    OMP_NUM_THREADS=2 python -m benchmarks.cpu_decode_paths --batch 16 --rounds 3 \
        --out benchmarks/results/cpu_decode_paths_b16.md

(Before the copy step this was ``benchmarks/cpu_moe_paths.py``; its tables are in
``cpu_moe_paths.md`` and ``cpu_moe_paths_b16.md``.)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks import publish
from opticmem.encoder.bundled import load_bundled_codec
from opticmem.encoder.moe import MoE
from opticmem.encoder.ocr import OCRCodec
from opticmem.evaluation import heldout_pages
from opticmem.render import Tier, render_page

RESULTS = Path(__file__).parent / "results" / "cpu_decode_paths.md"


def path_switches(codec: OCRCodec) -> dict[str, Callable[[], None]]:
    """Each CPU path as a setting of :class:`MoE`'s thresholds (``auto`` dispatch) and of
    ``codec``'s ``copy_step``."""
    def use(sets: int, fused: int, copy_step: bool) -> Callable[[], None]:
        def switch() -> None:
            MoE.cpu_set_max_tokens, MoE.cpu_fused_max_tokens = sets, fused
            codec.generation = replace(codec.generation, copy_step=copy_step)
        return switch

    defaults = (MoE.cpu_set_max_tokens, MoE.cpu_fused_max_tokens)
    return {"modules: expert by expert (few) or dense": use(0, 0, False),
            "modules: fused": use(0, defaults[1], False),
            "modules: sets for ≤ 2 tokens, else fused": use(*defaults, False),
            "default: the same on the copy step": use(*defaults, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="pages decoded together")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2024, help="held-out pages' seed")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    codec = load_bundled_codec(device="cpu")
    codec.batch_size = args.batch
    pages, _ = heldout_pages(args.batch, seed=args.seed, hangul=0)
    tokens = codec.encode([render_page(p, Tier.SMALL) for p in pages], Tier.SMALL)
    layers = [m for m in codec.model.decoder.modules() if isinstance(m, MoE)]
    paths = path_switches(codec)
    wall: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, list[float]] = {name: [] for name in paths}
    texts: dict[str, list[str]] = {}
    copies: dict[str, float] = {}
    for name, switch in paths.items():  # every copy made before any timing
        switch()
        before = {id(m): set(m._set_halves) for m in layers}
        texts[name] = [r.text for r in codec.decode(tokens)]
        new = [(m, set(m._set_halves) - before[id(m)]) for m in layers]
        copies[name] = sum(
            2 * sum(t.numel() for t in m.expert_set_weights(e)) for m, made in new for e in made
        ) / 2**20
    for _ in range(args.rounds):
        for name, switch in paths.items():
            switch()
            t, c = time.perf_counter(), time.process_time()
            codec.decode(tokens)
            wall[name].append((time.perf_counter() - t) / args.batch)
            cpu[name].append((time.process_time() - c) / args.batch)
            print(f"{name}: {wall[name][-1]:.3f} s/page", flush=True)
    reference = next(iter(texts.values()))
    chars = sum(len(t) for t in reference)
    lines = [
        "| path | wall s/page, min | median | CPU s/page, min | median | same text | "
        "fp16 expert copies it made (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in paths:
        lines.append(
            f"| {name} | {min(wall[name]):.3f} | {statistics.median(wall[name]):.3f} | "
            f"{min(cpu[name]):.3f} | {statistics.median(cpu[name]):.3f} | "
            f"{'yes' if texts[name] == reference else 'NO'} | {copies[name]:.1f} |")
    text = "\n".join([
        "# CPU decoding paths: held-out Small pages (bundled codec)",
        "",
        f"Device: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads; torch {torch.__version__}; {args.batch} page(s) of seed {args.seed} "
        f"decoded together ({chars} characters read), {args.rounds} rounds, the paths "
        "interleaved in each; decode only (the pages encoded once). CPU time counts both "
        "threads. Copies are counted by the path that made them: the copy step reads the "
        "ones the sets path made.",
        "",
        *lines,
        "",
    ])
    publish(text, args.out)


if __name__ == "__main__":
    main()
