"""How fast the synthetic generator makes page layouts, per CPU core.

Training needs ~300 pages/s from ~13 loader workers, so text generation plus layout must
cost at most ~20 ms per page per core (drawing the pixels is measured elsewhere). This
times, in one process (one core), for each split:

- ``generate``: conversations only (``generate_conversation``),
- ``layout``: laying those conversations out into pages (``layout_turn`` + ``paginate``),
- ``page_stream``: the loader's actual path, end to end,

and reports milliseconds per page, pages per second and characters per page. Prints a
table and writes ``benchmarks/results/synth_speed.md``::

    python -m benchmarks.synth_speed [--pages 600]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import sys
import time
from pathlib import Path

from benchmarks import publish
from opticmem.encoder.synth import (
    SPLITS,
    Split,
    generate_conversation,
    load_sources,
    page_stream,
)
from opticmem.render import RenderSettings, layout_turn, paginate

RESULTS = Path(__file__).resolve().parent / "results" / "synth_speed.md"


def measure(split: Split, pages: int, settings: RenderSettings,
            repeat: int = 3) -> dict[str, float]:
    load_sources(split)  # loading is once per worker; keep it out of the timings
    next(page_stream(0, split, settings))  # warm caches (atlas, sampling tables)

    rng = random.Random(12345)
    t0 = time.perf_counter()
    convs = [generate_conversation(rng, split) for _ in range(max(1, pages // 2))]
    t_gen = time.perf_counter() - t0

    t1 = time.perf_counter()
    n_pages = 0
    layouts = []
    for turns in convs:
        ps = paginate([layout_turn(t, settings) for t in turns], settings)
        layouts.extend(ps)
        n_pages += len(ps)
    t_lay = time.perf_counter() - t1
    chars = sum(len(p.transcript) for p in layouts)

    t_stream = float("inf")
    for rep in range(repeat):  # best of `repeat`: timings on a shared machine are noisy
        t2 = time.perf_counter()
        stream = list(itertools.islice(page_stream(1 + rep, split, settings), pages))
        t_stream = min(t_stream, time.perf_counter() - t2)
    full = sum(p.complete for p in stream)
    return {
        "pages": n_pages,
        "gen_ms": 1000 * t_gen / n_pages,
        "layout_ms": 1000 * t_lay / n_pages,
        "stream_ms": 1000 * t_stream / len(stream),
        "stream_pps": len(stream) / t_stream,
        "chars": chars / n_pages,
        "stream_chars": sum(len(p.transcript) for p in stream) / len(stream),
        "complete": full / len(stream),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3, help="page_stream timing: best of N")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--machine", default="", help="describe the machine in the report")
    ap.add_argument("--title", default="Synthetic page generation speed (one core)")
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing")
    args = ap.parse_args(argv)
    settings = RenderSettings()
    rows = {s: measure(s, args.pages, settings, args.repeat) for s in SPLITS}

    src = load_sources("train").origin
    lines = [
        f"## {args.title}" if args.append else f"# {args.title}",
        "",
        f"Machine: {args.machine or platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; sources: `{Path(src).parent.name}/`; "
        f"{args.pages} pages per split (page_stream: best of {args.repeat}); "
        f"default `RenderSettings` "
        f"({settings.columns}×{settings.rows} cells).",
        "",
        "| split | generate ms/page | layout ms/page | page_stream ms/page | pages/s/core "
        "| chars/page | complete pages |",
        "|---|---|---|---|---|---|---|",
    ]
    for s, r in rows.items():
        lines.append(
            f"| {s} | {r['gen_ms']:.2f} | {r['layout_ms']:.2f} | {r['stream_ms']:.2f} | "
            f"{r['stream_pps']:.0f} | {r['stream_chars']:.0f} | {100 * r['complete']:.0f}% |")
    worst = max(r["stream_ms"] for r in rows.values())
    lines += [
        "",
        f"Budget: ≤ 20 ms/page/core (300 pages/s from 13 workers). Measured worst case "
        f"{worst:.1f} ms/page, which projects to {13 * 1000 / worst:.0f} pages/s from 13 workers "
        f"(text and layout only; pixels are drawn separately).",
        "",
    ]
    text = "\n".join(lines)
    publish(text, args.out, append=args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
