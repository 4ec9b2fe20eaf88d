"""Property tests that try to break the invariants of architecture.md:

* a context never costs more than its budget (or the newest turn alone does not fit, and
  then — only then — ``BudgetError``);
* decay is monotone: an older page is never sharper than a newer one, and adding turns
  never promotes a page (nor brings back one that left the context);
* assembly is deterministic: the same store and settings give the same context.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from opticmem import (
    AgeDecay,
    BudgetError,
    InMemoryStore,
    OpticalMemory,
    PressureDecay,
    RankDecay,
    RenderSettings,
    cost_model,
    message_tokens,
)
from opticmem.context import Context, lead_note_tokens

WORDS = ["plan", "Titan", "March", "budget", "$4,200", "2026-03-04", "서울", "中文", "😀",
         "review", "ABC-123", "the", "a", "milestone", "https://example.com/x", "עברית",
         "\t", "\n", "verylongwordwithoutanybreakpointsatall" * 3]

texts = st.one_of(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=80).map(" ".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300).map(
        lambda s: "x" + s),
).filter(lambda s: any(c.isalnum() for c in s))

policies = st.sampled_from([
    "rank", RankDecay(1, 1, 1, 1), RankDecay(0, 2, 0, 3), "pressure", PressureDecay(5),
    AgeDecay(large=120, base=600, small=1800, tiny=3600, max_pages=12),
])
models = st.sampled_from(["deepseek-ocr", "deepseek-ocr-nominal", "openai", "anthropic"])

SETTINGS = RenderSettings(max_rows=4)  # small pages: many seals per example


def tiers(ctx: Context) -> dict[int, int]:
    return {p.page_no: p.tier.rank for p in ctx.pages}


def check(ctx: Context, mem: OpticalMemory, session: str) -> None:
    assert int(ctx.cost) <= ctx.budget
    ranks = [p.tier.rank for p in ctx.pages]  # oldest first
    assert all(a >= b for a, b in itertools.pairwise(ranks)), ranks
    if ctx.pages:  # what is in context is the newest run of pages
        nos = [p.page_no for p in ctx.pages]
        assert nos == list(range(nos[0], nos[0] + len(nos)))
        assert nos[-1] == mem.store.page_count(session) - 1 or ctx.pages == ()
    assert ctx.turns[-1].seq == mem.store.turn_count(session) - 1  # newest turn always shown
    # the messages open with a user message (Anthropic and Bedrock refuse a reply first)
    roles = [m["role"] for m in ctx.messages() if m["role"] != "system"]
    assert roles[0] != "assistant", roles


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    policy=policies,
    model=models,
    budget=st.integers(min_value=60, max_value=5000),
    window=st.integers(min_value=1, max_value=5),
)
def test_budget_and_monotone_decay_hold_as_turns_arrive(
    data: st.DataObject, policy: Any, model: str, budget: int, window: int
) -> None:
    now = [1_772_352_000.0]
    mem = OpticalMemory(codec=None, cost_model=model, policy=policy, budget_tokens=budget,
                        verbatim_turns=window, render_settings=SETTINGS,
                        clock=lambda: now[0])
    prev: dict[int, int] | None = None
    prev_pages = 0
    for i in range(data.draw(st.integers(min_value=1, max_value=40), label="turns")):
        text = data.draw(texts, label=f"text{i}")
        mem.add("s", data.draw(st.sampled_from(["user", "assistant", "tool"])), text)
        now[0] += data.draw(st.floats(min_value=0, max_value=900), label="dt")
        try:
            ctx = mem.context("s")
        except BudgetError:
            newest = mem.turns("s")[-1]
            m = cost_model(model)
            own = m.message_overhead + m.text_tokens(newest.text)
            if newest.role == "assistant":  # shown alone, a reply needs the lead note
                own += lead_note_tokens(m)
            # the turn may be shown as its continuation, which is at least as long
            assert own > budget or any(p.last_seq == newest.seq for p in mem.pages("s"))
            event("budget error")
            continue
        check(ctx, mem, "s")
        event("pressure" if ctx.demotions else "policy only")
        if mem.store.page_count("s") > prev_pages and prev is not None and ctx.demotions:
            event("page sealed under pressure")
        cur = tiers(ctx)
        if prev is not None:
            for page_no in range(prev_pages):
                before, after = prev.get(page_no), cur.get(page_no)
                if before is None:
                    assert after is None, f"page {page_no} came back into context"
                elif after is not None:
                    assert after >= before, f"page {page_no} was promoted"
        prev, prev_pages = cur, mem.store.page_count("s")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.lists(texts, min_size=1, max_size=30),
    policy=policies,
    model=models,
    budget=st.integers(min_value=200, max_value=6000),
)
def test_assembly_is_deterministic(turns: list[str], policy: Any, model: str, budget: int) -> None:
    store = InMemoryStore()
    kw: dict[str, Any] = dict(codec=None, cost_model=model, policy=policy, budget_tokens=budget,
                              render_settings=SETTINGS, verbatim_turns=2,
                              clock=lambda: 1_772_400_000.0)
    a = OpticalMemory(store, **kw)
    for i, t in enumerate(turns):
        a.add("s", "user" if i % 2 else "assistant", t, ts=1_772_352_000.0 + 60 * i)
    try:
        first = a.context("s").as_dict()
    except BudgetError:
        return
    b = OpticalMemory(store, **kw)  # a fresh memory (another process) over the same store
    assert b.context("s").as_dict() == first
    assert a.context("s").as_dict() == first
    c = OpticalMemory(InMemoryStore(), **kw)  # the same turns replayed elsewhere
    for i, t in enumerate(turns):
        c.add("s", "user" if i % 2 else "assistant", t, ts=1_772_352_000.0 + 60 * i)
    assert c.pages("s") == a.pages("s")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(turns=st.lists(texts, min_size=4, max_size=24), model=models,
       budget=st.integers(min_value=300, max_value=4000))
def test_messages_cost_what_the_context_says(turns: list[str], model: str, budget: int) -> None:
    mem = OpticalMemory(codec=None, cost_model=model, budget_tokens=budget,
                        render_settings=SETTINGS, verbatim_turns=2)
    mem.add_many("s", [("user", t) for t in turns])
    try:
        ctx = mem.context("s")
    except BudgetError:
        return
    assert message_tokens(ctx.messages(), cost_model(model)) == int(ctx.cost) <= budget


def _blocks(content: Any) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _own(message: dict[str, Any]) -> dict[str, Any]:
    """What a message holds besides its role and content (its name, tool call id)."""
    return {k: v for k, v in message.items() if k not in ("role", "content")}


def _merges(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["role"] == b["role"] != "tool" and not _own(a) and not _own(b))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    turns=st.lists(st.tuples(st.sampled_from(["user", "user", "assistant", "tool", "system"]),
                             texts, st.booleans()), min_size=6, max_size=40),
    model=models,
    budget=st.integers(min_value=150, max_value=5000),
    fmt=st.sampled_from(["langchain", "openai"]),
)
def test_merged_messages_alternate_lose_nothing_and_cost_no_more(
    turns: list[tuple[str, str, bool]], model: str, budget: int, fmt: Any
) -> None:
    # Bedrock's Converse refuses two messages of one role in a row; merge_runs=True merges
    # each run, as content blocks, and only per-message overhead is saved
    mem = OpticalMemory(codec=None, cost_model=model, budget_tokens=budget,
                        render_settings=SETTINGS, verbatim_turns=2)
    for i, (role, text, named) in enumerate(turns):
        meta = ({"name": "ann"} if role == "user" else {"tool_call_id": f"c{i}", "name": "f"}
                if role == "tool" else None) if named else None
        mem.add("s", role, text, meta=meta)
    try:
        ctx = mem.context("s")
    except BudgetError:
        return
    plain = ctx.messages(fmt)
    merged = ctx.messages(fmt, merge_runs=True)
    event("merged" if len(merged) < len(plain) else "nothing to merge")
    event("pages" if ctx.pages else "no page")
    # alternation: two messages of one role follow each other only where one of them
    # holds fields of its own or is a tool message (left for the caller)
    assert not any(_merges(a, b) for a, b in itertools.pairwise(merged))
    assert len(plain) - len(merged) == sum(_merges(a, b) for a, b in itertools.pairwise(plain))
    # nothing lost or reordered
    assert [b for m in merged for b in _blocks(m["content"])] == [
        b for m in plain for b in _blocks(m["content"])]
    assert [_own(m) for m in merged if _own(m)] == [_own(m) for m in plain if _own(m)]
    # the cost falls by one overhead per message merged away: never above the budget
    m = cost_model(model)
    saved = (len(plain) - len(merged)) * m.message_overhead
    assert message_tokens(merged, m) == message_tokens(plain, m) - saved
    assert message_tokens(merged, m) <= int(ctx.cost) <= budget
