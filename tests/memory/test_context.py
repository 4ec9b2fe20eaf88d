"""The context object: message shapes, exact costs per consumer, the savings gate."""

from __future__ import annotations

import asyncio
import base64
import copy
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from opticmem import (
    BudgetError,
    CodecUnavailableError,
    OpticalMemory,
    RenderSettings,
    Tier,
    cost_model,
    message_tokens,
)
from opticmem.context import (
    CLIP_NOTE,
    LEAD_NOTE,
    MEMORY_HEADER,
    Cost,
    caption,
    lead_note_tokens,
)
from opticmem.facts import facts_line
from tests.memory.sample import turns as sample_turns


def filled(n: int = 200, **kw: object) -> OpticalMemory:
    mem = OpticalMemory(codec=None, **kw)  # type: ignore[arg-type]
    mem.add_many("team", [{"role": t["role"], "text": t["text"], "ts": t["ts"]}
                          for t in sample_turns(n)])
    return mem


@pytest.fixture(scope="module")
def deepseek() -> OpticalMemory:
    return filled(360)


def test_langchain_messages_shape(deepseek: OpticalMemory) -> None:
    ctx = deepseek.context("team")
    msgs = ctx.messages()
    first = msgs[0]
    assert first["role"] == "user" and first["content"][0] == {"type": "text",
                                                               "text": MEMORY_HEADER}
    blocks = first["content"][1:]
    i = 0
    for page in ctx.pages:  # caption, image, facts line — per page, oldest first
        assert blocks[i] == {"type": "text", "text": page.caption}
        assert blocks[i + 1]["type"] == "image" and blocks[i + 1]["mime_type"] == "image/png"
        img = Image.open(io.BytesIO(base64.b64decode(blocks[i + 1]["base64"])))
        assert img.size == (page.tier.pixels, page.tier.pixels)
        i += 2
        if page.facts:
            assert blocks[i] == {"type": "text", "text": facts_line(page.facts)}
            i += 1
    assert i == len(blocks)
    assert [m["role"] for m in msgs[1:]] == [t.role for t in ctx.turns]
    assert msgs[-1]["content"] == deepseek.turns("team")[-1].text
    json.dumps(msgs)  # plain data


def test_openai_format_uses_data_urls(deepseek: OpticalMemory) -> None:
    ctx = deepseek.context("team")
    parts = ctx.messages(format="openai")[0]["content"]
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert len(urls) == len(ctx.pages) and all(u.startswith("data:image/png;base64,")
                                               for u in urls)
    with pytest.raises(ValueError, match="format"):
        ctx.messages(format="xml")  # type: ignore[arg-type]


def test_message_tokens_prices_a_tool_calling_message_and_names_bad_content() -> None:
    # OpenAI's assistant message that only calls tools has content None: it raised
    # "'NoneType' object is not iterable" (a system prompt given so, too)
    model = cost_model("deepseek-ocr")
    calls = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    assert message_tokens([calls], model) == model.message_overhead
    with pytest.raises(TypeError, match="message 1: content must be text or a list"):
        message_tokens([{"role": "user", "content": "hi"}, {"role": "user", "content": 7}],
                       model)
    # a content block that is not a dict (a bare string in the list, as a chat-loop system
    # prompt may be given) raised AttributeError: 'str' object has no attribute 'get'
    with pytest.raises(TypeError, match="message 0: content block 1 must be a dict"):
        message_tokens([{"role": "system", "content": [{"type": "text", "text": "a"}, "b"]}],
                       model)


@pytest.mark.parametrize("model", ["deepseek-ocr", "deepseek-ocr-nominal", "openai", "anthropic"])
@pytest.mark.parametrize("budget", [2500, 8192])
def test_cost_is_exactly_what_the_messages_cost(model: str, budget: int) -> None:
    mem = filled(160, cost_model=model, budget_tokens=budget)
    ctx = mem.context("team")
    assert int(ctx.cost) <= budget
    for fmt in ("langchain", "openai"):
        assert message_tokens(ctx.messages(format=fmt), cost_model(model)) == int(ctx.cost)  # type: ignore[arg-type]
    c = ctx.cost
    assert c.turns + c.staging + c.images + c.page_text + c.overhead == int(c)


def test_savings_gate_per_consumer() -> None:
    # Anthropic prices a 1280-pixel page at ~1600 tokens: more than its ~1000 tokens of
    # text, so Large and Base pages stay text while Small and Tiny become images.
    mem = filled(200, cost_model="anthropic", budget_tokens=20_000)
    ctx = mem.context("team")
    shown = {p.tier: p.shown for p in ctx.pages}
    assert shown[Tier.LARGE] == "text" and shown[Tier.BASE] == "text"
    assert shown[Tier.SMALL] == "image" and shown[Tier.TINY] == "image"
    for p in ctx.pages:
        if p.shown == "text":
            assert p.image_tokens == 0 and p.caption.endswith(", as text]")
    text_blocks = [b["text"] for b in ctx.messages()[0]["content"] if b["type"] == "text"]
    large = next(p for p in ctx.pages if p.tier == Tier.LARGE)
    assert large.record.transcript in text_blocks
    # DeepSeek-OCR reads a Large page for 421 slots: every page is an image
    assert all(p.shown == "image" for p in filled(200).context("team").pages)


def test_pages_and_reports(deepseek: OpticalMemory) -> None:
    ctx = deepseek.context("team")
    assert [p.tier for p in ctx.pages] == sorted((p.tier for p in ctx.pages),
                                                 key=lambda t: -t.rank)
    counts = ctx.pages_per_tier()
    assert counts == {"large": 2, "base": 2, "small": 4, "tiny": 8,
                      "out": deepseek.store.page_count("team") - 16}
    large = ctx.pages[-1]
    assert large.compression == pytest.approx(large.text_tokens / 421)
    assert 1.5 < large.compression < 3.5
    assert ctx.compression() is not None
    d = ctx.as_dict()
    json.dumps(d)
    assert d["pages_per_tier"] == counts and d["cost"]["total"] == int(ctx.cost)


def test_caption_names_page_turns_time_and_tier(deepseek: OpticalMemory) -> None:
    page = deepseek.pages("team")[3]
    cap = caption(page, Tier.BASE, "image")
    assert cap.startswith(f"[Page 3 · turns {page.first_seq}–{page.last_seq}")
    assert "2026-03-01" in cap and "UTC" in cap and cap.endswith("· Base]")


def test_captions_of_early_dates_have_four_digit_years() -> None:
    """strftime's %Y left years below 1000 unpadded on glibc (padded elsewhere), so a
    caption read "5-03-01 08:00" here and "0005-03-01 08:00" on another machine."""
    from opticmem.records import PageRecord

    day = 86_400.0
    t0 = -61_999_788_840.0  # 0005-04-21 20:26 UTC
    same_day = PageRecord("s", 0, 0, 0, 1, 1, "…", 9, t0, t0 + 600, "k")
    two_days = PageRecord("s", 0, 0, 0, 1, 1, "…", 9, t0, t0 + 2 * day, "k")
    assert "· 0005-04-21 20:26–20:36 UTC ·" in caption(same_day, Tier.TINY, "image")
    assert "· 0005-04-21 20:26 – 0005-04-23 20:26 UTC ·" in caption(two_days, Tier.TINY, "image")


def test_staging_and_partial_turns() -> None:
    mem = OpticalMemory(codec=None, verbatim_turns=2, render_settings=RenderSettings(max_rows=3))
    mem.add("s", "user", " ".join(f"w{i}" for i in range(200)))  # several pages long
    mem.add("s", "assistant", "short")
    mem.add("s", "user", "newest")
    ctx = mem.context("s")
    first = ctx.turns[0]
    assert first.seq == 0 and first.staging and first.partial
    last_page = mem.pages("s")[-1].page_no
    assert first.text.startswith(f"[…continued from page {last_page}] ")
    assert [t.staging for t in ctx.turns] == [True, False, False]


def test_tool_metadata_passes_through() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "assistant", "calling", meta={"tool_calls": 1})
    mem.add("s", "tool", "42", meta={"tool_call_id": "call_7", "name": "calc"})
    msgs = mem.context("s").messages()
    assert msgs[-1] == {"role": "tool", "content": "42", "tool_call_id": "call_7",
                        "name": "calc"}


def test_cost_copies_and_pickles_with_its_parts() -> None:
    # Cost.__new__ takes its parts as keywords: copy and pickle passed the bare total
    # and raised TypeError
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hi")
    cost = mem.context("s", budget_tokens=100).cost
    # what pickling would store and call on loading, without unpickling anything
    rebuild, args = cost.__reduce_ex__(4)[:2]
    for twin in (copy.copy(cost), copy.deepcopy(cost), rebuild(*args)):
        assert type(twin) is Cost and int(twin) == int(cost)
        assert twin.as_dict() == cost.as_dict() == {**twin.as_dict(), "budget": 100}


def test_names_openai_refuses_are_left_off_messages() -> None:
    # OpenAI refuses the whole request over one name outside ^[a-zA-Z0-9_-]{1,64}$; a
    # turn's free-form ``name`` meta (a speaker's display name) was copied on as it was.
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hi", meta={"name": "Dr. Müller"})
    mem.add("s", "assistant", "hello", meta={"name": "x" * 65})
    mem.add("s", "user", "bye", meta={"name": "ann_2-b"})
    mem.add("s", "user", "again", meta={"name": "ann\n"})
    mem.add("s", "tool", "42", meta={"name": "t" * 100, "tool_call_id": "c1"})
    for fmt in ("langchain", "openai"):
        msgs = mem.context("s").messages(format=fmt)
        # a tool's name stays: it is shown in the heading of the recorded result
        assert [m.get("name") for m in msgs] == [None, None, "ann_2-b", None, "t" * 100]
    assert mem.turns("s")[0].meta == {"name": "Dr. Müller"}  # the archive keeps it


def test_text_without_codec_shows_placeholders(deepseek: OpticalMemory) -> None:
    ctx = deepseek.context("team")
    text = ctx.text()
    assert text.count("[page image; no codec to read it back]") == len(ctx.pages)
    for p in ctx.pages:
        assert p.record.transcript not in text  # ground truth is not a memory
    assert text.endswith(f"{ctx.turns[-1].role.title()}: {ctx.turns[-1].text}")
    with pytest.raises(CodecUnavailableError):
        ctx.embeddings()


def test_empty_session_has_empty_context(deepseek: OpticalMemory) -> None:
    ctx = deepseek.context("nobody")
    assert ctx.pages == () and ctx.turns == () and int(ctx.cost) == 0
    assert ctx.messages() == [] and ctx.text() == ""


def test_openai_parts_name_the_detail_their_price_assumes() -> None:
    # TileCost prices at high detail, but image_url parts were sent with no detail, so
    # OpenAI's default ("auto") decided what was billed. A Tiny page (512 px) loses
    # nothing at "low" (read at 512×512) and costs 85 there instead of 255.
    mem = filled(360, cost_model="openai", budget_tokens=20_000)
    ctx = mem.context("team")
    shown = [p for p in ctx.pages if p.shown == "image"]
    assert Tier.TINY in {p.tier for p in shown} and len({p.tier for p in shown}) > 1
    msgs = ctx.messages(format="openai")
    parts = [b["image_url"] for b in msgs[0]["content"] if b["type"] == "image_url"]
    assert [u["detail"] for u in parts] == [
        "low" if p.tier is Tier.TINY else "high" for p in shown]
    assert [p.image_tokens for p in shown] == [
        85 if p.tier is Tier.TINY else 765 for p in shown]
    assert message_tokens(msgs, mem.cost_model) == int(ctx.cost)
    # a part's detail is what it is billed at, whatever the image's size
    for u in parts:
        u["detail"] = "high"
    tiny = sum(1 for p in shown if p.tier is Tier.TINY)
    assert message_tokens(msgs, mem.cost_model) == int(ctx.cost) + 170 * tiny
    # other consumers are not priced by OpenAI's detail levels: none is written
    deep = filled(360).context("team").messages(format="openai")[0]["content"]
    assert all("detail" not in b["image_url"] for b in deep if b["type"] == "image_url")


# ---------------------------------------------------------------- a turn too long to show

def pasted_log_memory(log_lines: int = 20_000) -> OpticalMemory:
    mem = OpticalMemory(codec=None)
    for i in range(60):
        mem.add("s", "user" if i % 2 == 0 else "assistant",
                f"turn {i}: planning notes about the launch " * 20)
    mem.add("s", "user", "LOG START " + "error at line 42; " * log_lines + " LOG END")
    mem.add("s", "assistant", "I see the log.")
    mem.add("s", "user", "What was the first thing we discussed?")
    return mem


def test_a_turn_too_long_for_the_budget_is_clipped_not_everything_before_it_dropped() -> None:
    # A pasted log (~90k tokens, default budget 8,192) among the recent turns used to push
    # every page and every turn up to it out of the context: the model saw 2 turns (20
    # tokens) and, through the decay mark, those pages never came back.
    mem = pasted_log_memory()
    ctx = mem.context("s")
    assert ctx.dropped_turns == 0 and ctx.pages and int(ctx.cost) <= ctx.budget
    log = next(t for t in ctx.turns if t.seq == 60)
    full = mem.turns("s")[60].text
    assert log.clipped == len(full) - (len(log.text) - len(CLIP_NOTE.format(chars=log.clipped)))
    assert log.text.startswith("LOG START error at line 42;") and log.text.endswith("LOG END")
    assert f"{log.clipped:,} characters of this turn left out" in log.text
    assert [t.clipped for t in ctx.turns if t.seq != 60] == [0] * (len(ctx.turns) - 1)
    assert ctx.as_dict()["turns"][-3]["clipped"] == log.clipped
    sent = ctx.messages()
    assert message_tokens(sent, mem.cost_model) == int(ctx.cost)
    assert any("characters of this turn left out" in str(m["content"]) for m in sent)


def test_turns_that_fit_are_never_clipped() -> None:
    mem = pasted_log_memory(log_lines=100)
    ctx = mem.context("s")
    assert all(t.clipped == 0 for t in ctx.turns) and ctx.dropped_turns == 0
    assert mem.turns("s")[60].text in [t.text for t in ctx.turns]


def test_the_newest_turn_is_never_clipped() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hello")
    mem.add("s", "user", "error at line 42; " * 20_000)
    with pytest.raises(BudgetError, match="cannot hold even the newest turn"):
        mem.context("s")


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 30_000), min_size=2, max_size=6),
       budget=st.integers(300, 6_000))
def test_clipped_contexts_stay_within_budget(sizes: list[int], budget: int) -> None:
    mem = OpticalMemory(codec=None, verbatim_turns=4)
    for i, n in enumerate(sizes):
        mem.add("s", "user" if i % 2 == 0 else "assistant", f"<{i}>" + "word " * n + f"</{i}>")
    mem.add("s", "user", "question?")
    ctx = mem.context("s", budget_tokens=budget)
    assert int(ctx.cost) <= budget
    assert message_tokens(ctx.messages(), mem.cost_model) == int(ctx.cost)
    for t in ctx.turns:
        if t.clipped:  # the head and tail of the text shown, around the note
            head, tail = t.text.split(CLIP_NOTE.format(chars=t.clipped))
            whole = mem.turns("s")[t.seq].text
            assert whole.endswith(tail)
            if not t.partial:  # (a partial turn's head is the continuation line)
                assert whole.startswith(head) and len(head) + t.clipped + len(tail) == len(whole)


def clip_room(mem: OpticalMemory, budget: int) -> int:
    """What the one turn before the newest may cost clipped: a quarter of what the newest
    leaves."""
    newest = mem.turns("s")[-1].text
    return (budget - mem.cost_model.message_overhead - mem.cost_model.text_tokens(newest)) // 4


def test_a_turn_is_clipped_in_a_few_tries_even_when_its_middle_is_cheap() -> None:
    # Dense ends around a long run of spaces (one token, however long): sized by 15% steps
    # from an estimate ~100× too long, the turn was counted ~50 times per context — a
    # 5 MB such turn took ~0.5 s a context instead of a few milliseconds.
    calls: list[int] = []

    def counting(text: str) -> int:
        if "characters of this turn left out" in text:
            calls.append(len(text))
        return cost_model().text_tokens(text)

    mem = OpticalMemory(codec=None, cost_model=cost_model(text=counting))
    mem.add("s", "tool", "a.b," * 2_500 + " " * 900_000 + "a.b," * 2_500)
    mem.add("s", "user", "What failed?")
    ctx = mem.context("s", budget_tokens=4_000)
    [clipped, _] = ctx.turns
    assert clipped.clipped and clipped.cost <= clip_room(mem, 4_000)
    assert len(calls) <= 12, len(calls)


@pytest.mark.parametrize("text", [
    "error at line 42; " * 2_000 + "中" * 200_000 + "error at line 42; " * 2_000,
    "LOG START " + "error at line 42; " * 20_000 + " LOG END",
])
def test_a_clipped_turn_uses_nearly_all_of_its_room(text: str) -> None:
    # Sized by its whole text's tokens per character, a turn whose ends are sparser than
    # its middle (English around CJK) was clipped to a third of its room, and steps of
    # 15% that only ever shrank wasted up to a seventh of it on any text.
    mem = OpticalMemory(codec=None)
    mem.add_many("s", [("tool", text), ("user", "What failed?")])
    ctx = mem.context("s", budget_tokens=6_000)
    [clipped, _] = ctx.turns
    room = clip_room(mem, 6_000)
    assert clipped.clipped and 0.95 * room <= clipped.cost <= room


def test_turns_of_ordinary_length_are_dropped_oldest_first_not_all_clipped() -> None:
    # Capping every turn at one water level clipped 40 recent turns of ~360 tokens each
    # to ~100 (a third of it the note), the last answer too, where the newest ~22 had
    # been shown whole.
    mem = OpticalMemory(codec=None, verbatim_turns=40)
    for i in range(40):
        mem.add("s", "user" if i % 2 == 0 else "assistant",
                f"turn {i}: " + "the quarterly plan, line by line, " * 45)
    mem.add("s", "user", "And the last answer?")
    ctx = mem.context("s")
    assert all(t.clipped == 0 for t in ctx.turns)
    assert ctx.dropped_turns > 0 and len(ctx.turns) > 15 and int(ctx.cost) <= ctx.budget
    assert ctx.turns[-2].text == mem.turns("s")[-2].text


def test_only_the_long_turn_is_clipped_among_ordinary_ones() -> None:
    mem = pasted_log_memory()
    ctx = mem.context("s")
    assert [t.seq for t in ctx.turns if t.clipped] == [60]
    assert next(t for t in ctx.turns if t.seq == 60).cost <= clip_room(mem, ctx.budget)


# --------------------------------------------------------------------------- lead note
# Anthropic's API and Bedrock's Converse refuse a conversation whose first message (after
# the system prompt) is the assistant's: "A conversation must start with a user message".
# A budgeted context with no page whose oldest kept turn was a reply opened with one.


def prompt_reply_prompt() -> OpticalMemory:
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "Please draft the launch plan for Titan, milestone by milestone. " * 8)
    mem.add("s", "assistant", "Milestones: design freeze on March 4, beta on March 18.")
    mem.add("s", "user", "Move the beta a week later.")
    return mem


def opening_role(messages: list[dict[str, object]]) -> object:
    return next(m["role"] for m in messages if m["role"] != "system")


def test_a_context_opening_on_a_reply_gets_a_user_note_priced_in_its_budget() -> None:
    mem = prompt_reply_prompt()
    m = mem.cost_model
    reply, newest = mem.turns("s")[1:]
    kept = sum(m.message_overhead + m.text_tokens(t.text) for t in (reply, newest))
    budget = kept + lead_note_tokens(m)  # room for [reply, newest] and the note, no more
    ctx = mem.context("s", budget_tokens=budget)
    assert [t.seq for t in ctx.turns] == [1, 2] and ctx.dropped_turns == 1
    assert ctx.lead_note == 0 and not ctx.pages
    for fmt in ("langchain", "openai"):
        msgs = ctx.messages(format=fmt)
        assert msgs == [{"role": "user", "content": LEAD_NOTE},
                        {"role": "assistant", "content": reply.text},
                        {"role": "user", "content": newest.text}]
        assert message_tokens(msgs, m) == int(ctx.cost) == budget
    c = ctx.cost  # the note is overhead: its message and its text
    assert c.overhead == 3 * m.message_overhead + m.text_tokens(LEAD_NOTE)
    assert c.turns + c.staging + c.images + c.page_text + c.overhead == int(c)
    assert ctx.text() == f"{LEAD_NOTE}\n\nAssistant: {reply.text}\n\nUser: {newest.text}"
    d = ctx.as_dict()
    assert d["lead_note"] is True and d["cost"]["overhead"] == c.overhead
    assert [t["seq"] for t in d["turns"]] == [1, 2]


def test_the_oldest_turn_is_dropped_when_the_note_does_not_fit() -> None:
    # one token short of the reply, the newest turn and the note: never over the budget,
    # so the reply goes and the context is the newest turn alone (a user turn, no note)
    mem = prompt_reply_prompt()
    m = mem.cost_model
    reply, newest = mem.turns("s")[1:]
    budget = sum(m.message_overhead + m.text_tokens(t.text) for t in (reply, newest)) + (
        lead_note_tokens(m) - 1)
    ctx = mem.context("s", budget_tokens=budget)
    assert [t.seq for t in ctx.turns] == [2] and ctx.lead_note is None
    assert ctx.messages() == [{"role": "user", "content": newest.text}]
    assert int(ctx.cost) <= budget and ctx.cost.overhead == m.message_overhead


def test_a_reply_shown_alone_needs_room_for_the_note_or_raises() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "Summarise the incident report for the board, point by point. " * 8)
    mem.add("s", "assistant", "Three points: cause, impact, fix.")
    m = mem.cost_model
    alone = m.message_overhead + m.text_tokens("Three points: cause, impact, fix.")
    ctx = mem.context("s", budget_tokens=alone + lead_note_tokens(m))
    assert [msg["role"] for msg in ctx.messages()] == ["user", "assistant"]
    assert ctx.messages()[0]["content"] == LEAD_NOTE
    with pytest.raises(BudgetError, match="cannot hold even the newest turn") as err:
        mem.context("s", budget_tokens=alone)  # the reply fits, the note before it not
    assert err.value.needed == alone + lead_note_tokens(m)


def test_a_session_that_begins_with_a_greeting_opens_with_the_note() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "assistant", "Hi! I can help you plan projects.")
    mem.add("s", "user", "Plan Titan.")
    ctx = mem.context("s")
    assert ctx.dropped_turns == 0 and [msg["role"] for msg in ctx.messages()] == [
        "user", "assistant", "user"]
    assert message_tokens(ctx.messages(), mem.cost_model) == int(ctx.cost)


def test_the_note_goes_after_leading_system_turns() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "system", "Answer in French from now on.")
    mem.add("s", "assistant", "D'accord.")
    ctx = mem.context("s")
    assert [(msg["role"], msg["content"]) for msg in ctx.messages()] == [
        ("system", "Answer in French from now on."), ("user", LEAD_NOTE),
        ("assistant", "D'accord.")]
    assert ctx.lead_note == 1 and ctx.text().split("\n\n")[1] == LEAD_NOTE
    assert message_tokens(ctx.messages(), mem.cost_model) == int(ctx.cost)


def test_user_first_contexts_and_contexts_with_pages_are_unchanged(
    deepseek: OpticalMemory,
) -> None:
    mem = prompt_reply_prompt()
    ctx = mem.context("s")  # everything fits: user first, no note
    assert ctx.lead_note is None and ctx.as_dict()["lead_note"] is False
    assert [msg["content"] for msg in ctx.messages()] == [t.text for t in mem.turns("s")]
    assert ctx.cost.overhead == 3 * mem.cost_model.message_overhead
    paged = deepseek.context("team")  # the memory message opens it: no note
    msgs = paged.messages()
    assert paged.pages and paged.lead_note is None
    assert msgs[0]["content"][0] == {"type": "text", "text": MEMORY_HEADER}
    assert LEAD_NOTE not in [msg["content"] for msg in msgs]
    assert LEAD_NOTE not in paged.text()


@pytest.mark.parametrize("model", ["deepseek-ocr", "openai", "anthropic"])
def test_no_budget_opens_a_context_with_a_reply(model: str) -> None:
    # the sample conversation under budgets from what pages fit down to a few turns:
    # pages put out by the budget, prompts left out, the messages still open with a user
    # message and cost exactly what the context says, within its budget
    mem = filled(120, cost_model=model, verbatim_turns=12)
    noted = 0
    for budget in range(150, 3_000, 37):
        try:
            ctx = mem.context("team", budget_tokens=budget)
        except BudgetError:
            continue
        msgs = ctx.messages()
        assert opening_role(msgs) == "user", budget
        assert message_tokens(msgs, cost_model(model)) == int(ctx.cost) <= budget
        noted += ctx.lead_note is not None
    assert noted  # the note was needed, at some budgets


# merge_runs: Bedrock's Converse refuses two messages of one role in a row ("A
# conversation must alternate between user and assistant roles"); messages() gives such
# runs (the pages' message then the first turn, replies stored in a row, tool results).

def paged_user_run() -> OpticalMemory:
    """Pages, then a run of user turns, a reply and a prompt: the first turn shown is a
    user's, so it follows the pages' (user) message."""
    mem = OpticalMemory(codec=None, verbatim_turns=3, budget_tokens=6000,
                        render_settings=RenderSettings(max_rows=6))
    texts = [str(t["text"]) for t in sample_turns(60)]
    mem.add_many("s", [("user", t) for t in texts[:-2]])
    mem.add_many("s", [("assistant", texts[-2]), ("user", texts[-1])])
    return mem


def test_merge_runs_is_off_by_default_and_the_default_is_unchanged(
        deepseek: OpticalMemory) -> None:
    mem = paged_user_run()
    ctx = mem.context("s")
    for fmt in ("langchain", "openai"):
        plain = ctx.messages(fmt)  # type: ignore[arg-type]
        assert ctx.messages(fmt, merge_runs=False) == plain  # type: ignore[arg-type]
        assert plain[0]["role"] == plain[1]["role"] == "user"  # a run, left as it was
        assert plain[1]["content"] == ctx.turns[0].text
    assert asyncio.run(ctx.amessages()) == ctx.messages()
    assert deepseek.context("team").messages() == deepseek.context("team").messages(
        merge_runs=False)


@pytest.mark.parametrize("fmt", ["langchain", "openai"])
def test_merge_runs_puts_the_pages_and_the_user_turns_after_them_in_one_message(
        fmt: str) -> None:
    mem = paged_user_run()
    ctx = mem.context("s")
    assert ctx.pages and [t.role for t in ctx.turns][-3:] == ["user", "assistant", "user"]
    plain = ctx.messages(fmt)  # type: ignore[arg-type]
    merged = ctx.messages(fmt, merge_runs=True)  # type: ignore[arg-type]
    assert asyncio.run(ctx.amessages(fmt, merge_runs=True)) == merged  # type: ignore[arg-type]
    users = [t.text for t in ctx.turns[:-2]]
    # the pages' blocks as they were (image parts of the format included), then each
    # user turn's text as a text block — the shape both formats write text parts in
    assert merged == [
        {"role": "user", "content": [*plain[0]["content"],
                                     *({"type": "text", "text": u} for u in users)]},
        {"role": "assistant", "content": ctx.turns[-2].text},
        {"role": "user", "content": ctx.turns[-1].text},
    ]
    image = "image_url" if fmt == "openai" else "image"
    assert any(b["type"] == image for b in merged[0]["content"])
    # one message_overhead less per message merged away; never over the budget
    m = mem.cost_model
    saved = (len(plain) - len(merged)) * m.message_overhead
    assert message_tokens(merged, m) == message_tokens(plain, m) - saved < int(ctx.cost)
    assert int(ctx.cost) <= ctx.budget


def test_merge_runs_leaves_tool_and_named_messages_separate() -> None:
    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "weather and time?")
    mem.add("s", "assistant", "calling both", meta={"tool_calls": 2})
    mem.add("s", "tool", "12C", meta={"tool_call_id": "c1", "name": "weather"})
    mem.add("s", "tool", "09:00", meta={"tool_call_id": "c2", "name": "clock"})
    mem.add("s", "assistant", "12C at nine.")
    mem.add("s", "assistant", "Anything else?")
    mem.add("s", "user", "I'm Ann", meta={"name": "ann"})
    mem.add("s", "user", "and Bob is here")
    mem.add("s", "system", "be brief")
    mem.add("s", "system", "use Celsius")
    merged = mem.context("s").messages(merge_runs=True)
    assert merged == [
        {"role": "user", "content": "weather and time?"},
        {"role": "assistant", "content": "calling both"},
        {"role": "tool", "content": "12C", "name": "weather", "tool_call_id": "c1"},
        {"role": "tool", "content": "09:00", "name": "clock", "tool_call_id": "c2"},
        {"role": "assistant", "content": [{"type": "text", "text": "12C at nine."},
                                          {"type": "text", "text": "Anything else?"}]},
        {"role": "user", "content": "I'm Ann", "name": "ann"},  # its name stays its own
        {"role": "user", "content": "and Bob is here"},
        {"role": "system", "content": [{"type": "text", "text": "be brief"},
                                       {"type": "text", "text": "use Celsius"}]},
    ]


def test_merge_message_runs_does_not_change_its_input() -> None:
    from opticmem.context import merge_message_runs

    given = [{"role": "user", "content": [{"type": "text", "text": "a"}]},
             {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]
    before = copy.deepcopy(given)
    assert merge_message_runs(given) == [{"role": "user", "content": [
        {"type": "text", "text": t} for t in "abc"]}]
    assert given == before
    alone = {"role": "assistant", "content": "x"}
    assert merge_message_runs([alone])[0] is alone  # a message not merged is as it was
    assert merge_message_runs([]) == []
