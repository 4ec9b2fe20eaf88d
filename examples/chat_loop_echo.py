"""A chat loop with optical memory and no model server: a local "echo" model.

    python examples/chat_loop_echo.py                 # 60 scripted user turns, budget 2000
    python examples/chat_loop_echo.py --stdin < notes.txt   # one user turn per line
    python examples/chat_loop_echo.py --codec bundled       # read pages back for recall

The echo model answers by describing what it was sent, so the output shows what
``with_memory`` hands a real model on every turn: how many messages, how many page
images, and what that costs against the budget (never more than the budget). At the end
it prints the context's make-up — pages per tier, verbatim turns, cost by part — and
what ``recall`` finds for a question about an early turn.

``--codec none`` (default) keeps it fast: pages are rendered and decay as usual, but
nothing reads them back, so recall searches the exact-facts lines only. ``--codec
bundled`` loads the bundled DeepSeek-OCR-style codec (seconds per page on a CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from importlib import resources
from typing import Any

from opticmem import OpticalMemory, message_tokens
from opticmem.integrations import with_memory

SYSTEM = "You are a project notebook. Keep track of decisions, people and numbers."


def scripted_turns(n: int) -> Iterator[str]:
    """The user's side of the bundled sample conversation (a project-planning chat)."""
    path = resources.files("opticmem").joinpath("data/sample_conversation.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    users = [json.loads(line)["text"] for line in lines if '"role": "user"' in line]
    for i in range(n):
        yield users[i % len(users)]


def stdin_turns() -> Iterator[str]:
    for line in sys.stdin:
        if line.strip():
            yield line.rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=60, help="scripted user turns (default 60)")
    ap.add_argument("--stdin", action="store_true", help="read user turns from stdin")
    ap.add_argument("--budget", type=int, default=2000, help="context budget in tokens")
    ap.add_argument("--codec", choices=("none", "bundled"), default="none")
    ap.add_argument("--ask", default="When is the Titan launch?", help="a question to recall")
    args = ap.parse_args(argv)

    memory = OpticalMemory(budget_tokens=args.budget, verbatim_turns=4,
                           codec=None if args.codec == "none" else "bundled")

    def echo(messages: list[dict[str, Any]]) -> str:
        """The "model": reports what it received."""
        images = sum(1 for m in messages if isinstance(m["content"], list)
                     for part in m["content"] if part["type"] == "image_url")
        cost = message_tokens(messages, memory.cost_model)
        print(f"  sent {len(messages):2d} messages, {images} page images, "
              f"{cost:5d}/{args.budget} tokens")
        return f"Noted ({len(messages)} messages in view): {messages[-1]['content'][:60]}"

    chat = with_memory(echo, memory, session="notebook", system=SYSTEM)
    turns = stdin_turns() if args.stdin else scripted_turns(args.turns)
    n = 0
    for n, text in enumerate(turns, 1):
        print(f"turn {n}: {text[:70]!r}")
        chat(text)

    ctx = memory.context("notebook")
    made = ctx.as_dict()
    print(f"\n{n} user turns, {len(memory.turns('notebook'))} stored turns")
    print("context make-up:")
    print(f"  pages per tier: {made['pages_per_tier']}")
    print(f"  verbatim turns: {len(ctx.turns)}")
    print(f"  cost: {made['cost']}")
    print(f"  compression on image pages: {made['compression']}")
    hits = memory.recall("notebook", args.ask, k=1)
    print(f"recall {args.ask!r}: " + (
        f"page {hits[0].page_no} ({hits[0].source}"
        f"{', ' + hits[0].tier.value if hits[0].tier else ''}): {hits[0].text[:100]!r}"
        if hits else "nothing on the pages yet"))
    memory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
