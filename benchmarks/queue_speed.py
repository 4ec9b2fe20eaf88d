"""Recollection queue speed: what the Redis plumbing costs bots and workers.

Bots made with ``recollect="queue"`` put pages on a Redis Stream; ``opticmem worker``
reads them (:mod:`opticmem.recollect_queue`, :mod:`opticmem.recollect_worker`). A GPU
reads ~255 Small pages/s (``codec_speed_h200_*.md``), so the question is whether
everything around the model keeps up. Measured on one throwaway ``redis-server``:

* **bot side**: per-turn latency of ``add`` (p50/p99 over all turns, page seals
  included) and of ``context``, lazy mode against queue mode — the queue adds one
  pipelined ``XADD`` round trip when a page seals or reaches a new tier;
* **worker side**: pages/s of one worker whose codec costs nothing (a digest of the
  pixels), split into drawing (Large master, resampling to the tier, PNG encoding),
  the codec, and the rest (queue commands, page records and blobs in the store), at two
  batch sizes. Drawing is work a real worker does too; the rest is the queue's overhead.

Sessions replay the packaged sample conversation (386 turns), each with its own prefix
on every turn so no two sessions draw the same page. Run from the repository root::

    python -m benchmarks.queue_speed                  # writes benchmarks/results/queue_speed.md
    python -m benchmarks.queue_speed --smoke --out /tmp/q.md   # seconds; tests the script
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import redis.connection

from benchmarks import publish, redis_environment
from opticmem import OpticalMemory, Tier
from opticmem.encoder.codec import Recollection, VisionTokens
from opticmem.recollect_queue import RedisRecollectQueue
from opticmem.recollect_worker import RecollectWorker
from opticmem.redis_store import RedisStore
from tests.redis.server import RedisServer

DEFAULT_OUT = Path("benchmarks/results/queue_speed.md")


class DigestCodec:
    """A codec that costs (almost) nothing: it reads a page back as a digest of its pixels."""

    name = "digest"
    render_settings = None

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        out = []
        for img in images:
            grid = np.zeros((tier.grid, tier.grid, 1), np.float32)
            grid.flat[:8] = np.frombuffer(
                hashlib.sha256(np.asarray(img).tobytes()).digest()[:8], np.uint8)
            out.append(VisionTokens(tier, grid, codec=self.name))
        return out

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        return [Recollection(bytes(t.grid.flat[:8].astype(np.uint8)).hex(), t.tier, 1.0, 8,
                             codec=self.name) for t in tokens]


class Timed:
    """A codec that times another's encode and decode calls."""

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self.seconds = 0.0

    @property
    def name(self) -> str:
        return str(self.codec.name)

    @property
    def render_settings(self) -> Any:
        return self.codec.render_settings

    def encode(self, images: Sequence[Any], tier: Tier) -> list[VisionTokens]:
        t0 = time.perf_counter()
        try:
            return list(self.codec.encode(images, tier))
        finally:
            self.seconds += time.perf_counter() - t0

    def decode(self, tokens: Sequence[VisionTokens], *,
               max_new_tokens: int | None = None) -> list[Recollection]:
        t0 = time.perf_counter()
        try:
            return list(self.codec.decode(tokens, max_new_tokens=max_new_tokens))
        finally:
            self.seconds += time.perf_counter() - t0


def make_codec(choice: str, device: str | None) -> Any:
    """``digest`` (free), or the bundled codec on ``device``."""
    if choice == "digest":
        return DigestCodec()
    from opticmem.encoder.bundled import load_bundled_codec

    return load_bundled_codec(device=device)


def sample_turns() -> list[tuple[str, str, float]]:
    path = resources.files("opticmem").joinpath("data/sample_conversation.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [(r["role"], r["text"], float(r["ts"])) for r in rows]


def pct(values: Sequence[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, round(q * (len(values) - 1)))]


def bot_side(url: str, mode: str, sessions: int, turns: Sequence[tuple[str, str, float]],
             tenant: str, codec: Any) -> dict[str, float | int]:
    """Per-call latency of add and context for one bot in ``mode``."""
    store = RedisStore.from_url(url, tenant=tenant)
    # The worker's codec, never called here: queued pages name it; lazy mode reads nothing.
    mem = OpticalMemory(store, codec=codec, recollect=mode)  # type: ignore[arg-type]
    adds: list[float] = []
    contexts: list[float] = []
    for s in range(sessions):
        sid = f"{tenant}-{s}"
        for i, (role, text, ts) in enumerate(turns):
            t0 = time.perf_counter()
            mem.add(sid, role, f"[{sid}] {text}", ts=ts)
            adds.append(time.perf_counter() - t0)
            if i % 8 == 7:  # a bot builds a context every few turns
                t0 = time.perf_counter()
                mem.context(sid)
                contexts.append(time.perf_counter() - t0)
    queued = RedisRecollectQueue.for_store(store).stats().waiting if mode == "queue" else 0
    mem.close()
    store.close()
    return {"add_p50": pct(adds, 0.5), "add_p99": pct(adds, 0.99),
            "ctx_p50": pct(contexts, 0.5), "ctx_p99": pct(contexts, 0.99), "queued": queued,
            "adds": len(adds)}


def worker_side(url: str, tenant: str, batch: int, draw: int,
                model: Any) -> dict[str, float | int]:
    """Drain the tenant's queue with one worker reading with ``model``; time its parts."""
    store = RedisStore.from_url(url, tenant=tenant)
    codec = Timed(model)
    if hasattr(model, "batch_size"):
        model.batch_size = batch
    worker = RecollectWorker(store, codec, batch_size=batch, draw_workers=draw)
    if draw:  # start the drawing processes before the clock does
        list(worker._pool.map(abs, range(draw)))  # type: ignore[union-attr]
    drawing = 0.0
    art = worker._artefacts
    real = art._tier_images_of

    def timed(items: Any) -> Any:
        nonlocal drawing
        t0 = time.perf_counter()
        try:
            return real(items)
        finally:
            drawing += time.perf_counter() - t0

    art._tier_images_of = timed  # type: ignore[method-assign]
    with counting_round_trips() as trips:
        t0 = time.perf_counter()
        totals = worker.run(once=True)
        wall = time.perf_counter() - t0
    worker.close()
    store.close()
    pages = totals.read
    return {"pages": pages, "wall": wall, "drawing": drawing, "codec": codec.seconds,
            "rest": wall - drawing - codec.seconds, "batches": totals.batches,
            "round_trips": trips[0]}


@contextlib.contextmanager
def counting_round_trips() -> Iterator[list[int]]:
    """Count what this process sends to Redis and then waits on: a command, or a whole
    pipeline (redis-py packs a pipeline into one send). The drawing processes send
    nothing."""
    count = [0]
    real = redis.connection.AbstractConnection.send_packed_command

    def send(self: Any, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        real(self, *args, **kwargs)

    redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
    try:
        yield count
    finally:
        redis.connection.AbstractConnection.send_packed_command = real  # type: ignore[method-assign]


def report(bots: dict[str, dict[str, float | int]],
           workers: list[tuple[int, int, dict[str, Any]]],
           env: str, args: argparse.Namespace) -> str:
    ms = 1000.0
    codec_note = ("a codec that costs nothing" if args.codec == "digest" else
                  f"the bundled codec on {args.device or 'the best device'}")
    lines = [
        "# Recollection queue speed", "", env, "",
        f"`python -m benchmarks.queue_speed --sessions {args.sessions} --turns {args.turns} "
        f"--batches {','.join(map(str, args.batches))} "
        f"--draw-workers {','.join(map(str, args.draw_workers))} --codec {args.codec}"
        f"{f' --device {args.device}' if args.device else ''}`",
        "",
        f"## Bot side ({args.sessions} sessions × {args.turns} turns, a context every 8 turns)",
        "",
        "| recollect | add p50 | add p99 | context p50 | context p99 | pages queued |",
        "|---|---|---|---|---|---|",
    ]
    for mode, b in bots.items():
        lines.append(f"| {mode} | {b['add_p50'] * ms:.2f} ms | {b['add_p99'] * ms:.2f} ms | "
                     f"{b['ctx_p50'] * ms:.2f} ms | {b['ctx_p99'] * ms:.2f} ms | {b['queued']} |")
    lines += [
        "", f"## Worker side (one worker, {codec_note})", "",
        "| batch | drawing processes | pages | pages/s | drawing ms/page | codec ms/page "
        "| queue + store ms/page | Redis round trips/page |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for batch, draw, w in workers:
        n = max(1, w["pages"])
        lines.append(f"| {batch} | {draw or 'none (in the worker)'} | {w['pages']} | "
                     f"{w['pages'] / w['wall']:.0f} | "
                     f"{w['drawing'] / n * ms:.2f} | {w['codec'] / n * ms:.2f} | "
                     f"{w['rest'] / n * ms:.2f} | {w['round_trips'] / n:.2f} |")
    lines += [
        "",
        "Drawing is the Large master, its resampling to the tier and the PNG, cached in the "
        "store (with processes: the wait for them, and the pixels' way back): a real worker "
        "does it too, and on one core it costs more than a GPU's reading of the page. "
        "\"Queue + store\" is every Redis command of the step (XAUTOCLAIM, XREADGROUP, "
        "page records, blob reads and writes, XACK+XDEL) and Python around them; its round "
        "trips (a command, or a pipeline) are what a Redis across a network multiplies by "
        "its latency.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--sessions", type=int, default=6, help="sessions per bot")
    ap.add_argument("--turns", type=int, default=386, help="turns per session (≤ 386)")
    ap.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")],
                    default=[32, 128], help="worker batch sizes")
    ap.add_argument("--draw-workers", type=lambda s: [int(x) for x in s.split(",")],
                    default=[0, 2], help="drawing processes of the worker")
    ap.add_argument("--codec", choices=("digest", "bundled"), default="digest",
                    help="digest: a codec that costs nothing (the plumbing alone)")
    ap.add_argument("--device", default=None, help="the bundled codec's device")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests the script)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.sessions, args.turns, args.batches, args.draw_workers = 1, 40, [8], [0]
    turns = sample_turns()[: args.turns]
    model = make_codec(args.codec, args.device)
    with tempfile.TemporaryDirectory(prefix="opticmem-bench-") as tmp, \
            RedisServer(Path(tmp), appendfsync="everysec", forbid_keys=False) as server:
        env = redis_environment(server.url)
        print(env, flush=True)
        bot_side(server.url, "queue", 1, turns[:40], "warm-up", model)  # fonts, caches, imports
        bots: dict[str, dict[str, float | int]] = {}
        for mode in ("lazy", "queue"):
            print(f"bot, recollect={mode} …", flush=True)
            bots[mode] = bot_side(server.url, mode, args.sessions, turns, f"b{mode}", model)
        workers = []
        for batch in args.batches:  # the same pages, queued again for each variant
            for draw in args.draw_workers:
                tenant = f"w{batch}-{draw}"
                print(f"worker, batch {batch}, {draw} drawing processes …", flush=True)
                bot_side(server.url, "queue", args.sessions, turns, tenant, model)
                workers.append((batch, draw, worker_side(server.url, tenant, batch, draw, model)))
    text = report(bots, workers, env, args)
    print()
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
