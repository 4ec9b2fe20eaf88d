"""Model-based test: the in-process, SQLite and Redis stores give the same memory.

A Hypothesis state machine drives :class:`~opticmem.OpticalMemory` (``codec=None``) over
all three stores in lockstep through the calls a user makes — ``add`` and ``add_many``
(short and page-filling turns, several sessions, every role, timestamps in and out of
order, invalid input that must be refused), ``forget``, ``delete_session``, ``turns``,
``pages``, ``sessions``, ``page_png``, ``context`` under a few budgets, policies and
cost models, and ``recall`` with words from the stored text — and after every step
checks that every backend answers alike (results or the type of the error raised), that
the turns match a plain Python model of the archive, and that a context or recall is
what a new memory over the same store (nothing cached) gives. A refused call must leave
every store as it was, and editing what a call returned must change nothing stored.

Each example gets fresh stores: a new in-process store, a new SQLite file, and a new
tenant on the shared ``redis-server`` (``tests/conftest.py``). Derandomized and without
an example database, so CI runs the same examples every time.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from opticmem import InMemoryStore, OpticalMemory, RankDecay, RenderSettings, SQLiteStore
from opticmem.errors import OpticMemError
from opticmem.records import Turn
from opticmem.sessions import MAX_TS, MIN_TS, validate_text
from opticmem.store import Store

pytestmark = pytest.mark.redis

SETTINGS = RenderSettings(max_rows=4)  # small pages: many seals per example
START = 1_772_352_000.0  # 2026-03-01T08:00Z
MAX_CHARS = 3_000  # a small max_turn_chars, so a too-large turn is cheap to send

SESSIONS = ["alice", "bob:1/*", "s" * 256]  # the last is digest-keyed on Redis
ROLES = ["user", "assistant", "system", "tool"]
WORDS = ["plan", "Titan", "March", "budget", "$4,200", "2026-03-04", "ABC-123", "서울",
         "中文", "😀", "review", "milestone", "https://example.com/x", "v0.9.1", "the",
         "deadline", "ticket", "alice@example.com", "\n", "14:30", "עברית", "\x00",
         "\x1b[31m", "\r\n", "\u2028", "zero\u200bwidth", "👩\u200d👩\u200d👧", "🇰🇷",
         '"quoted" \\ {"seq":99}', "\t", "%_like_", "\U0001fabf"]

# (consumer name, memory keyword arguments): several consumers share each store, as
# processes with other policies and cost models would.
CONSUMERS: list[tuple[str, dict[str, Any]]] = [
    ("rank", dict(policy="rank", cost_model="deepseek-ocr")),
    ("age", dict(policy="age", cost_model="openai")),
    ("pressure", dict(policy=RankDecay(1, 1, 1, 1), cost_model="anthropic")),
    ("forgetful", dict(policy="rank", cost_model="deepseek-ocr", keep_archive=False)),
]
FORGETFUL = 3  # the consumer that drops a turn's text once it is wholly on sealed pages

# mostly one session, so that its pages seal and decay within an example
sessions = st.sampled_from([SESSIONS[0]] * 4 + SESSIONS[1:])


def storable(text: str) -> bool:
    try:
        validate_text(text)
    except OpticMemError:
        return False
    return True


short_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join).filter(
    storable)
long_texts = st.tuples(  # page-filling: up to MAX_CHARS, several pages of small layout
    st.lists(st.sampled_from(WORDS), min_size=40, max_size=120), st.integers(1, 4),
).map(lambda t: ((" ".join(t[0]) + " ") * t[1])[:MAX_CHARS]).filter(storable)
texts = st.one_of(short_texts, short_texts, long_texts)
metas = st.one_of(st.none(), st.just({"tool_call_id": "call_1", "name": "search"}),
                  st.just({"nested": {"k": [1, 2.5, None, "ü", True]}}),
                  st.just({"big": 2**70, "tiny": 5e-324, "huge": 1.7e308, "neg0": -0.0,
                           "odd key \x00 😀": "\u2028", "": []}))
# a turn's time from now: later (in order), the same, or earlier (out of order)
steps = st.one_of(st.floats(0, 3600), st.just(0.0), st.floats(-7200, 0))
# when ``add`` stamps a turn: ("clock", s) moves the clock on by s and leaves the stamp to
# it; ("at", s) passes now + s; ("edge", ts) passes a time at an end of the accepted span
whens = st.one_of(st.tuples(st.just("clock"), st.floats(0, 3600)),
                  st.tuples(st.just("at"), steps),
                  st.tuples(st.just("edge"), st.sampled_from([MIN_TS, MAX_TS, 0.0, -0.5])))

BAD_TURNS: list[tuple[str, Any]] = [  # (what, (role, text, ts, meta)) refused by add
    ("unknown role", ("User ", "hello", None, None)),
    ("role not a str", (1, "hello", None, None)),
    ("empty text", ("user", "", None, None)),
    ("only whitespace", ("user", " \t\n\u200b", None, None)),
    ("lone surrogate", ("user", "bad \ud800 text", None, None)),
    ("bad UTF-8 bytes", ("user", b"\xff\xfe", None, None)),
    ("text not a str", ("user", 42, None, None)),
    ("too large", ("user", "x" * (MAX_CHARS + 1), None, None)),
    ("NaN time", ("user", "hello", math.nan, None)),
    ("infinite time", ("user", "hello", math.inf, None)),
    ("time in milliseconds", ("user", "hello", START * 1000, None)),
    ("bool time", ("user", "hello", True, None)),
    ("string time", ("user", "hello", "2026-03-01", None)),
    ("meta not a mapping", ("user", "hello", None, ["x"])),
    ("meta with a NaN", ("user", "hello", None, {"x": math.nan})),
    ("meta key not a str", ("user", "hello", None, {1: "x"})),
    ("meta not JSON", ("user", "hello", None, {"x": {1, 2}})),
]
BAD_SESSIONS: list[Any] = ["", "x" * 257, "tab\there", "line\u2028sep", 7, None]


def edited(turns: list[Turn]) -> list[Turn]:
    """``turns`` after the caller changed their metadata, as a caller may: what a call
    returns is the caller's, and editing it must change nothing stored."""
    for t in turns:
        nested = t.meta.get("nested")
        if isinstance(nested, dict):
            nested["k"].append("edited")
        t.meta["edited"] = True  # type: ignore[index]
    return turns


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("raised", exception type name)``; an error that is not
    the library's typed one (or ``IndexError`` from ``page_png``) fails the test."""
    try:
        return ("ok", call())
    except (OpticMemError, IndexError) as exc:
        return ("raised", type(exc).__name__)


class BackendsAgree(RuleBasedStateMachine):
    """One memory per backend and consumer; every rule runs on all of them."""

    make_stores: Callable[[], list[tuple[str, Store]]]
    """Fresh stores ``(backend name, store)`` for one example; set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.now = START
        self.stores = self.make_stores()
        self.mems: dict[str, list[OpticalMemory]] = {
            name: [self.memory(store, consumer) for consumer in range(len(CONSUMERS))]
            for name, store in self.stores
        }
        self.model: dict[str, list[tuple[str, str, float, dict[str, Any]] | None]] = {}
        self.forgetful_ran = False

    def memory(self, store: Store, consumer: int) -> OpticalMemory:
        return OpticalMemory(store, codec=None, verbatim_turns=2, render_settings=SETTINGS,
                             max_turn_chars=MAX_CHARS, clock=self.clock, **CONSUMERS[consumer][1])

    def clock(self) -> float:
        return self.now

    def teardown(self) -> None:
        for mems in self.mems.values():
            for m in mems:
                m.close()
        for _, store in self.stores:
            store.close()

    # ------------------------------------------------------------------ helpers
    def each(
        self, call: Callable[[OpticalMemory], Any], consumer: int = 0, fresh: bool = False
    ) -> Any:
        """Run ``call`` on every backend's memory; assert the outcomes agree; return it.

        With ``fresh``, also on a new memory over each store (another process, with
        nothing cached), which must answer as the long-lived one did: the backends agree
        with each other even where the code they share is wrong, so this is the check on
        what the memory caches.
        """
        got = {name: outcome(functools.partial(call, mems[consumer]))
               for name, mems in self.mems.items()}
        first = next(iter(got.values()))
        assert all(g == first for g in got.values()), got
        if fresh:
            for name, store in self.stores:
                with self.memory(store, consumer) as new:
                    again = outcome(functools.partial(call, new))
                assert again == first, (name, again, first)
        self.forgetful_ran = self.forgetful_ran or consumer == FORGETFUL
        return first

    def forgotten_by_sealing(self) -> None:
        """Mark in the model the turns the forgetful consumer dropped as it sealed pages:
        always a prefix of each session (the backends are compared with each other)."""
        m = self.mems["memory"][0]
        for session, log in self.model.items():
            kept = {t.seq for t in m.turns(session)}
            gone = [seq for seq, t in enumerate(log) if t is not None and seq not in kept]
            if gone:
                for seq in gone:
                    log[seq] = None
                assert all(t is None for t in log[: gone[-1] + 1]), (session, gone)

    def snapshot(self) -> dict[str, Any]:
        """Everything a user sees of the stores: sessions, each session's turns and pages."""
        out: dict[str, Any] = {}
        for name, mems in self.mems.items():
            m = mems[0]
            out[name] = (m.sessions(), {s: (m.turns(s), m.pages(s)) for s in SESSIONS})
        return out

    def words(self, session: str) -> list[str]:
        return sorted({w for t in self.model.get(session, []) if t is not None
                       for w in t[1].split()})

    # ------------------------------------------------------------------ writing
    @initialize(items=st.lists(st.tuples(st.sampled_from(ROLES), texts), min_size=3,
                               max_size=12))
    def begin(self, items: list[tuple[str, str]]) -> None:
        """Every example starts with a conversation long enough to seal pages (any rule
        may be switched off for a whole example, the writing ones too)."""
        self.add_many(SESSIONS[0], [(role, text, 60.0, 1) for role, text in items], 0)

    @rule(session=sessions, role=st.sampled_from(ROLES), text=texts, when=whens, meta=metas,
          writer=st.integers(0, len(CONSUMERS) - 1), as_bytes=st.booleans())
    def add(self, session: str, role: str, text: str, when: tuple[str, float],
            meta: dict[str, Any] | None, writer: int, as_bytes: bool) -> None:
        how, value = when
        if how == "clock":
            self.now += value
        ts = None if how == "clock" else self.now + value if how == "at" else value
        data = text.encode() if as_bytes else text
        kind, turn = self.each(
            lambda m: edited([m.add(session, role, data, ts=ts, meta=meta)])[0], writer)
        assert kind == "ok", turn
        log = self.model.setdefault(session, [])
        assert turn.seq == len(log)
        log.append((role, text, self.now if ts is None else ts, copy.deepcopy(meta or {})))

    @rule(session=sessions,
          items=st.lists(st.tuples(st.sampled_from(ROLES), texts, steps, st.integers(0, 2)),
                         min_size=1, max_size=8),
          writer=st.integers(0, len(CONSUMERS) - 1))
    def add_many(self, session: str, items: list[tuple[str, str, float, int]],
                 writer: int) -> None:
        turns: list[Any] = []
        expected: list[tuple[str, str, float, dict[str, Any]]] = []
        for role, text, step, form in items:
            ts = self.now + step
            if form == 0:
                turns.append((role, text))
                expected.append((role, text, self.now, {}))
            elif form == 1:
                turns.append((role, text, ts))
                expected.append((role, text, ts, {}))
            else:
                turns.append({"role": role, "text": text, "ts": ts, "meta": {"i": len(turns)}})
                expected.append((role, text, ts, {"i": len(turns) - 1}))
        kind, stored = self.each(lambda m: edited(m.add_many(session, turns)), writer)
        assert kind == "ok", stored
        log = self.model.setdefault(session, [])
        assert [t.seq for t in stored] == list(range(len(log), len(log) + len(items)))
        log.extend(expected)
        self.now += 1.0

    @rule(session=sessions, refused=st.one_of(
        st.tuples(st.just("turn"), st.sampled_from(BAD_TURNS), st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("session"), st.sampled_from(BAD_SESSIONS), st.booleans()),
        st.tuples(st.just("forget"), st.sampled_from([2.5, "3", True, None]))))
    def refused(self, session: str, refused: tuple[Any, ...]) -> None:
        """Invalid input is refused by every backend with the same typed error, and leaves
        every store as it was: a bad turn (alone, or among good ones in ``add_many``), a
        bad session id (to every call that takes one), a ``forget`` bound that is not a
        whole number."""
        before = self.snapshot()
        if refused[0] == "turn":
            what, (role, text, ts, meta) = refused[1]
            if refused[2]:
                good: list[Any] = [("user", f"fine {i}") for i in range(3)]
                good.insert(refused[3], {"role": role, "text": text, "ts": ts, "meta": meta})
                kind, err = self.each(lambda m: m.add_many(session, good))
            else:
                kind, err = self.each(lambda m: m.add(session, role, text, ts=ts, meta=meta))
            assert kind == "raised", (what, err)
        elif refused[0] == "session":
            bad = refused[1]
            if refused[2]:
                got = self.each(lambda m: m.add_many(bad, [("user", "hello")]))
            else:
                got = self.each(lambda m: m.add(bad, "user", "hello"))
            assert got == ("raised", "InvalidSessionError")
            for call in (lambda m: m.turns(bad), lambda m: m.context(bad),
                         lambda m: m.recall(bad, "hello"), lambda m: m.forget(bad, 1),
                         lambda m: m.delete_session(bad)):
                assert self.each(call) == ("raised", "InvalidSessionError")
        else:
            assert self.each(lambda m: m.forget(session, refused[1])) == (
                "raised", "ConfigurationError")
        assert self.snapshot() == before

    @rule(session=sessions, before_seq=st.integers(-3, 60) | st.just(2**70))
    def forget(self, session: str, before_seq: int) -> None:
        log = self.model.get(session, [])
        stop = min(max(before_seq, 0), len(log))
        expected = sum(1 for t in log[:stop] if t is not None)
        assert self.each(lambda m: m.forget(session, before_seq)) == ("ok", expected)
        for i in range(stop):
            log[i] = None

    @rule(session=sessions, deleter=st.integers(0, len(CONSUMERS) - 1), really=st.booleans())
    def delete_session(self, session: str, deleter: int, really: bool) -> None:
        if not really:  # half the time: a session is deleted less often than it is written
            return
        assert self.each(lambda m: m.delete_session(session), deleter) == ("ok", None)
        self.model.pop(session, None)

    # ------------------------------------------------------------------ reading
    @rule(session=sessions, start=st.integers(-5, 40) | st.just(2**70),
          stop=st.none() | st.integers(-5, 60) | st.just(2**70))
    def archive(self, session: str, start: int, stop: int | None) -> None:
        self.each(lambda m: edited(m.turns(session, start, stop)))
        self.each(lambda m: m.pages(session, start // 4, None if stop is None else stop // 4))

    @rule(session=sessions, consumer=st.integers(0, len(CONSUMERS) - 1),
          budget=st.sampled_from([None, 40, 300, 1_200, 4_000, 32_768]),
          now=st.none() | st.floats(-3600, 86_400))
    def context(self, session: str, consumer: int, budget: int | None,
                now: float | None) -> None:
        at = None if now is None else self.now + now

        def call(m: OpticalMemory) -> tuple[dict[str, Any], str]:
            ctx = m.context(session, budget_tokens=budget, now=at)
            return ctx.as_dict(), ctx.text()

        self.each(call, consumer, fresh=True)

    @rule(session=sessions, data=st.data(),
          consumer=st.integers(0, len(CONSUMERS) - 1), k=st.integers(0, 6),
          include_original=st.booleans())
    def recall(self, session: str, data: st.DataObject, consumer: int, k: int,
               include_original: bool) -> None:
        words = self.words(session) or ["nothing"]
        query = " ".join(data.draw(st.lists(st.sampled_from(words), min_size=1, max_size=4),
                                   label="query"))

        def call(m: OpticalMemory) -> list[tuple[dict[str, object], list[Turn]]]:
            found = m.recall(session, query, k=k, include_original=include_original)
            return [(p.as_dict(), edited(list(p.original))) for p in found]

        self.each(call, consumer, fresh=True)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), tier=st.sampled_from(["tiny", "small"]))
    def page_png(self, data: st.DataObject, tier: str) -> None:
        session = data.draw(st.sampled_from(sorted(s for s, t in self.model.items() if t)))
        page_no = data.draw(st.integers(-1, 4), label="page_no")
        self.each(lambda m: m.page_png(session, page_no, tier))

    # ------------------------------------------------------------------ invariants
    @invariant()
    def backends_agree_with_the_model(self) -> None:
        if self.forgetful_ran:
            self.forgotten_by_sealing()
            self.forgetful_ran = False
        snap = self.snapshot()
        first = next(iter(snap.values()))
        assert all(s == first for s in snap.values()), snap
        listed, by_session = first
        assert listed == sorted(s for s, log in self.model.items() if log)
        for s in SESSIONS:
            want = [(seq, *t) for seq, t in enumerate(self.model.get(s, [])) if t is not None]
            got = [(t.seq, t.role, t.text, t.ts, dict(t.meta)) for t in by_session[s][0]]
            assert got == want


_EXAMPLES = itertools.count()


def test_backends_agree(redis_url: str, tmp_path: Path) -> None:
    from opticmem.redis_store import RedisStore  # optional dependency: imported on use

    def make_stores() -> list[tuple[str, Store]]:
        n = next(_EXAMPLES)
        return [("memory", InMemoryStore()), ("sqlite", SQLiteStore(tmp_path / f"{n}.db")),
                ("redis", RedisStore.from_url(redis_url, tenant=f"agree-{n}"))]

    class Machine(BackendsAgree):
        pass

    Machine.make_stores = staticmethod(make_stores)
    run_state_machine_as_test(
        Machine,
        settings=settings(max_examples=40, stateful_step_count=30, deadline=None,
                          derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.filter_too_much]),
    )
