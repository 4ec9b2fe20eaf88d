"""A chat loop with optical memory against any OpenAI-compatible endpoint.

    export OPENAI_API_KEY=sk-...  OPENAI_MODEL=gpt-4o-mini   # OpenAI itself, or
    export OPENAI_BASE_URL=http://localhost:8000/v1  OPENAI_MODEL=my-vlm   # vLLM, Ollama…
    python examples/chat_loop_openai.py                  # interactive; empty line quits
    python examples/chat_loop_openai.py -m "Plan Titan" -m "What did I just say?"

The model must accept images (older turns arrive as page images in ``image_url`` parts).
Prices are counted with the ``openai`` cost model (512-pixel tiles); pass ``--cost-model``
for another. The conversation is kept in ``--store`` (default ``sqlite:///chat.db``), so
a later run continues it. Without ``OPENAI_MODEL`` and one of ``OPENAI_API_KEY`` /
``OPENAI_BASE_URL`` it says what to set and exits (status 0). No ``openai`` package
needed: the request is one JSON POST through the standard library.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from opticmem import OpticalMemory
from opticmem.integrations import with_memory
from opticmem.integrations.chat_loop import reply_text

SYSTEM = "You are a helpful assistant with a long memory. Earlier turns may be page images."


def endpoint() -> tuple[str, str, str] | None:
    """``(base_url, api_key, model)`` from the environment, or ``None`` if unconfigured."""
    key = os.environ.get("OPENAI_API_KEY", "")
    base = os.environ.get("OPENAI_BASE_URL", "")
    model = os.environ.get("OPENAI_MODEL", "")
    if not model or not (key or base):
        return None
    return (base or "https://api.openai.com/v1").rstrip("/"), key, model


def completions(
    base: str, key: str, model: str, timeout: float
) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """A chat function: POST the messages to ``{base}/chat/completions``, return the JSON
    response (``with_memory`` reads its first choice)."""

    def call(messages: list[dict[str, Any]]) -> dict[str, Any]:
        body = json.dumps({"model": model, "messages": messages}).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{base}/chat/completions", body, headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            data: dict[str, Any] = json.load(resp)
            return data

    return call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-m", "--message", action="append", help="a user turn (repeatable); "
                    "without any, read turns interactively")
    ap.add_argument("--session", default="me")
    ap.add_argument("--store", default="sqlite:///chat.db", help="store URL")
    ap.add_argument("--budget", type=int, default=16_000, help="context budget in tokens")
    ap.add_argument("--cost-model", default="openai")
    ap.add_argument("--codec", choices=("none", "bundled"), default="none")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = ap.parse_args(argv)

    found = endpoint()
    if found is None:
        print("No endpoint configured: set OPENAI_MODEL and OPENAI_API_KEY (OpenAI), or "
              "OPENAI_MODEL and OPENAI_BASE_URL (any OpenAI-compatible server). Nothing to do.")
        return 0
    base, key, model = found
    memory = OpticalMemory(args.store, budget_tokens=args.budget, cost_model=args.cost_model,
                           codec=None if args.codec == "none" else "bundled")
    chat = with_memory(completions(base, key, model, args.timeout), memory,
                       session=args.session, system=SYSTEM)
    print(f"{model} at {base}; session {args.session!r} in {args.store} "
          f"({len(memory.turns(args.session))} turns so far)")
    turns = iter(args.message) if args.message else iter(lambda: input("you> "), "")
    try:
        for text in turns:
            try:
                reply = chat(text)
            except (urllib.error.URLError, TimeoutError) as exc:
                # The user turn is already recorded: the next run starts from it.
                print(f"request failed: {exc}", file=sys.stderr)
                return 1
            print(f"{model}> {reply_text(reply)}")  # a refusal has content None
    except (EOFError, KeyboardInterrupt):
        print()
    ctx = memory.context(args.session)
    print(f"[context: {ctx.cost.total}/{ctx.budget} tokens, pages per tier "
          f"{ctx.pages_per_tier()}]")
    memory.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
