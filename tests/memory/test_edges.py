"""Edge cases of the memory core's promises that the broad property tests do not reach:
true forgetting at a page boundary, consumers that share a store but count text
differently, the age policy under a clock that steps back, extreme budgets and settings.
"""

from __future__ import annotations

import enum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opticmem import (
    ConfigurationError,
    InMemoryStore,
    OpticalMemory,
    RenderSettings,
    message_tokens,
)
from opticmem.context import lead_note_tokens
from opticmem.records import PageRecord, Turn

PIECES = ["alpha", "beta", "ABC-123", "\n", "\n\n", "서울특별시", "😀😀", "ｗｉｄｅ" * 30,
          "x" * 150, "a\tb", "2026-03-04"]
turn_texts = st.lists(st.sampled_from(PIECES), min_size=1, max_size=30).map(
    lambda ws: " ".join(ws) + " z")


def wholly_sealed(mem: OpticalMemory, turn: Turn, pages: list[PageRecord]) -> bool:
    """Whether every line of ``turn`` is on a sealed page."""
    on = [p for p in pages if p.first_seq <= turn.seq <= p.last_seq]
    if not on:
        return False
    last = on[-1]
    return last.last_seq > turn.seq or last.end_line >= len(mem._packer.layout(turn).lines)


def test_true_forgetting_drops_a_turn_its_page_ends_with() -> None:
    # Two one-line turns fill a page: page 0 holds turns 0 and 1 entirely.
    mem = OpticalMemory(codec=None, verbatim_turns=1, render_settings=RenderSettings(max_rows=2),
                        keep_archive=False)
    for i in range(4):
        mem.add("s", "user", f"t{i}")
    [page] = mem.pages("s")
    assert (page.first_seq, page.last_seq, page.end_line) == (0, 1, 1)
    assert [t.seq for t in mem.turns("s")] == [2, 3]
    ctx = mem.context("s")
    assert [t.seq for t in ctx.turns] == [2, 3] and [p.page_no for p in ctx.pages] == [0]
    for i in range(4, 6):  # packing goes on from the forgotten frontier turn
        mem.add("s", "user", f"t{i}")
    assert [(p.first_seq, p.last_seq) for p in mem.pages("s")] == [(0, 1), (2, 3)]
    assert [t.seq for t in mem.turns("s")] == [4, 5]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(turn_texts, min_size=1, max_size=20),
       rows=st.sampled_from([1, 2, 3, 5]), window=st.integers(min_value=1, max_value=3),
       cap=st.sampled_from([None, 1, 3, 20]))
def test_true_forgetting_drops_exactly_the_wholly_sealed_turns(
    texts: list[str], rows: int, window: int, cap: int | None
) -> None:
    full = OpticalMemory(codec=None, verbatim_turns=window, page_max_tokens=cap,
                         render_settings=RenderSettings(max_rows=rows))
    mem = OpticalMemory(codec=None, verbatim_turns=window, page_max_tokens=cap,
                        render_settings=RenderSettings(max_rows=rows), keep_archive=False)
    for i, t in enumerate(texts):
        full.add("s", "user" if i % 2 else "assistant", t, ts=1_772_352_000.0 + i)
        mem.add("s", "user" if i % 2 else "assistant", t, ts=1_772_352_000.0 + i)
    pages = mem.pages("s")
    assert pages == full.pages("s")  # forgetting never changes what is sealed
    kept = {t.seq for t in mem.turns("s")}
    for turn in full.turns("s"):
        # archived exactly while some line of it is on no sealed page: nothing is lost,
        # and nothing wholly on pages lingers
        assert (turn.seq in kept) != wholly_sealed(full, turn, pages), turn.seq


def test_pages_are_priced_with_the_consumers_own_counter() -> None:
    # Two consumers of one store whose counters share a name (every lambda is
    # "callable:<lambda>") but count differently: the second must not take the first's
    # count of a page's transcript as its own.
    store = InMemoryStore()
    rows = RenderSettings(max_rows=3)
    words = OpticalMemory(store, codec=None, verbatim_turns=1, render_settings=rows,
                          text_counter=lambda s: len(s.split()))
    for i in range(12):
        words.add("s", "user", f"turn {i} " + "word " * 20)
    chars = OpticalMemory(store, codec=None, verbatim_turns=1, render_settings=rows,
                          text_counter=lambda s: len(s), budget_tokens=1200)
    assert chars.cost_model.name == words.cost_model.name
    ctx = chars.context("s")
    assert ctx.pages and all(p.shown == "text" for p in ctx.pages)
    assert message_tokens(ctx.messages(), chars.cost_model) == int(ctx.cost) <= 1200


def test_a_clock_stepped_back_does_not_promote_pages_under_the_age_policy() -> None:
    now = [1_772_352_000.0]
    mem = OpticalMemory(codec=None, policy="age", verbatim_turns=1,
                        render_settings=RenderSettings(max_rows=2), clock=lambda: now[0])
    for i in range(10):
        mem.add("s", "user", f"turn {i} words words")
    now[0] += 3 * 86_400  # three days later every page is Small
    before = {p.page_no: p.tier.rank for p in mem.context("s").pages}
    assert set(before.values()) == {2}
    now[0] -= 3 * 86_400  # the clock steps back (NTP, a process with a slower clock)
    mem.add("s", "user", "one more turn")
    after = mem.context("s")
    assert all(p.tier.rank >= before.get(p.page_no, 0) for p in after.pages)
    assert {p.tier.rank for p in mem.context("s", now=now[0] - 86_400).pages} == {2}
    # another memory on the same store (another process) keeps the same floor
    again = OpticalMemory(mem.store, codec=None, policy="age", verbatim_turns=1,
                          render_settings=RenderSettings(max_rows=2), clock=lambda: now[0])
    assert again.context("s").as_dict() == after.as_dict()


@pytest.mark.parametrize("bad", [1_772_352_000_000.0, float("inf"), float("nan"), "now", True])
@pytest.mark.parametrize("where", ["argument", "clock"])
def test_a_now_that_is_not_unix_seconds_is_refused_not_remembered(bad: object, where: str) -> None:
    # Decay never runs backwards, so the latest clock a consumer saw is stored: one call
    # with ``now`` in milliseconds used to put every page, and every page sealed after it,
    # out of that consumer's context for good (and a string raised a bare TypeError).
    now: list[object] = [1_772_352_000.0]
    mem = OpticalMemory(codec=None, policy="age", verbatim_turns=1,
                        render_settings=RenderSettings(max_rows=2), clock=lambda: now[0])
    for i in range(10):
        mem.add("s", "user", f"turn {i} words words")
    before = mem.context("s").as_dict()
    assert before["pages_per_tier"]["large"] > 0
    with pytest.raises(ConfigurationError, match="now"):
        if where == "argument":
            mem.context("s", now=bad)  # type: ignore[arg-type]
        else:
            now[0], good = bad, now[0]
            try:
                mem.context("s")
            finally:
                now[0] = good
    assert mem.context("s").as_dict() == before


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(turn_texts, st.floats(min_value=-7200, max_value=7200)),
                      min_size=1, max_size=25),
       model=st.sampled_from(["deepseek-ocr", "openai"]),
       budget=st.sampled_from([300, 2000, 10**9]))
def test_age_decay_is_monotone_whichever_way_the_clock_moves(
    steps: list[tuple[str, float]], model: str, budget: int
) -> None:
    from opticmem import AgeDecay, BudgetError

    now = [1_772_352_000.0]
    mem = OpticalMemory(codec=None, policy=AgeDecay(600, 1200, 2400, 4800, 12),
                        cost_model=model, budget_tokens=budget, verbatim_turns=1,
                        render_settings=RenderSettings(max_rows=2), clock=lambda: now[0])
    shown: dict[int, int] = {}  # page -> sharpest tier rank it may still be shown at
    gone: set[int] = set()
    for text, dt in steps:
        mem.add("s", "user", text)
        now[0] += dt
        try:
            ctx = mem.context("s")
        except BudgetError:
            continue
        assert int(ctx.cost) <= budget
        cur = {p.page_no: p.tier.rank for p in ctx.pages}
        for page_no, rank in cur.items():
            assert page_no not in gone and rank >= shown.get(page_no, 0), (page_no, rank)
        gone |= set(shown) - set(cur)
        shown.update(cur)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(turn_texts, min_size=1, max_size=15),
       model=st.sampled_from(["deepseek-ocr", "deepseek-ocr-nominal", "openai", "anthropic"]),
       policy=st.sampled_from(["rank", "age", "pressure"]),
       window=st.sampled_from([1, 2, 1000]), rows=st.sampled_from([1, 2, 4]),
       pixels=st.sampled_from([128, 1280]))
def test_extreme_budgets_fit_or_fail_only_on_the_newest_turn(
    texts: list[str], model: str, policy: str, window: int, rows: int, pixels: int
) -> None:
    from opticmem import BudgetError

    mem = OpticalMemory(codec=None, cost_model=model, policy=policy, verbatim_turns=window,
                        render_settings=RenderSettings(max_rows=rows, page_pixels=pixels,
                                                       margin=0),
                        clock=lambda: 1_772_352_000.0)
    mem.add_many("s", [("user" if i % 2 else "assistant", t) for i, t in enumerate(texts)])
    m = mem.cost_model
    newest = mem.turns("s")[-1]
    bare = m.message_overhead + m.text_tokens(newest.text)
    # shown alone, a reply needs the lead note before it; with the turn before it kept
    # instead (when that costs less than the note), it may fit in less
    own = bare + (lead_note_tokens(m) if newest.role == "assistant" else 0)
    for budget in sorted({1, max(1, bare - 1), bare, max(1, own - 1), own, own + 1, 10**12}):
        try:
            ctx = mem.context("s", budget_tokens=budget)
        except BudgetError:
            assert budget < own
            continue
        assert budget >= bare and int(ctx.cost) <= budget
        assert (ctx.turns[-1].seq, ctx.turns[-1].text) == (newest.seq, newest.text)
        for fmt in ("langchain", "openai"):
            assert message_tokens(ctx.messages(fmt), m) == int(ctx.cost)


def test_a_memory_with_other_render_settings_refuses_the_session_instead_of_losing_text() -> None:
    # A turn longer than a page is sealed line by line; the next page begins at line 55
    # of the 640-pixel layout. A memory with the default (wider) layout read that line
    # number in its own layout, where the turn has fewer lines: its rest was left out of
    # the context (as if the turn had ended with the page) and off every page it sealed.
    from opticmem import CorruptRecordError

    store = InMemoryStore()
    narrow = OpticalMemory(store, codec=None, verbatim_turns=2,
                           render_settings=RenderSettings(page_pixels=640))
    words = " ".join(f"word{i}" for i in range(400))
    for _ in range(6):
        narrow.add("s", "user", words)
    last = narrow.pages("s")[-1]
    assert last.end_line < len(narrow._packer.layout(narrow.turns("s")[last.last_seq]).lines)
    assert narrow.context("s").turns[0].partial  # the rest of that turn, shown verbatim

    wide = OpticalMemory(store, codec=None, verbatim_turns=2)
    with pytest.raises(CorruptRecordError, match="Open the memory with the render_settings"):
        wide.context("s")
    pages = store.page_count("s")
    wide.add("s", "assistant", words)  # stored (durable), but seals nothing in its layout
    assert store.turn_count("s") == 7 and store.page_count("s") == pages
    assert narrow.context("s").turns[0].partial  # the right memory still shows it all


class _NumpyRank:
    """A policy of a user's own that computes levels with NumPy (``np.int64``)."""

    key = "numpy-rank"
    max_pages = 8

    def __init__(self, edges: list[float]) -> None:
        self.edges = edges

    def level(self, rank: int, age: float) -> int:
        import numpy as np

        return np.searchsorted(self.edges, rank, side="right")  # type: ignore[return-value]


def test_a_policy_with_numpy_levels_works_under_budget_pressure() -> None:
    # The level went into the stored decay mark as it came: once the budget demoted a
    # page, every context failed with "Object of type int64 is not JSON serializable".
    mem = OpticalMemory(codec=None, policy=_NumpyRank([1, 2, 4, 8]), verbatim_turns=2,
                        render_settings=RenderSettings(max_rows=3))
    for i in range(30):
        mem.add("s", "user", f"turn {i}: " + "planning Titan " * 8)
    assert [p.tier.value for p in mem.context("s").pages][-2:] == ["base", "large"]
    ctx = mem.context("s", budget_tokens=400)
    assert ctx.demotions > 0 and int(ctx.cost) <= 400
    assert mem.context("s", budget_tokens=400).as_dict() == ctx.as_dict()


def test_a_policy_level_that_is_not_a_whole_number_is_a_configuration_error() -> None:
    class Halves(_NumpyRank):
        def level(self, rank: int, age: float) -> int:
            return 1.5  # type: ignore[return-value]

    mem = OpticalMemory(codec=None, policy=Halves([]), verbatim_turns=2,
                        render_settings=RenderSettings(max_rows=3))
    for i in range(12):
        mem.add("s", "user", f"turn {i}: " + "planning Titan " * 8)
    with pytest.raises(ConfigurationError, match=r"level .* must be a whole number, got 1\.5"):
        mem.context("s")


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_str_subclasses_are_stored_as_plain_text(store: str, tmp_path: Path) -> None:
    """A role, session or text given as a ``str`` subclass (a ``(str, Enum)`` member) was
    kept as that object by the in-process store: turns(), sessions() and messages() gave
    back ``Role.USER`` (its ``str()``) where a SQLite store gave back ``'user'``."""

    class Role(str, enum.Enum):
        USER = "user"
        BOT = "assistant"

    class Who(str, enum.Enum):
        ALICE = "alice"

    url = None if store == "memory" else f"sqlite:///{tmp_path / 'm.db'}"
    mem = OpticalMemory(url, codec=None, verbatim_turns=2)
    mem.add(Who.ALICE, Role.USER, Role.BOT)  # the text, too, may be one
    mem.add_many(Who.ALICE, [(Role.BOT, "sure"), {"role": Role.USER, "text": "ok"}])
    turns = mem.turns("alice")
    assert [(type(t.session), type(t.role), type(t.text)) for t in turns] == [(str, str, str)] * 3
    assert [(t.role, t.text) for t in turns] == [
        ("user", "assistant"), ("assistant", "sure"), ("user", "ok")]
    assert [type(s) for s in mem.sessions()] == [str]
    roles = [m["role"] for m in mem.context(Who.ALICE).messages()]
    assert [str(r) for r in roles] == ["user", "assistant", "user"]
    mem.close()
