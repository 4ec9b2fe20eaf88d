"""Aggregate synthetic page throughput of N worker processes (as a data loader runs them).

Each worker draws pages from its own seeded :func:`page_stream`; the run reports pages per
second over all workers (text and layout only, no pixels)::

    python -m benchmarks.synth_parallel --workers 13 --pages 400
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import sys
import time

from opticmem.encoder.synth import load_sources, page_stream


def _work(args: tuple[int, int]) -> tuple[int, float]:
    seed, pages = args
    load_sources("train")
    next(page_stream(10_000 + seed, "train"))  # warm up outside the timing
    t = time.perf_counter()
    n = sum(1 for _ in itertools.islice(page_stream(seed, "train"), pages))
    return n, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=13)
    ap.add_argument("--pages", type=int, default=400, help="pages per worker")
    args = ap.parse_args(argv)
    with mp.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_work, [(i, args.pages) for i in range(args.workers)])
    pages = sum(n for n, _ in results)
    slowest = max(t for _, t in results)
    print(f"{args.workers} workers: {pages} pages in {slowest:.2f} s → "
          f"{pages / slowest:.0f} pages/s ({1000 * slowest / args.pages:.1f} ms/page/worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
