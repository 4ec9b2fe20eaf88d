"""Redis turn-store speed: opticmem's RedisStore vs LangChain's RedisChatMessageHistory vs a
plain redis-py list, side by side on one throwaway ``redis-server``.

Three implementations store the same chat turns (same texts, 40-600 characters):

* ``RedisStore`` — :class:`opticmem.redis_store.RedisStore` (``append_turn``, and
  ``get_turns`` of the whole session); a second row runs it with ``ttl`` and
  ``max_turns`` set, where each append is a Lua script;
* ``RedisChatMessageHistory`` — langchain-community's list-based history
  (``add_message`` of a prebuilt ``HumanMessage``/``AIMessage``, and ``messages``);
* ``plain list`` — the physical floor: ``RPUSH`` of ``json.dumps`` of the turn, and
  ``LRANGE`` + ``json.loads`` of every item.

Measured:

* appends per second from one client, and from 8 client processes (spawned) at once,
  each writing its own session; the implementations take turns 100 appends at a time
  (in every process), so that noise from the machine hits them alike, and the median
  round is reported;
* read latency p50/p99 of a whole session of 100, 1,000 and 10,000 turns (reads
  alternate between the implementations too).

The server is started here on a free loopback port with AOF on and ``appendfsync
everysec`` (Redis' usual durable setting; ``always`` would make every write wait for the
disk, for all three alike). Run from the repository root::

    python -m benchmarks.redis_speed                 # writes benchmarks/results/redis_speed.md
    python -m benchmarks.redis_speed --smoke --out /tmp/redis_speed.md   # seconds, tests it
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import warnings

import redis
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

with warnings.catch_warnings():  # it is deprecated; measuring it is the point
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_community.chat_message_histories import RedisChatMessageHistory

from benchmarks import publish, redis_environment
from opticmem.redis_store import RedisStore
from tests.redis.server import RedisServer

DEFAULT_OUT = Path("benchmarks/results/redis_speed.md")
IMPLS = ("RedisStore", "RedisStore (ttl+cap, Lua)", "RedisChatMessageHistory", "plain list")
OURS, LANGCHAIN, FLOOR = "RedisStore", "RedisChatMessageHistory", "plain list"


def turn_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` chat-like turn texts of 40-600 characters (deterministic)."""
    rng = random.Random(seed)
    words = ["the", "page", "of", "a", "session", "decays", "from", "Large", "to", "Base",
             "Small", "and", "Tiny", "while", "recent", "turns", "stay", "verbatim;", "ids",
             "like", "7f3a-91c2", "numbers", "42.5", "survive", "in", "facts", "sidecar,",
             "서울", "emoji", "😀", "too"]
    out = []
    for i in range(n):
        length = rng.randint(40, 600)
        text = f"turn {i}:"
        while len(text) < length:
            text += " " + rng.choice(words)
        out.append(text[:length])
    return out


# --------------------------------------------------------------------------- implementations
class Impl:
    """One way of storing turns: open per process, append one turn, read a session."""

    name = ""

    def append(self, session: str, i: int, text: str) -> None:
        raise NotImplementedError

    def fill(self, session: str, texts: list[str]) -> None:
        for i, t in enumerate(texts):
            self.append(session, i, t)

    def read(self, session: str) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class Ours(Impl):
    def __init__(self, url: str, scripted: bool = False) -> None:
        self.name = IMPLS[1] if scripted else OURS
        kw: dict[str, Any] = {"ttl": 86_400, "max_turns": 10_000_000} if scripted else {}
        self.store = RedisStore.from_url(url, tenant="bench-lua" if scripted else "bench", **kw)

    def append(self, session: str, i: int, text: str) -> None:
        self.store.append_turn(session, "user" if i % 2 == 0 else "assistant", text, time.time())

    def fill(self, session: str, texts: list[str]) -> None:
        for lo in range(0, len(texts), 1000):
            self.store.append_turns(session, [
                ("user" if (lo + j) % 2 == 0 else "assistant", t, time.time(), None)
                for j, t in enumerate(texts[lo : lo + 1000])
            ])

    def read(self, session: str) -> int:
        return len(self.store.get_turns(session, 0, sys.maxsize))

    def close(self) -> None:
        self.store.close()


class LangChain(Impl):
    name = LANGCHAIN

    def __init__(self, url: str) -> None:
        self.url = url
        self.histories: dict[str, RedisChatMessageHistory] = {}
        self.messages: dict[int, BaseMessage] = {}

    def history(self, session: str) -> RedisChatMessageHistory:
        h = self.histories.get(session)
        if h is None:
            h = self.histories[session] = RedisChatMessageHistory(session, url=self.url)
        return h

    def message(self, i: int, text: str) -> BaseMessage:
        return HumanMessage(content=text) if i % 2 == 0 else AIMessage(content=text)

    def append(self, session: str, i: int, text: str) -> None:
        # the message object is built before the clock starts (see prepare)
        self.history(session).add_message(self.messages.get(i) or self.message(i, text))

    def prepare(self, texts: list[str]) -> None:
        self.messages = {i: self.message(i, t) for i, t in enumerate(texts)}

    def read(self, session: str) -> int:
        return len(self.history(session).messages)

    def close(self) -> None:
        for h in self.histories.values():
            h.redis_client.close()


class PlainList(Impl):
    name = FLOOR

    def __init__(self, url: str) -> None:
        self.r = redis.Redis.from_url(url)

    def append(self, session: str, i: int, text: str) -> None:
        turn = {"role": "user" if i % 2 == 0 else "assistant", "text": text, "ts": time.time()}
        self.r.rpush(f"floor:{session}", json.dumps(turn, ensure_ascii=False))

    def fill(self, session: str, texts: list[str]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for i, t in enumerate(texts):
            turn = {"role": "user" if i % 2 == 0 else "assistant", "text": t, "ts": time.time()}
            pipe.rpush(f"floor:{session}", json.dumps(turn, ensure_ascii=False))
        pipe.execute()

    def read(self, session: str) -> int:
        return len([json.loads(x) for x in self.r.lrange(f"floor:{session}", 0, -1)])

    def close(self) -> None:
        self.r.close()


def make(name: str, url: str) -> Impl:
    if name == OURS:
        return Ours(url)
    if name == IMPLS[1]:
        return Ours(url, scripted=True)
    if name == LANGCHAIN:
        return LangChain(url)
    if name == FLOOR:
        return PlainList(url)
    raise ValueError(f"unknown implementation {name!r}")


# --------------------------------------------------------------------------- measurements
def interleaved_appends(
    impls: dict[str, Impl], session: str, texts: list[str], chunk: int
) -> dict[str, float]:
    """Seconds each implementation spends appending ``texts`` to ``session``.

    The implementations take turns, ``chunk`` appends at a time (rotating who goes
    first), so that a burst of load from elsewhere on the machine hits them alike.
    """
    for impl in impls.values():
        if isinstance(impl, LangChain):
            impl.prepare(texts)
    spent = dict.fromkeys(impls, 0.0)
    names = list(impls)
    for c, lo in enumerate(range(0, len(texts), chunk)):
        order = names[c % len(names):] + names[: c % len(names)]
        for k in order:
            append = impls[k].append
            t0 = time.perf_counter()
            for i in range(lo, min(lo + chunk, len(texts))):
                append(session, i, texts[i])
            spent[k] += time.perf_counter() - t0
    return spent


def _writer(names: list[str], url: str, session: str, texts: list[str], chunk: int,
            barrier: Any, out: Any) -> None:
    impls = {k: make(k, url) for k in names}
    for impl in impls.values():  # connect (and load scripts) before the clock starts
        impl.append(f"{session}:warm", 0, "warm-up")
    barrier.wait()
    out.put(interleaved_appends(impls, session, texts, chunk))
    for impl in impls.values():
        impl.close()


def appends_parallel(names: list[str], url: str, procs: int, texts: list[str], chunk: int,
                     tag: str) -> dict[str, float]:
    """Appends per second with ``procs`` client processes writing at once, each into its
    own session, per implementation.

    Every process runs every implementation in turns of ``chunk`` appends (as
    :func:`interleaved_appends`), so all of them see the same load; an implementation's
    rate is the sum over processes of turns / time that process spent in it.
    """
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_writer,
                      args=(names, url, f"{tag}:p{p}", texts, chunk, barrier, out))
          for p in range(procs)]
    for p in ps:
        p.start()
    spent = [out.get(timeout=900) for _ in ps]
    for p in ps:
        p.join(timeout=60)
    return {k: sum(len(texts) / s[k] for s in spent) for k in names}


def read_latencies(impls: dict[str, Impl], sessions: dict[str, str], n: int,
                   samples: int) -> dict[str, list[float]]:
    """Whole-session read times (s), alternating implementations sample by sample."""
    out: dict[str, list[float]] = {k: [] for k in impls}
    for k, impl in impls.items():  # warm-up, and check that everything is there
        got = impl.read(sessions[k])
        if got != n:
            raise RuntimeError(f"{k} read {got} turns, expected {n}")
    for _ in range(samples):
        for k, impl in impls.items():
            t0 = time.perf_counter()
            impl.read(sessions[k])
            out[k].append(time.perf_counter() - t0)
    return out


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


@dataclass
class Results:
    single: dict[str, list[float]]
    parallel: dict[str, list[float]]
    reads: dict[int, dict[str, list[float]]]


def run(url: str, args: argparse.Namespace) -> Results:
    texts = turn_texts(max(args.turns, args.parallel_turns, max(args.sizes)))
    names = list(IMPLS)
    impls = {k: make(k, url) for k in names}
    interleaved_appends(impls, "warm", texts[:50], 10)  # connections, script caches
    single: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.rounds):
        spent = interleaved_appends(impls, f"single:{r}", texts[: args.turns], args.chunk)
        for k in names:
            single[k].append(args.turns / spent[k])
        print(f"  1 client, round {r + 1}/{args.rounds}: "
              + ", ".join(f"{k} {single[k][-1]:,.0f}/s" for k in names), flush=True)

    parallel: dict[str, list[float]] = {k: [] for k in names}
    for r in range(args.parallel_rounds):
        rates = appends_parallel(names, url, args.procs, texts[: args.parallel_turns],
                                 args.chunk, f"par:{r}")
        for k in names:
            parallel[k].append(rates[k])
        print(f"  {args.procs} processes, round {r + 1}/{args.parallel_rounds}: "
              + ", ".join(f"{k} {rates[k]:,.0f}/s" for k in names), flush=True)

    reads: dict[int, dict[str, list[float]]] = {}
    for n in args.sizes:
        sessions = {k: f"read:{n}" for k in names}
        for k in names:
            impls[k].fill(sessions[k], texts[:n])
        samples = max(args.min_samples, args.read_budget // n)
        reads[n] = read_latencies(impls, sessions, n, samples)
        print(f"  reads of {n:,} turns ({samples} samples each): "
              + ", ".join(f"{k} p50 {1e3 * pct(reads[n][k], 50):.2f} ms" for k in names),
              flush=True)
    for impl in impls.values():
        impl.close()
    return Results(single, parallel, reads)


# --------------------------------------------------------------------------- report
def report(res: Results, args: argparse.Namespace, env: str) -> str:
    med = statistics.median
    lines = [
        "# Redis turn store: speed", "",
        env, "",
        f"Appends: one client appends {args.turns:,} turns per implementation and round "
        f"({args.rounds} rounds); {args.procs} spawned client processes append at once, "
        f"each {args.parallel_turns:,} turns per implementation into its own session "
        f"({args.parallel_rounds} rounds). In both, the implementations take turns "
        f"{args.chunk} appends at a time, so load from elsewhere on this shared machine "
        f"hits them alike; a rate is turns / time spent in that implementation (summed over "
        f"the processes); medians over rounds. LangChain's message objects are built "
        f"before the clock starts (the reading most favourable to it). Reads: a whole "
        f"session (all its turns, parsed into records or messages), samples alternating "
        f"the implementations.", "",
        "## Appends (turns per second, higher is better)", "",
        f"| implementation | 1 client | {args.procs} processes "
        f"| time per append vs floor (1 / {args.procs}) |",
        "|---|---:|---:|---:|",
    ]
    fs, fp = med(res.single[FLOOR]), med(res.parallel[FLOOR])
    for k in IMPLS:
        s, p = med(res.single[k]), med(res.parallel[k])
        lines.append(f"| {k} | {s:,.0f} | {p:,.0f} | {fs / s:.2f}× / {fp / p:.2f}× |")
    lines += ["", "## Whole-session read latency (ms, lower is better)", "",
              "| implementation | " + " | ".join(f"{n:,} turns p50 / p99" for n in res.reads)
              + " |", "|---|" + "---:|" * len(res.reads)]
    for k in IMPLS:
        cells = [f"{1e3 * pct(v[k], 50):.2f} / {1e3 * pct(v[k], 99):.2f}"
                 for v in res.reads.values()]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")

    ok_s = fs / med(res.single[OURS]) <= 1.5
    ok_p = fp / med(res.parallel[OURS]) <= 1.5
    beats_append = (med(res.single[OURS]) > med(res.single[LANGCHAIN])
                    and med(res.parallel[OURS]) > med(res.parallel[LANGCHAIN]))
    beats_read = all(pct(v[OURS], 50) < pct(v[LANGCHAIN], 50) for v in res.reads.values())
    lines += [
        "", "## Targets", "",
        f"- appends within 1.5× of the plain-list floor: 1 client "
        f"{'met' if ok_s else 'MISSED'} ({fs / med(res.single[OURS]):.2f}×), "
        f"{args.procs} processes {'met' if ok_p else 'MISSED'} "
        f"({fp / med(res.parallel[OURS]):.2f}×)",
        f"- faster than RedisChatMessageHistory on appends: "
        f"{'met' if beats_append else 'MISSED'}; on reads (p50, every size): "
        f"{'met' if beats_read else 'MISSED'}",
        "",
        "`RedisStore` appends are one `RPUSH` (the list index is the seq), the same single "
        "command as the floor, plus building the JSON record and the returned `Turn`. With "
        "`ttl` or `max_turns` set each append is one Lua script instead (cap check, push "
        "and TTL refresh atomically). Its reads are one `LRANGE` parsed with a single "
        "`json.loads` over the whole batch into `Turn` records. "
        "`RedisChatMessageHistory.messages` builds LangChain message objects from each item.",
        "",
    ]
    return "\n".join(lines)


def environment(url: str) -> str:
    return redis_environment(url, " (a shared machine: rounds alternate implementations so "
                                  "its noise hits them alike)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown results file")
    ap.add_argument("--turns", type=int, default=3000, help="turns per single-client round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=100,
                    help="appends per turn when implementations alternate")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--parallel-turns", type=int, default=1500,
                    help="turns per process and implementation")
    ap.add_argument("--parallel-rounds", type=int, default=3)
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                    default=[100, 1000, 10_000], help="session sizes for reads")
    ap.add_argument("--read-budget", type=int, default=400_000,
                    help="turns read per implementation and size (sets the sample count)")
    ap.add_argument("--min-samples", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (tests the script)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.turns, args.rounds, args.procs, args.parallel_turns, args.chunk = 50, 2, 2, 30, 10
        args.parallel_rounds, args.sizes, args.read_budget, args.min_samples = 1, [10, 100], 0, 5

    with tempfile.TemporaryDirectory(prefix="opticmem-bench-") as tmp, \
            RedisServer(Path(tmp), appendfsync="everysec", forbid_keys=False) as server:
        env = environment(server.url)
        print(env, flush=True)
        res = run(server.url, args)
    text = report(res, args, env)
    print()
    publish(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
