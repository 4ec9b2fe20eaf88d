"""How fast the memory core is, on one CPU core, without any model time.

Measures:

- **render**: Large pages drawn per second (layout excluded), PNG encoding, and the
  resampling of a Large master to each tier;
- **add()**: p50/p99 latency of appending one turn (packing and sealing included;
  rendering and encoding are deferred by design) to sessions already holding 1k, 10k
  and 100k turns, in the in-process store and the SQLite file store (``synchronous=FULL``:
  every turn is on disk before ``add`` returns);
- **context()**: p50/p99 of assembling the context (policy, prices, budget plan; no
  images) for the same sessions — it must not grow with the history (target < 5 ms at
  100k turns);
- **peak memory** of a process holding a 100k-turn session, per store.

Prints a table and writes ``benchmarks/results/memory_speed.md``::

    python -m benchmarks.memory_speed [--sizes 1000,10000,100000] [--samples 1000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "memory_speed.md"

_VOCAB = """the team should review the plan for march and keep scope small because estimates
slipped last time; we agreed on milestones budget design launch data migration hiring loop
retrospective risks owner tickets deadline"""
WORDS = _VOCAB.split()


def chat_turns(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat turns of 10–120 words (~330 characters on average), one minute apart."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 120)))
        if i % 7 == 0:
            words += f" Ticket OPS-{1000 + i} is due 2026-0{1 + i % 9}-1{i % 10}, ${40 + i:,}."
        out.append({"role": "user" if i % 2 == 0 else "assistant", "text": words,
                    "ts": 1_772_352_000.0 + 60.0 * i})
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def timed(fn: Callable[[], object], n: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this thread's) seconds of ``n`` calls. On a shared machine the
    wall-clock tail includes time the process was not scheduled; the CPU time does not."""
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return wall, cpu


# --------------------------------------------------------------------------- render


def bench_render(pages: int) -> dict[str, float]:
    from opticmem.render import ORDER, TurnText, draw_page, layout_pages, png_bytes, to_tier

    turns = [TurnText(str(t["role"]), str(t["text"])) for t in chat_turns(pages * 20, seed=1)]
    layouts = layout_pages(turns)[:pages]
    t0 = time.perf_counter()
    masters = [draw_page(p) for p in layouts]
    draw_s = (time.perf_counter() - t0) / len(masters)
    out = {"pages": float(len(masters)), "draw_ms": draw_s * 1000, "draw_pages_s": 1 / draw_s}
    for tier in ORDER:
        t0 = time.perf_counter()
        imgs = [to_tier(m, tier) for m in masters]
        out[f"resample_{tier.value}_ms"] = (time.perf_counter() - t0) / len(masters) * 1000
        t0 = time.perf_counter()
        for im in imgs:
            png_bytes(im)
        out[f"png_{tier.value}_ms"] = (time.perf_counter() - t0) / len(masters) * 1000
    return out


# --------------------------------------------------------------------------- add / context


def open_memory(kind: str, tmp: Path, name: str) -> Any:
    from opticmem import InMemoryStore, OpticalMemory, SQLiteStore

    store = InMemoryStore() if kind == "memory" else SQLiteStore(tmp / f"{name}.db")
    return OpticalMemory(store, codec=None, budget_tokens=8192)


def bench_session(kind: str, size: int, samples: int, tmp: Path) -> dict[str, float]:
    mem = open_memory(kind, tmp, f"{kind}-{size}")
    turns = chat_turns(size + samples)
    t0 = time.perf_counter()
    for lo in range(0, size, 2000):
        mem.add_many("bench", turns[lo : min(lo + 2000, size)])
    build_s = time.perf_counter() - t0
    todo = iter(turns[size : size + samples])

    def add_one() -> None:
        t = next(todo)
        mem.add("bench", t["role"], t["text"], ts=t["ts"])

    add, add_cpu = timed(add_one, samples)
    cold_mem = open_memory(kind, tmp, f"{kind}-{size}") if kind == "sqlite" else None
    if cold_mem is None:  # a fresh memory over the same in-process store: cold caches
        from opticmem import OpticalMemory

        cold_mem = OpticalMemory(mem.store, codec=None, budget_tokens=8192)
    a = time.perf_counter()
    cold_mem.context("bench")
    cold = time.perf_counter() - a
    gc.collect()
    mem.context("bench")  # price the pages the timed adds sealed
    ctx_times, ctx_cpu = timed(lambda: mem.context("bench"), max(500, samples))
    ctx = mem.context("bench")
    pages = mem.store.page_count("bench")
    mem.close()
    return {
        "turns": float(size), "pages": float(pages), "build_s": build_s,
        "add_p50_ms": statistics.median(add) * 1000, "add_p99_ms": pct(add, 0.99) * 1000,
        "add_cpu_p99_ms": pct(add_cpu, 0.99) * 1000,
        "ctx_p50_ms": statistics.median(ctx_times) * 1000,
        "ctx_p99_ms": pct(ctx_times, 0.99) * 1000, "ctx_cold_ms": cold * 1000,
        "ctx_cpu_p99_ms": pct(ctx_cpu, 0.99) * 1000,
        "ctx_cost": float(int(ctx.cost)),
    }


# --------------------------------------------------------------------------- memory


def _status_mb(field: str) -> float:
    """A ``/proc/self/status`` figure in MB (``VmRSS`` now, ``VmHWM`` the peak since exec;
    ``ru_maxrss`` would include the parent's peak, inherited across fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_child(kind: str, size: int, path: str) -> None:
    """Runs in a fresh interpreter: build the session, print RSS figures as JSON."""
    from opticmem.render import load_atlas

    load_atlas()  # the glyph atlas is loaded by any memory that packs pages
    base = _status_mb("VmHWM")
    rss0 = _status_mb("VmRSS")
    turns = chat_turns(size)
    text_mb = sum(len(t["text"]) for t in turns) / 1e6
    gen = max(0.0, _status_mb("VmRSS") - rss0)
    mem = open_memory(kind, Path(path), "peak")
    for lo in range(0, size, 2000):
        mem.add_many("bench", turns[lo : lo + 2000])
    del turns
    gc.collect()
    mem.context("bench")
    print(json.dumps({"base_mb": base, "gen_mb": gen, "peak_mb": _status_mb("VmHWM"),
                      "rss_mb": _status_mb("VmRSS"), "text_mb": text_mb}))


def bench_peak(kind: str, size: int, tmp: Path) -> dict[str, float]:
    root = str(Path(__file__).parents[1])
    code = (f"import sys; sys.path.insert(0, {root!r}); from benchmarks.memory_speed import "
            f"_peak_child; _peak_child({kind!r}, {size}, {str(tmp)!r})")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- report


def _load() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def report(render: dict[str, float], sessions: list[tuple[str, dict[str, float]]],
           peaks: list[tuple[str, int, dict[str, float]]], load: str) -> str:
    lines = [
        "# Memory core speed",
        "",
        f"Machine: {machine()}; load average {load}. One process, one core for the timed "
        "work; no model (rendering, encoding and decoding of pages are deferred; see the "
        "module docstring). The machine is shared, so tails (p99) carry other processes' "
        "noise.",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        "`python -m benchmarks.memory_speed`.",
        "",
        "## Rendering (per page, one core)",
        "",
        "| step | Large | Base | Small | Tiny |",
        "|---|---|---|---|---|",
        f"| draw the Large master from its layout | {render['draw_ms']:.1f} ms "
        f"({render['draw_pages_s']:.0f} pages/s) | – | – | – |",
        "| resample the master to the tier | "
        + " | ".join(f"{render[f'resample_{t}_ms']:.1f} ms" for t in
                     ("large", "base", "small", "tiny")) + " |",
        "| encode the tier image as PNG | "
        + " | ".join(f"{render[f'png_{t}_ms']:.1f} ms" for t in
                     ("large", "base", "small", "tiny")) + " |",
        "",
        "## add() and context() by session size",
        "",
        "Sessions of *turns* turns were built with `add_many`, then timed: `add()` of each "
        "of the next 1,000 turns (~330 characters; validation, durable append, packing and "
        "sealing — *pages* is the count after them), and `context()` "
        "(budget 8192, DeepSeek-OCR prices, default rank policy) with warm in-process caches; "
        "*cold* is the first `context()` of a fresh memory over the same store (it prices "
        "the 16 pages it can show). p99 is given as wall-clock time and as CPU time of the "
        "calling thread (which leaves out time the process waited for a core).",
        "",
        "| store | turns | pages | add p50 | add p99 (CPU) | context p50 | context p99 (CPU) "
        "| context cold | build |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in sessions:
        lines.append(
            f"| {kind} | {int(r['turns']):,} | {int(r['pages']):,} | {r['add_p50_ms']:.2f} ms | "
            f"{r['add_p99_ms']:.2f} ms ({r['add_cpu_p99_ms']:.2f}) | {r['ctx_p50_ms']:.3f} ms | "
            f"{r['ctx_p99_ms']:.3f} ms ({r['ctx_cpu_p99_ms']:.3f}) | "
            f"{r['ctx_cold_ms']:.1f} ms | {r['build_s']:.1f} s |")
    lines += ["", "## Memory of a process holding one session", "",
              "A fresh interpreter generates the turns, ingests them with `add_many` in batches "
              "of 2,000, drops its own list and assembles a context. *Baseline* is Python + "
              "opticmem + the glyph atlas before any turn exists; the generated turn list "
              "(*input*) is part of the peak.", "",
              "| store | turns | turn text | baseline | input list | peak RSS | RSS after |",
              "|---|---|---|---|---|---|---|"]
    for kind, size, r in peaks:
        lines.append(f"| {kind} | {size:,} | {r['text_mb']:.1f} MB | {r['base_mb']:.0f} MB | "
                     f"{r['gen_mb']:.0f} MB | {r['peak_mb']:.0f} MB | {r['rss_mb']:.0f} MB |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--samples", type=int, default=1000, help="timed add() calls per session")
    ap.add_argument("--render-pages", type=int, default=40)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    start_load = _load()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print("render …", file=sys.stderr)
        render = bench_render(args.render_pages)
        sessions = []
        for size in sizes:
            for kind in ("memory", "sqlite"):
                print(f"{kind} session of {size:,} turns …", file=sys.stderr)
                sessions.append((kind, bench_session(kind, size, args.samples, tmp)))
        peaks = []
        for kind in ("memory", "sqlite"):
            print(f"peak memory, {kind}, {max(sizes):,} turns …", file=sys.stderr)
            peaks.append((kind, max(sizes), bench_peak(kind, max(sizes), tmp)))
    text = report(render, sessions, peaks, f"{start_load} at start, {_load()} at end")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
