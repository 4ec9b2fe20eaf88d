"""A LangChain agent with optical-decay memory, offline: what the model sees, call by call.

    python examples/langchain_agent.py                   # 40 turns, no codec, ~2 s
    python examples/langchain_agent.py --turns 80 --budget 3000 --cost-model openai
    python examples/langchain_agent.py --codec bundled   # recall reads pages back (slow on CPU)

It builds ``langchain.agents.create_agent`` with

* ``OpticalMemoryMiddleware`` — records the conversation into an ``OpticalMemory`` and
  shows the model the system prompt, the memory's context (recent turns as text, older
  turns as page images at decaying tiers, exact facts beside them) and the run's own
  messages, within the token budget;
* the recall tool (``recall(query, include_original)``) — the way back to what a blurry
  page said;
* ``InMemorySaver`` — the checkpointer, which keeps the full conversation untouched.

The chat model is a small scripted stand-in (no network, no key): it answers each
message with a short acknowledgement, and when a message starts with "recall:" it calls
the recall tool and then answers from the result. Swap in any real chat model that
takes images (``init_chat_model("openai:gpt-5.5")``, ...) and the rest stays the same.

``--codec none`` (default) runs without the bundled codec: pages are still rendered and
shown as images (that needs no model), and recall searches the pages' exact-facts
sidecars. ``--codec bundled`` loads the bundled DeepSeek-OCR-style codec so recall also
searches what it reads back from each page — real, but seconds per page on a CPU.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver

from opticmem import OpticalMemory
from opticmem.integrations import ModelView, OpticalMemoryMiddleware

SYSTEM = "You are the project assistant for Project Titan. Answer briefly and exactly."
TOPICS = ["budget", "hiring", "launch", "security", "vendor", "design", "testing", "legal"]


class ScriptedChatModel(BaseChatModel):
    """An offline stand-in for a chat model (see the module docstring)."""

    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-example"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self  # the script knows its one tool

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        self.calls += 1
        last = messages[-1]
        if isinstance(last, ToolMessage):
            best = str(last.content).splitlines()[1:3]  # the best passage: provenance, text
            reply = AIMessage(content="From memory: " + " / ".join(best)[:160])
        elif isinstance(last, HumanMessage) and str(last.content).startswith("recall:"):
            query = str(last.content).removeprefix("recall:").strip()
            reply = AIMessage(content="", tool_calls=[{
                "name": "recall", "args": {"query": query, "include_original": True},
                "id": f"call_{self.calls}", "type": "tool_call"}])
        else:
            words = " ".join(str(last.content).split()[:8])
            reply = AIMessage(content=f"Noted: {words} …")
        return ChatResult(generations=[ChatGeneration(message=reply)])


def user_turn(i: int) -> str:
    """A planning message with the ids, dates and sums that pages must keep exact."""
    topic = TOPICS[i % len(TOPICS)]
    return (f"Task T-{100 + i}: move the {topic} review to 2026-04-{i % 28 + 1:02d}, owner "
            f"{['Mina', 'Joon', 'Ada', 'Luis'][i % 4]}, budget ${1200 + 75 * i:,}. "
            f"Notes on the {topic} track: keep the scope as agreed last week and report "
            f"blockers early. ") * 3


def describe(view: ModelView) -> str:
    tiers = view.pages_per_tier()
    shown = " ".join(f"{t}={n}" for t, n in tiers.items() if n)
    return (f"{view.tokens:5d}/{view.budget} tokens  (system {view.system_tokens}, history "
            f"{view.history_tokens}, in-flight {view.in_flight_tokens})  "
            f"messages {len(view.messages) + 1:2d}  pages: {shown or '-'}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--turns", type=int, default=40, help="user messages to send (default 40)")
    ap.add_argument("--budget", type=int, default=4096, help="tokens per model call")
    ap.add_argument("--cost-model", default="deepseek-ocr",
                    help="deepseek-ocr | deepseek-ocr-nominal | openai | anthropic")
    ap.add_argument("--codec", choices=["none", "bundled"], default="none",
                    help="none (default, fast) or bundled (recall reads pages back; slow)")
    args = ap.parse_args(argv)

    memory = OpticalMemory(budget_tokens=args.budget, cost_model=args.cost_model,
                           codec=None if args.codec == "none" else "bundled")
    views: list[ModelView] = []
    agent = create_agent(
        ScriptedChatModel(), tools=[], system_prompt=SYSTEM,
        middleware=[OpticalMemoryMiddleware(memory, recall_tool=True, on_view=views.append)],
        checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "titan-planning"}}

    messages = [user_turn(i) for i in range(args.turns)] + ["recall: T-103"]
    for n, text in enumerate(messages, 1):
        before = len(views)
        result = agent.invoke({"messages": [HumanMessage(text)]}, config)
        for view in views[before:]:
            print(f"run {n:3d}  {describe(view)}")
    print(f"\nlast answer: {result['messages'][-1].content}")

    state = agent.get_state(config).values["messages"]
    ctx = views[-1].context
    summary = {
        "model_calls": len(views),
        "max_tokens_sent": max(v.tokens for v in views),
        "budget": args.budget,
        "state_messages": len(state),
        "memory_turns": len(memory.turns("titan-planning")),
        "pages_per_tier": views[-1].pages_per_tier(),
        "compression": None if ctx is None or ctx.compression() is None
        else round(ctx.compression() or 0.0, 2),
    }
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


if __name__ == "__main__":
    main()
