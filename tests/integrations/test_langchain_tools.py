"""The recall tool: passages with provenance, the way back to originals, sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("langchain.agents")

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

from opticmem import ConfigurationError, InvalidSessionError, OpticalMemory
from opticmem.integrations import OpticalMemoryMiddleware, RecallTool, make_recall_tool
from tests.integrations.fakes import SYSTEM, capturing, user_text


@pytest.fixture
def memory() -> OpticalMemory:
    mem = OpticalMemory(codec=None, budget_tokens=2400, verbatim_turns=4)
    for i in range(30):
        mem.add("s", "user", user_text(i), ts=1_772_352_000 + 60 * i)
        mem.add("s", "assistant", f"Noted order {i}.", ts=1_772_352_030 + 60 * i)
    assert mem.store.page_count("s") >= 3
    return mem


def test_recall_gives_provenance_and_originals(memory: OpticalMemory) -> None:
    tool = make_recall_tool(memory, session="s", k=3, max_tokens=50_000)
    assert isinstance(tool, RecallTool) and tool.name == "recall"
    assert set(tool.tool_call_schema.model_json_schema()["properties"]) == {
        "query", "include_original"}
    text = tool.invoke({"query": "ORD-1003"})
    lines = text.splitlines()
    assert lines[0] == "3 passage(s) from memory session 's' for 'ORD-1003':"
    assert lines[1].startswith("[1] page 0 · turns 0–") and "2026-03-01 08:00" in lines[1]
    assert "· exact facts · confidence 1.00" in lines[1] and "ORD-1003" in lines[2]
    assert "original turns" not in text

    msg = tool.invoke({"type": "tool_call", "id": "c1", "name": "recall",
                       "args": {"query": "ORD-1003", "include_original": True}})
    assert isinstance(msg, ToolMessage) and msg.tool_call_id == "c1"
    assert f"  #6 user (2026-03-01 08:03 UTC): {user_text(3)[:40]}" in msg.content
    best = msg.artifact[0]
    assert best["session"] == "s" and best["page_no"] == 0 and best["source"] == "facts"
    assert best["first_seq"] <= 6 <= best["last_seq"]
    assert [t["seq"] for t in best["original"]] == list(range(best["first_seq"],
                                                              best["last_seq"] + 1))
    assert best["original"][6 - best["first_seq"]]["text"] == user_text(3)


def test_recall_spans_of_early_dates_are_whole() -> None:
    """Passage times were cut at the offsets of a four-digit year: one year-5 page read
    "5-04-21 20:26–26 UTC" on glibc, whose %Y does not pad the year."""
    mem = OpticalMemory(codec=None, verbatim_turns=2)
    t0 = -61_999_788_840.0  # 0005-04-21 20:26 UTC
    for i in range(40):
        mem.add("s", "user", f"Order ORD-{1000 + i} ships soon. " * 12, ts=t0 + 10 * i)
    tool = make_recall_tool(mem, session="s", k=1)
    first = tool.invoke({"query": "ORD-1001"}).splitlines()[1]
    assert "· 0005-04-21 20:26–20:" in first, first


def test_recall_async_matches_sync(memory: OpticalMemory) -> None:
    tool = make_recall_tool(memory, session="s")
    args = {"query": "ORD-1010", "include_original": True}
    assert asyncio.run(tool.ainvoke(args)) == tool.invoke(args)


def test_recall_without_a_match_or_session(memory: OpticalMemory) -> None:
    assert make_recall_tool(memory, session="s").invoke({"query": "zebra"}) == (
        "No passage in memory matches 'zebra'.")
    with pytest.raises(InvalidSessionError, match="thread id"):
        make_recall_tool(memory).invoke({"query": "ORD-1003"})
    with pytest.raises(ValueError, match="k must be"):
        make_recall_tool(memory, k=0)
    with pytest.raises(ValueError, match="max_original_chars must be ≥ 0, got -1"):
        make_recall_tool(memory, max_original_chars=-1)


def test_tool_counts_that_are_not_whole_numbers_raise_a_typed_error(memory: OpticalMemory) -> None:
    """k="3" (read from an environment variable) failed with a bare TypeError from "<",
    and k=True made a tool that returned one passage."""
    for bad in ({"k": "3"}, {"k": True}, {"k": None}, {"max_tokens": "600"},
                {"max_original_chars": 1.5}):
        with pytest.raises(ConfigurationError, match="must be a whole number"):
            make_recall_tool(memory, **bad)
    assert make_recall_tool(memory, k=np.int64(2), max_tokens=np.int32(600)).k == 2


def test_a_huge_query_is_not_echoed_whole(memory: OpticalMemory) -> None:
    """The answer repeats the query's first 200 characters, not 100,000 of them: the cap
    on the answer's tokens holds whether a passage matches or not."""
    tool = make_recall_tool(memory, session="s", k=1)  # cap: 600 tokens
    for query in ("zebra " * 20_000, "ORD-1003 " + "x" * 100_000):
        text = tool.invoke({"query": query})
        assert memory.cost_model.text_tokens(text) <= 600, text[:300]
        assert f"{query[:200]!r}… ({len(query):,} characters)" in text
    assert text.startswith("1 passage(s) from memory session 's' for 'ORD-1003 xxx")


def test_text_is_capped_in_tokens_and_artifact_is_whole(memory: OpticalMemory) -> None:
    tool = make_recall_tool(memory, session="s", k=3)  # default cap: budget / 4 = 600
    msg = tool.invoke({"type": "tool_call", "id": "c", "name": "recall",
                       "args": {"query": "ORD-1003", "include_original": True}})
    assert memory.cost_model.text_tokens(msg.content) <= 600
    assert msg.content.endswith("2 more passage(s) left out to stay within 600 tokens; ask a "
                                "narrower question, or without include_original]")
    assert "[1] page 0" in msg.content and "[2] page" not in msg.content
    assert len(msg.artifact) == 3 and all(p["original"] for p in msg.artifact)
    with pytest.raises(ValueError, match="max_tokens"):
        make_recall_tool(memory, max_tokens=0)



def test_the_note_of_what_was_left_out_stays_within_the_cap(memory: OpticalMemory) -> None:
    # When the passage after the last whole one was too short a cut to show, the note
    # was appended without checking it still fit: the text ran over max_tokens.
    for cap in range(100, 700, 4):
        tool = make_recall_tool(memory, session="s", k=5, max_tokens=cap)
        for include in (False, True):
            text = tool.invoke({"query": "ORD-1003 order", "include_original": include})
            assert memory.cost_model.text_tokens(text) <= cap, (cap, include)
            assert " passage(s) from memory session 's' for " in text.splitlines()[0]

def test_long_originals_are_clipped_in_text_only(memory: OpticalMemory) -> None:
    tool = make_recall_tool(memory, session="s", k=1, max_original_chars=50,
                            max_tokens=50_000)
    msg = tool.invoke({"type": "tool_call", "id": "c", "name": "recall",
                       "args": {"query": "ORD-1003", "include_original": True}})
    assert f"{user_text(3)[:50]}… [{len(user_text(3)) - 50:,} more characters]" in msg.content
    assert user_text(3) in [t["text"] for t in msg.artifact[0]["original"]]


def _recall_script(query: str) -> Iterator[AIMessage | str]:
    yield from (f"Noted #{i}." for i in range(30))
    yield AIMessage(content="", tool_calls=[{
        "name": "recall", "args": {"query": query, "include_original": True},
        "id": "call_r", "type": "tool_call"}])
    yield "Order 3 is on day 4."


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_recall_from_inside_an_agent_run(mode: str) -> None:
    memory = OpticalMemory(codec=None, budget_tokens=2400, verbatim_turns=4)
    model = capturing(_recall_script("ORD-1003"))
    # The tool comes with the middleware (recall_tool=True) and finds the session itself.
    agent: Any = create_agent(model, tools=[], system_prompt=SYSTEM,
                         middleware=[OpticalMemoryMiddleware(memory, recall_tool=True)],
                         checkpointer=InMemorySaver())
    config: Any = {"configurable": {"thread_id": "thread-9"}}
    for i in range(30):
        agent.invoke({"messages": [HumanMessage(user_text(i))]}, config)
    question = {"messages": [HumanMessage("When is ORD-1003 due?")]}
    if mode == "async":
        asyncio.run(agent.ainvoke(question, config))
    else:
        agent.invoke(question, config)
    state = agent.get_state(config).values["messages"]
    result = next(m for m in state if isinstance(m, ToolMessage))
    assert result.name == "recall" and result.tool_call_id == "call_r"
    assert "memory session 'thread-9'" in result.content
    assert user_text(3) in [t["text"] for p in result.artifact for t in p["original"]]
    # The model's second call of that run saw the result verbatim, after its own call.
    last = model.calls[-1]
    assert isinstance(last[-1], ToolMessage) and last[-1].content == result.content
    assert isinstance(last[-2], AIMessage) and last[-2].tool_calls[0]["name"] == "recall"
    assert state[-1].content == "Order 3 is on day 4."
