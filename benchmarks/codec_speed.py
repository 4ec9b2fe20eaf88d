"""Bundled codec speed: pages read per second (encode + greedy decode), per tier and batch.

Targets (issue 4): one Small page decoded on 2 CPU cores in ≤ 3 s; on an H100, ≥ 200
pages/s encode+decode batched at Small. Pages are held-out synthetic chat pages drawn by
the memory's renderer. Prints a Markdown table and writes it to ``--out``.

    python -m benchmarks.codec_speed --device cpu --tiers small --batches 1 --pages 3
    python -m benchmarks.codec_speed --device cuda --tiers small,tiny --batches 32,128
    python -m benchmarks.codec_speed --device cuda --batches 64 --cuda-graphs  # graphed steps
    python -m benchmarks.codec_speed --device cuda --batches 512 --pages 4096 --cuda-graphs \
        --continuous  # 512 rows in flight, refilled as pages end
    python -m benchmarks.codec_speed --device cpu --tiers base --batches 16 --pages 32 \
        --seed 31337 [--no-page-stop]  # the eval's pages; what stopping past the page saves
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from opticmem.encoder.bundled import load_bundled_codec
from opticmem.evaluation import heldout_pages
from opticmem.render import Tier, render_page


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=None, help="checkpoint dir (default: bundled)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiers", default="small")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--pages", type=int, default=0, help="pages per point (default: batch)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/codec_speed.md"))
    ap.add_argument("--cuda-graphs", action="store_true",
                    help="decode with GenerationConfig(cuda_graphs=True)")
    ap.add_argument("--continuous", action="store_true",
                    help="continuous batching: --batches sets the rows in flight, refilled as "
                         "pages end (use --pages well above the batch)")
    ap.add_argument("--unique-pages", type=int, default=512,
                    help="distinct pages drawn; longer runs cycle through them")
    ap.add_argument("--graph-width", type=int, default=None,
                    help="GenerationConfig.graph_width (attention width granularity)")
    ap.add_argument("--seed", type=int, default=2024, help="held-out pages' seed "
                    "(opticmem eval uses 31337)")
    ap.add_argument("--no-page-stop", action="store_true",
                    help="decode past a page's last row to the token limit "
                         "(OCRCodec.stop_past_page off), to measure what the stop saves")
    args = ap.parse_args()

    summaries = _Summaries()
    logging.getLogger("opticmem.encoder.continuous").addHandler(summaries)
    logging.getLogger("opticmem.encoder.continuous").setLevel(logging.DEBUG)
    codec = load_bundled_codec(args.weights, device=args.device)
    # Explicit either way: the bundled codec turns graphs on by itself on CUDA.
    codec.generation = replace(codec.generation, cuda_graphs=args.cuda_graphs)
    codec.continuous = args.continuous
    codec.stop_past_page = not args.no_page_stop
    if args.graph_width:
        codec.generation = replace(codec.generation, graph_width=args.graph_width)
    batches = [int(b) for b in args.batches.split(",")]
    total = max(max(batches), args.pages)
    pages, _ = heldout_pages(min(total, args.unique_pages), seed=args.seed, hangul=0)
    rows = []
    for tier in [Tier.parse(t) for t in args.tiers.split(",")]:
        drawn = [render_page(p, tier) for p in pages]  # greyscale, as the memory passes them
        images = [drawn[i % len(drawn)] for i in range(total)]
        for b in batches:
            codec.batch_size = b
            n = max(b, args.pages)
            mark = len(summaries.lines)
            codec.decode(codec.encode(images[:1], tier), max_new_tokens=8)  # warm-up
            del summaries.lines[mark:]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            encoded = codec.encode(images[:n], tier)  # ends on the host: no sync needed
            encode_s = time.perf_counter() - t0
            recs = codec.decode(encoded)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            summaries.lines[mark:] = [f"{tier.value}, batch {b}: {line}"
                                      for line in summaries.lines[mark:]]
            tokens = sum(r.tokens for r in recs)
            # A batch decodes until its longest page stops: its length bounds throughput.
            longest = max(r.tokens for r in recs)
            unfinished = sum(r.extra.get("finished", 1.0) == 0.0 for r in recs)
            rows.append((tier.value, b, n, dt / n, n / dt, tokens / dt, tokens / n, longest,
                         unfinished, encode_s))
            print(f"{tier.value} batch {b}: {n / dt:.1f} pages/s, {dt / n:.2f} s/page, "
                  f"{tokens / dt:.0f} tokens/s", flush=True)

    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    lines = [
        "# Bundled codec speed (encode + greedy decode)",
        "",
        f"Device: {dev}; torch {torch.__version__}; held-out synthetic chat pages"
        f"{'; CUDA-graph decoding steps' if args.cuda_graphs else ''}"
        f"{'; continuous batching (batch = rows in flight)' if args.continuous else ''}"
        f"{f'; graph width {codec.generation.graph_width}' if args.cuda_graphs else ''}"
        f"{'; no stop past the page' if args.no_page_stop else ''}; seed {args.seed}.",
        "",
        "| tier | batch | pages | s/page | pages/s | tokens/s | tokens/page | longest page "
        "| pages without EOS | encode s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {t} | {b} | {n} | {s:.3f} | {ps:.1f} | {ts:.0f} | {tp:.0f} | {lp} | {u} | {e:.1f} |"
        for t, b, n, s, ps, ts, tp, lp, u, e in rows
    ]
    if summaries.lines:
        lines += ["", "Continuous decoding, per call:", ""]
        lines += [f"* {line}" for line in summaries.lines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


class _Summaries(logging.Handler):
    """Keeps the continuous decoder's per-call summaries (steps, busy rows) for the table."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


if __name__ == "__main__":
    main()
