"""Bad input gets a typed error and changes nothing; odd but valid input is kept exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opticmem import (
    AgeDecay,
    BudgetError,
    ConfigurationError,
    ConfigurationTypeError,
    CostModel,
    InvalidSessionError,
    InvalidTurnError,
    OpticalMemory,
    OpticMemError,
    PressureDecay,
    RankDecay,
    RenderSettings,
    TurnTooLargeError,
    cost_model,
)
from opticmem.memory_store import InMemoryStore
from opticmem.sqlite_store import SQLiteStore
from opticmem.store import Store
from tests.memory.conftest import Clock

SMALL = RenderSettings(max_rows=4)


def snapshot(store: Store) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in sorted(store.sessions()):
        n, p = store.turn_count(s), store.page_count(s)
        out[s] = (n, store.get_turns(s, 0, n), p, store.get_pages(s, 0, p))
    return out


@pytest.fixture
def mem(store: Store, clock: Clock) -> OpticalMemory:
    m = OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SMALL, clock=clock)
    for i in range(12):
        m.add("alice", "user" if i % 2 == 0 else "assistant",
              f"turn {i}: planning Titan, ticket TITAN-{i} " * 3)
    assert m.store.page_count("alice") > 0
    return m


def nested(depth: int) -> list[Any]:
    """A list ``depth`` levels deep: deeper than the JSON encoder can recurse."""
    x: list[Any] = []
    for _ in range(depth):
        x = [x]
    return x


REJECTED: list[tuple[str, Callable[[OpticalMemory], object], type[Exception], str]] = [
    ("empty", lambda m: m.add("alice", "user", ""), InvalidTurnError, "empty"),
    ("whitespace", lambda m: m.add("alice", "user", " \n\t "), InvalidTurnError, "whitespace"),
    ("zero-width only", lambda m: m.add("alice", "user", "\u200b\u200d\ufeff"), InvalidTurnError,
     "invisible"),
    ("10 MB", lambda m: m.add("alice", "user", "x" * 10_000_000), TurnTooLargeError,
     "limit is 1,000,000"),
    ("lone surrogate", lambda m: m.add("alice", "user", "ok \ud800 no"), InvalidTurnError,
     "lone surrogate"),
    ("invalid UTF-8", lambda m: m.add("alice", "user", b"ok \xff\xfe"), InvalidTurnError,
     "not valid UTF-8"),
    ("not text", lambda m: m.add("alice", "user", 42), InvalidTurnError, "str or UTF-8"),  # type: ignore[arg-type]
    ("unknown role", lambda m: m.add("alice", "robot", "beep"), InvalidTurnError,
     "unknown role 'robot'"),
    ("role case", lambda m: m.add("alice", "User", "hi"), InvalidTurnError, "did you mean 'user'"),
    ("NaN ts", lambda m: m.add("alice", "user", "hi", ts=float("nan")), InvalidTurnError,
     "finite"),
    ("meta not JSON", lambda m: m.add("alice", "user", "hi", meta={"f": object()}),
     InvalidTurnError, "JSON"),
    ("meta nested too deep", lambda m: m.add("alice", "user", "hi", meta={"a": nested(5000)}),
     InvalidTurnError, "nested too deeply"),
    # a nested key that is not a string was stored as JSON made it: {1: "x"} came back
    # as {"1": "x"}, and {True: "t", "1": "u"} as {"1": "u"}, "t" lost (only the top
    # level was checked)
    ("meta nested int key", lambda m: m.add("alice", "user", "hi", meta={"tags": {1: "x"}}),
     InvalidTurnError, r"meta keys must be strings, got 1 in meta\['tags'\]"),
    ("meta key in a list", lambda m: m.add_many("alice", [
        {"role": "user", "text": "hi", "meta": {"calls": [{"id": "c1"}, {None: "x"}]}}]),
     InvalidTurnError, r"turn 0: meta keys must be strings, got None in meta\['calls'\]\[1\]"),
    ("session 10k chars", lambda m: m.add("x" * 10_000, "user", "hi"), InvalidSessionError,
     "limit is 256"),
    ("session empty", lambda m: m.add("", "user", "hi"), InvalidSessionError, "empty"),
    ("session newline", lambda m: m.add("a\nb", "user", "hi"), InvalidSessionError,
     "control character"),
    ("session surrogate", lambda m: m.add("a\udc00", "user", "hi"), InvalidSessionError,
     "surrogate"),
    ("session not str", lambda m: m.add(7, "user", "hi"), InvalidSessionError, "must be a str"),  # type: ignore[arg-type]
    ("add_many one bad", lambda m: m.add_many("alice", [("user", "fine"), ("user", "")]),
     InvalidTurnError, "turn 1"),
    # a turn of the wrong shape, or turns that are no list of turns, raised a bare
    # TypeError that named no turn
    ("add_many bad shape", lambda m: m.add_many("alice", [("user", "fine"), "oops"]),  # type: ignore[list-item]
     InvalidTurnError, r"turn 1: expected a mapping .* tuple, got str"),
    ("add_many 1-tuple", lambda m: m.add_many("alice", [("user", "fine"), ("user",)]),  # type: ignore[list-item]
     InvalidTurnError, "turn 1: .*got a tuple of 1"),
    ("add_many 4-tuple", lambda m: m.add_many("alice", [("user", "hi", 1.0, {"k": 1})]),  # type: ignore[list-item]
     InvalidTurnError, "turn 0: .*got a tuple of 4"),
    ("add_many None turn", lambda m: m.add_many("alice", [("user", "fine"), None]),  # type: ignore[list-item]
     InvalidTurnError, "turn 1: .*got NoneType"),
    ("add_many role not str", lambda m: m.add_many("alice", [("user", "fine"), (5, "hi")]),  # type: ignore[list-item]
     InvalidTurnError, "turn 1: role must be a str"),
    ("add_many not a list", lambda m: m.add_many("alice", 5),  # type: ignore[arg-type]
     InvalidTurnError, "turns must be a list .* not int"),
    ("add_many one mapping", lambda m: m.add_many("alice", {"role": "user", "text": "hi"}),  # type: ignore[arg-type]
     InvalidTurnError, "not dict .for one turn use add"),
    ("aadd_many not a list", lambda m: asyncio.run(m.aadd_many("alice", None)),  # type: ignore[arg-type]
     InvalidTurnError, "turns must be a list .* not NoneType"),
    ("budget below one turn", lambda m: m.context("alice", budget_tokens=5), BudgetError,
     "cannot hold even the newest turn"),
    ("budget zero", lambda m: m.context("alice", budget_tokens=0), BudgetError, "≥ 1"),
    ("context bad session", lambda m: m.context("a" * 300), InvalidSessionError, "limit"),
    # a timestamp no caption can print as a date used to be stored, and then every
    # context() of the session raised OverflowError
    ("ts 1e300", lambda m: m.add("alice", "user", "hi", ts=1e300), InvalidTurnError,
     "outside years 1–9999"),
    # the message held the value: past 4,300 digits Python refuses to write an int as
    # text, and the call failed with a bare ValueError instead
    ("ts 5,000 digits", lambda m: m.add("alice", "user", "hi", ts=10**5000), InvalidTurnError,
     "out of range: a number of about 5001 digits"),
    ("ts in milliseconds", lambda m: m.add("alice", "user", "hi", ts=1.7e15), InvalidTurnError,
     "milliseconds"),
    ("ts far past", lambda m: m.add_many("alice", [("user", "hi", -1e300)]), InvalidTurnError,
     "turn 0: timestamp"),
    ("budget as text", lambda m: m.context("alice", budget_tokens="8192"), BudgetError,  # type: ignore[arg-type]
     "whole number"),
    ("budget fraction", lambda m: m.context("alice", budget_tokens=100.5), BudgetError,  # type: ignore[arg-type]
     "whole number"),
    # recall used to treat 0 as "the default budget" and a negative one as no pages at all
    ("recall budget zero", lambda m: m.recall("alice", "Titan", budget_tokens=0), BudgetError,
     "≥ 1"),
    ("recall budget negative", lambda m: m.recall("alice", "Titan", budget_tokens=-3),
     BudgetError, "≥ 1"),
    # a k that is not a whole number failed deep in the search with a bare TypeError
    ("recall k fraction", lambda m: m.recall("alice", "Titan", k=2.5), ConfigurationError,  # type: ignore[arg-type]
     "k must be a whole number"),
    ("recall k text", lambda m: m.recall("alice", "Titan", k="3"), ConfigurationError,  # type: ignore[arg-type]
     "k must be a whole number"),
    # a query that is not text gave no passages, as if nothing matched (add takes bytes)
    ("recall query bytes", lambda m: m.recall("alice", b"Titan"), ConfigurationError,  # type: ignore[arg-type]
     r"query must be a str, got bytes \(decode"),
    ("recall query None", lambda m: m.recall("alice", None), ConfigurationError,  # type: ignore[arg-type]
     "query must be a str, got NoneType"),
    ("unknown tier", lambda m: m.page_png("alice", 0, "huge"), ConfigurationError,
     "unknown tier 'huge'"),
    # archive indices that are not whole numbers: SQLite truncated forget(2.5) to 2 and
    # dropped turns 0-1, the in-process store raised a bare TypeError
    ("forget fraction", lambda m: m.forget("alice", 2.5), ConfigurationError,  # type: ignore[arg-type]
     "before_seq must be a whole number"),
    ("turns start fraction", lambda m: m.turns("alice", 0.5), ConfigurationError,  # type: ignore[arg-type]
     "start must be a whole number"),
    ("pages stop text", lambda m: m.pages("alice", 0, "2"), ConfigurationError,  # type: ignore[arg-type]
     "stop must be a whole number"),
    ("page_png page fraction", lambda m: m.page_png("alice", 0.0), ConfigurationError,  # type: ignore[arg-type]
     "page_no must be a whole number"),
    # a passage as the recall tool's artifact holds it (a dict) failed with AttributeError
    ("original of a dict", lambda m: m.original(m.recall("alice", "Titan")[0].as_dict()),  # type: ignore[arg-type]
     TypeError, "takes a Passage"),
    ("unknown message format", lambda m: m.context("alice").messages(format="gemini"),  # type: ignore[arg-type]
     ConfigurationError, "format"),
]


@pytest.mark.parametrize(("call", "error", "message"), [r[1:] for r in REJECTED],
                         ids=[r[0] for r in REJECTED])
def test_rejected_calls_change_nothing(
    mem: OpticalMemory, call: Callable[[OpticalMemory], object], error: type[Exception],
    message: str,
) -> None:
    before = snapshot(mem.store)
    with pytest.raises(error, match=message):
        call(mem)
    assert snapshot(mem.store) == before
    mem.add("alice", "user", "still works")  # and the memory keeps working
    assert mem.context("alice").turns[-1].text == "still works"


@pytest.mark.parametrize("text", [
    "bell \x07 escape \x1b[31m red \x00 nul",
    "emoji 😀👩‍👩‍👧 flags 🇰🇷 done",
    "עברית ومعها عربي right-to-left mixed",
    "zero\u200bwidth\u200djoiner\ufeffbom inside",
    "서울 파트너와 회의는 목요일 오후 3시입니다. 中文 かな",
    "tabs\tand\r\nwindows\rlines\u2028separators",
    # a reply of only an emoji newer than Python's Unicode database (U+1FAE9, Unicode 16:
    # unassigned to ``unicodedata``) or of private-use glyphs used to be refused as
    # "only whitespace/invisible characters", and the integrations dropped it unarchived
    "\U0001fae9",
    "\ue000\U000f0000",
])
def test_odd_text_is_archived_exactly_and_rendered(mem: OpticalMemory, text: str) -> None:
    for _ in range(8):  # enough to push it out of the window and onto a page
        t = mem.add("odd", "user", text)
        assert mem.turns("odd", t.seq, t.seq + 1)[0].text == text
    pages = mem.pages("odd")
    assert pages, "the odd turns should have been sealed onto a page"
    ctx = mem.context("odd")
    assert ctx.cost <= mem.budget_tokens
    for tier in ("large", "tiny"):  # the page draws (control characters as visible pictures)
        png = mem.page_png("odd", 0, tier)
        assert png.startswith(b"\x89PNG")
    assert all("\x00" not in p.transcript and "\x07" not in p.transcript for p in pages)


@pytest.mark.parametrize("session", ["with space", "a:b:c", "glob*?[x]", "s" * 256, "ünï 😀"])
def test_odd_session_ids_work_and_stay_apart(mem: OpticalMemory, session: str) -> None:
    mem.add(session, "user", "mine")
    assert [t.text for t in mem.turns(session)] == ["mine"]
    assert mem.context(session).turns[0].text == "mine"
    assert "mine" not in [t.text for t in mem.turns("alice")]
    assert session in mem.sessions()


def test_a_large_turn_spans_pages(mem: OpticalMemory) -> None:
    big = " ".join(f"word{i}" for i in range(20_000))  # ~150k characters
    mem.add("big", "user", big)
    for i in range(3):
        mem.add("big", "assistant", f"ok {i}")
    pages = mem.pages("big")
    assert len(pages) > 100
    assert all(p.first_seq == p.last_seq == 0 for p in pages)
    assert [p.first_line for p in pages[1:]] == [p.end_line for p in pages[:-1]]
    ctx = mem.context("big")
    assert ctx.cost <= mem.budget_tokens
    # the rest of the big turn that is not on a sealed page is shown, marked as continued
    rest = [t for t in ctx.turns if t.seq == 0]
    assert len(rest) <= 1 and all(t.partial and t.text.startswith("[…continued") for t in rest)


def test_budget_error_names_the_needed_budget(mem: OpticalMemory) -> None:
    mem.add("b", "user", "a fairly long message " * 50)
    with pytest.raises(BudgetError, match=r"at least \d+"):
        mem.context("b", budget_tokens=20)


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"budget_tokens": "8192"}, BudgetError, "whole number"),
    ({"budget_tokens": True}, BudgetError, "whole number"),
    ({"cost_model": "gpt4"}, ConfigurationError, "unknown cost model 'gpt4'; presets"),
    ({"policy": "lru"}, ConfigurationError, "unknown decay policy 'lru'"),
    # of the wrong type, a bare TypeError ("not a decay policy: 3") that did not say what
    # is taken, unlike a bad name
    ({"cost_model": 3}, ConfigurationTypeError,
     r"cost_model must be a preset name \(deepseek-ocr, .*\), an ImageCost or a "
     r"CostModel, not int 3"),
    ({"cost_model": None}, ConfigurationTypeError, "cost_model must be .* not NoneType"),
    ({"policy": 3}, ConfigurationTypeError,
     "policy must be one of 'rank', 'age', 'pressure' or a DecayPolicy, not int 3"),
    ({"policy": object()}, ConfigurationTypeError, "policy must be .* not object"),
    ({"verbatim_turns": 0}, ConfigurationError, "verbatim_turns"),
    ({"recollect": "eager"}, ConfigurationError, "recollect"),
    ({"decode_max_tokens": 0}, ConfigurationError, "decode_max_tokens"),
    ({"page_max_tokens": -1}, ConfigurationError, "page_max_tokens"),
    ({"roles": "user"}, ConfigurationError, "collection of role names"),
    # accepted, and then every add failed ("unknown role 'user'; accepted roles: ") or
    # raised a bare TypeError
    ({"roles": []}, ConfigurationError, "non-empty collection of role names"),
    ({"roles": ["user", None]}, ConfigurationError, "non-empty collection of role names"),
    ({"roles": 5}, ConfigurationError, "non-empty collection of role names"),
    ({"clock": 1_772_352_000.0}, ConfigurationError, "clock must be a callable"),
    # was an AttributeError: 'dict' object has no attribute 'key'
    ({"render_settings": {"max_rows": 26}}, ConfigurationError,
     "render_settings must be a RenderSettings or None, not dict"),
    # a memory message with no role, or as a system or assistant message, carries images a
    # chat API refuses (OpenAI takes them only in user messages): it failed at send time
    ({"memory_role": None}, ConfigurationError, "memory_role must be one of 'user'.*None"),
    ({"memory_role": "system"}, ConfigurationError, "memory_role must be one of 'user'"),
    ({"memory_role": "assistant"}, ConfigurationError, "memory_role .* not 'assistant'"),
])
def test_bad_options_raise_typed_errors(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    """A setting the memory cannot use is an OpticMemError (and a ValueError) naming it."""
    with pytest.raises(error, match=message) as info:
        OpticalMemory(**{"codec": None, **options})
    assert isinstance(info.value, OpticMemError) and isinstance(info.value, ValueError)
    if error is ConfigurationTypeError:  # a TypeError still, as it was (and is documented)
        assert isinstance(info.value, TypeError)


def test_a_bad_cost_model_or_policy_leaves_no_store_file(tmp_path: Path) -> None:
    """The store URL was opened first: a bad cost model, text counter, policy or codec
    (checked after the store, even once the others were moved before it) left a new,
    empty SQLite file (or a Redis connection pool open)."""
    for options in ({"cost_model": "bogus"}, {"policy": "bogus"}, {"cost_model": 5},
                    {"policy": object()}, {"text_counter": "cl100k_base"},
                    {"codec": 5}, {"codec": "tiny"}):
        with pytest.raises((ConfigurationError, TypeError)):
            OpticalMemory(f"sqlite:///{tmp_path}/new.db", **{"codec": None, **options})
        assert not (tmp_path / "new.db").exists(), options


def test_numpy_integer_budget_is_accepted() -> None:
    np = pytest.importorskip("numpy")
    mem = OpticalMemory(codec=None, budget_tokens=np.int64(500))
    mem.add("s", "user", "hello")
    assert mem.context("s", budget_tokens=np.int32(400)).cost.budget == 400


def test_numpy_timestamps_are_accepted() -> None:
    """Timestamps from a NumPy or pandas column used to be refused as "not a number"."""
    np = pytest.importorskip("numpy")
    mem = OpticalMemory(codec=None, policy="age")
    assert mem.add("s", "user", "hello", ts=np.int64(1_772_352_000)).ts == 1_772_352_000.0
    [turn] = mem.add_many("s", [("assistant", "hi", np.uint32(1_772_352_064))])
    assert turn.ts == 1_772_352_064.0 and type(turn.ts) is float
    assert mem.context("s", now=np.int64(1_772_352_100)).turns[-1].text == "hi"
    with pytest.raises(InvalidTurnError, match="a number"):
        mem.add("s", "user", "hello", ts=np.bool_(True))


class _OwnPolicy:
    """A decay policy of a user's own (any object with ``key``, ``max_pages``, ``level``)."""

    key = "own"

    def __init__(self, max_pages: Any) -> None:
        self.max_pages = max_pages

    def level(self, rank: int, age: float) -> int:
        return 0


@pytest.mark.parametrize(("make", "message"), [
    (lambda: RankDecay(large=-1), "≥ 0"),
    (lambda: AgeDecay(large=60, base=10), "non-decreasing"),
    (lambda: PressureDecay(max_pages=-1), "max_pages"),
    # page counts that are not whole numbers were taken, and every context() of a session
    # with more pages than them then failed with a bare TypeError slicing the page log
    (lambda: RankDecay(large=1.5), "RankDecay.large .* whole number"),
    (lambda: RankDecay(tiny="8"), "RankDecay.tiny .* whole number"),  # type: ignore[arg-type]
    (lambda: AgeDecay(max_pages=2.5), "AgeDecay.max_pages must be a whole number"),
    (lambda: PressureDecay(max_pages=True), "PressureDecay.max_pages must be a whole number"),
    # a policy of one's own was not checked: every context of a session with more pages
    # than 2.5 failed with a bare TypeError
    (lambda: OpticalMemory(codec=None, policy=_OwnPolicy(2.5)),
     "_OwnPolicy.max_pages must be a whole number of pages ≥ 0, got 2.5"),
    (lambda: OpticalMemory(codec=None, policy=_OwnPolicy(-1)), "_OwnPolicy.max_pages"),
    (lambda: CostModel(message_overhead=-1), "message_overhead"),
    # 1.5 made every cost a float: Context.cost (an int) then disagreed with the messages
    (lambda: CostModel(message_overhead=1.5), "message_overhead must be a whole number"),  # type: ignore[arg-type]
    (lambda: cost_model("openai", message_overhead="3"), "message_overhead"),  # type: ignore[arg-type]
    (lambda: CostModel(message_overhead=True), "message_overhead"),
])
def test_bad_policy_and_cost_settings_raise_configuration_errors(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make()


NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(), st.binary(max_size=12), st.text(max_size=12),
    st.text(alphabet=st.characters(categories=["Cs", "Cc", "Cf", "Zl", "Zp", "Zs"]),
            max_size=6),
    st.sampled_from(["\ud800", "\x00", "\ufeff", "\u2028", "\u202eevil", "e" + "\u0301" * 10_000,
                     "s" * 300, -0.0, bytearray(b"hi"), b"\xff", "user", "Titan", 3]),
    st.lists(st.none(), max_size=2), st.dictionaries(st.text(max_size=3), st.none(), max_size=2),
)
"""Values of every wrong (and some right) type and shape, for any argument."""

CALLS: dict[str, Callable[[OpticalMemory, Any], object]] = {
    "add session": lambda m, v: m.add(v, "user", "hi"),
    "add role": lambda m, v: m.add("alice", v, "hi"),
    "add text": lambda m, v: m.add("alice", "user", v),
    "add ts": lambda m, v: m.add("alice", "user", "hi", ts=v),
    "add meta": lambda m, v: m.add("alice", "user", "hi", meta={"k": v}),
    "add meta key": lambda m, v: m.add("alice", "user", "hi", meta=v),
    "add_many turns": lambda m, v: m.add_many("alice", v),
    "add_many item": lambda m, v: m.add_many("alice", [("user", "fine"), v]),
    "add_many mapping": lambda m, v: m.add_many("alice", [{"role": "user", "text": v}]),
    "add_many ts": lambda m, v: m.add_many("alice", [("user", "hi", v)]),
    "context budget": lambda m, v: m.context("alice", budget_tokens=v),
    "context now": lambda m, v: m.context("alice", now=v),
    "recall query": lambda m, v: m.recall("alice", v),
    "recall k": lambda m, v: m.recall("alice", "Titan", k=v),
    "turns stop": lambda m, v: m.turns("alice", 0, v),
    "pages start": lambda m, v: m.pages("alice", v),
    "page_png tier": lambda m, v: m.page_png("alice", 0, v),
    "forget": lambda m, v: m.forget("zed", v),
    "original": lambda m, v: m.original(v),
    "aadd text": lambda m, v: asyncio.run(m.aadd("alice", "user", v)),
    "apages stop": lambda m, v: asyncio.run(m.apages("alice", 0, v)),
}


def test_fuzzed_arguments_raise_typed_errors_and_change_nothing(tmp_path: Path) -> None:
    """Any value for any argument: the call works, or raises an OpticMemError or a
    TypeError, and then each store (in-process and SQLite) holds what it held before."""
    mems = []
    for store in (InMemoryStore(), SQLiteStore(tmp_path / "fuzz.db")):
        m = OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SMALL,
                          clock=Clock())
        m.add_many("alice", [("user", f"turn {i}: planning Titan " * 3) for i in range(12)])
        mems.append(m)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(name=st.sampled_from(sorted(CALLS)), value=NASTY)
    def check(name: str, value: Any) -> None:
        for m in mems:
            before = snapshot(m.store)
            try:
                CALLS[name](m, value)
            except (OpticMemError, TypeError):
                assert snapshot(m.store) == before, f"{name}({value!r}) changed the store"

    check()
    for m in mems:
        m.close()
        m.store.close()


@pytest.mark.parametrize("options", [
    {"cell": 0}, {"cell": 10**6}, {"cell": float("nan")}, {"cell": 2.5}, {"archived": -3},
    {"archived": 2.5},
    {"archived": True}, {"crop": float("nan")}, {"crop": 0}, {"crop": "0.5"},
])
def test_decay_sheet_refuses_bad_options(options: dict[str, Any]) -> None:
    # cell=0 was taken for the default size, archived=-3 for 0; crop=nan failed with
    # "cannot convert float NaN to integer" and cell=nan with a bare TypeError
    from opticmem.inspection import decay_sheet

    mem = OpticalMemory(codec=None)
    mem.add("s", "user", "hello")
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        decay_sheet(mem, mem.context("s"), **options)
