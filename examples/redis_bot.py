"""An asyncio bot serving many concurrent sessions through one Redis, each session with
its own optical memory.

    redis-server &                                   # any Redis 7, no modules
    python examples/redis_bot.py --redis-url redis://localhost:6379/0 --sessions 50

``--redis-url`` may also be the store URL the workers take, with opticmem's settings in
its query (``redis://…/0?tenant=acme&ttl=86400``): its ``tenant`` then stands for
``--tenant``, and a different ``--tenant`` beside it is refused.

One :class:`~opticmem.OpticalMemory` over one :class:`~opticmem.redis_store.RedisStore`
serves every session: the memory is keyed by session id, and the store keeps each
session's turns, pages and images under its own hash-tagged keys
(``opticmem:{tenant:session}:…``), so any number of bot processes can share the server.
One ``with_memory`` wrapper answers all sessions (``session=`` per call).

The "model" is a local echo with a simulated latency, so this runs offline; swap in a
real async client to make it a real bot. Each simulated user sends ``--turns`` messages
from the bundled sample conversation. At the end the bot prints a summary: sessions,
stored turns (earlier runs' included; the rate counts this run's), pages per tier over
all sessions, and the largest prompt any call sent (never above the budget). ``--fresh``
first deletes the sessions a previous run left.

With ``--codec bundled --recollect queue`` the bot reads no page back itself: each page it
seals at Large or shows at a new tier goes onto the tenant's Redis Stream, for workers to read on
a GPU machine (``opticmem worker "redis://…?tenant=redis-bot"``; the summary's ``queue``
says what they have left to do, ``opticmem queue URL`` too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from opticmem import OpticalMemory, message_tokens
from opticmem.errors import StoreURLError
from opticmem.integrations import with_memory
from opticmem.redis_store import RedisStore

SYSTEM = "You are a support bot. Be brief."
TENANT = "redis-bot"


def store_url(redis_url: str, tenant: str | None) -> str:
    """``redis_url`` as a store URL (:meth:`RedisStore.from_store_url`) naming the tenant:
    ``tenant`` (default :data:`TENANT`) added unless the URL's query names one already.
    A ``tenant`` that differs from the URL's raises :class:`ValueError`."""
    base, mark, fragment = redis_url.partition("#")
    query = dict(parse_qsl(urlsplit(base).query, keep_blank_values=True))
    if "tenant" in query:
        if tenant is not None and tenant != query["tenant"]:
            raise ValueError(f"--tenant {tenant} conflicts with ?tenant={query['tenant']} in "
                             "--redis-url: give the tenant once")
        return redis_url
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}{urlencode({'tenant': tenant or TENANT})}{mark}{fragment}"


def user_lines() -> list[str]:
    """The user's side of the bundled sample conversation."""
    path = resources.files("opticmem").joinpath("data/sample_conversation.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in rows if r["role"] == "user"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    store = RedisStore.from_store_url(args.store_url)
    memory = OpticalMemory(store, budget_tokens=args.budget, verbatim_turns=4,
                           codec=None if args.codec == "none" else "bundled",
                           recollect=args.recollect)
    sessions = [f"user-{i}" for i in range(args.sessions)]
    if args.fresh:  # every session an earlier run left, however many it served
        earlier = [s for s in await store.asessions() if re.fullmatch(r"user-\d+", s)]
        await asyncio.gather(*(memory.adelete_session(s) for s in {*sessions, *earlier}))
    largest = 0

    async def model(messages: list[dict[str, Any]]) -> dict[str, Any]:
        nonlocal largest
        largest = max(largest, message_tokens(messages, memory.cost_model))
        await asyncio.sleep(args.latency)  # a real model would think here
        return {"role": "assistant", "content": f"Got it: {messages[-1]['content'][:80]}"}

    chat = with_memory(model, memory, system=SYSTEM)
    lines = user_lines()
    gate = asyncio.Semaphore(args.concurrency)

    async def user(i: int) -> None:
        for t in range(args.turns):
            async with gate:
                await chat(lines[(7 * i + t) % len(lines)], session=sessions[i])

    start = time.perf_counter()
    await asyncio.gather(*(user(i) for i in range(args.sessions)))
    elapsed = time.perf_counter() - start

    tiers: dict[str, int] = {}
    turns = 0
    for s in sessions:
        ctx = await memory.acontext(s)
        for tier, n in ctx.pages_per_tier().items():
            tiers[tier] = tiers.get(tier, 0) + n
        turns += await store.aturn_count(s)
    queue = None
    if args.recollect == "queue":
        from opticmem.recollect_queue import RedisRecollectQueue

        stats = RedisRecollectQueue.for_store(store).stats()
        queue = {"waiting": stats.waiting, "taken": stats.taken, "dead": stats.dead}
    await memory.aclose()
    await store.aclose()  # closes this loop's async client too; close() would leak it
    added = 2 * args.sessions * args.turns  # a user turn and its reply per message
    return {"sessions": len(sessions), "turns": turns, "turns_added": added,
            "pages_per_tier": tiers, "largest_prompt": largest, "budget": args.budget,
            "seconds": round(elapsed, 2), "turns_per_second": round(added / elapsed, 1),
            "queue": queue}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default="redis://localhost:6379/0",
                    help="the Redis server, or a store URL with ?tenant=… and other settings")
    ap.add_argument("--tenant", help=f"key namespace on the server (default: the URL's "
                                     f"?tenant=, else {TENANT})")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--turns", type=int, default=80, help="user messages per session")
    ap.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    ap.add_argument("--latency", type=float, default=0.005, help="echo model's seconds")
    ap.add_argument("--budget", type=int, default=2000, help="context budget in tokens")
    ap.add_argument("--codec", choices=("none", "bundled"), default="none")
    ap.add_argument("--recollect", choices=("lazy", "queue"), default="lazy",
                    help="queue: leave reading pages back to `opticmem worker` processes "
                         "(needs --codec bundled)")
    ap.add_argument("--fresh", action="store_true", help="delete earlier runs' sessions")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args(argv)
    if args.recollect == "queue" and args.codec == "none":
        ap.error("--recollect queue needs --codec bundled (the workers' codec)")
    try:
        args.store_url = store_url(args.redis_url, args.tenant)
    except ValueError as exc:
        ap.error(str(exc))

    try:
        summary = asyncio.run(run(args))
    except StoreURLError as exc:  # a bad setting in the URL's query (?ttl=soon)
        ap.error(str(exc))
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"sessions: {summary['sessions']}")
    print(f"turns stored: {summary['turns']} ({summary['turns_added']} this run, "
          f"{summary['turns_per_second']}/s over {summary['seconds']} s)")
    tiers = summary["pages_per_tier"]
    print("pages per tier: " + ", ".join(f"{k} {v}" for k, v in tiers.items()))
    print(f"largest prompt sent: {summary['largest_prompt']} tokens "
          f"(budget {summary['budget']})")
    if summary["queue"] is not None:
        q = summary["queue"]
        print(f"queued for workers: {q['waiting']} waiting, {q['taken']} taken, "
              f"{q['dead']} dead")
    return 0


if __name__ == "__main__":
    sys.exit(main())
