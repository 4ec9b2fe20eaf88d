"""The Store contract, run against every backend in ``tests/memory/backends.py``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import opticmem.sqlite_store as sqlite_store_module
import opticmem.store as store_module
from opticmem.errors import PageConflictError
from opticmem.records import PageRecord, Turn
from opticmem.store import Store

ODD_TEXTS = [
    "plain",
    "null \x00 byte and bell \x07 and escape \x1b[31m",
    "emoji 😀👩‍👩‍👧 and flags 🇰🇷",
    "עברית ومعها عربي right-to-left",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "line\r\nbreaks\u2028and\u2029separators",
    'quotes " and \\ backslashes \\" and {"seq":99} json-looking text',
    "서울 中文 かな",
    "x" * 200_000,
]
ODD_SESSIONS = ["with space", "a:b:c", "glob*?[x]", "%_like_", "'; DROP TABLE turns; --", "s" * 256]


def page(session: str, n: int, first_seq: int = 0, **kw: object) -> PageRecord:
    base: dict[str, object] = dict(
        session=session, page_no=n, first_seq=first_seq, first_line=1, last_seq=first_seq + 2,
        end_line=3, transcript=f"User: page {n}\nAssistant: ok", text_tokens=12,
        first_ts=10.0 + n, last_ts=20.0 + n, render_key="abc123",
        facts=("2026-03-04", "v0.9.1"), missing=("\U0001fabf",),
        cues=("launch moved 출시 일정", ""),
    )
    base.update(kw)
    return PageRecord(**base)  # type: ignore[arg-type]


def test_seq_is_per_session_and_starts_at_zero(store: Store) -> None:
    assert store.turn_count("a") == 0
    assert [store.append_turn("a", "user", f"t{i}", float(i)).seq for i in range(3)] == [0, 1, 2]
    assert store.append_turn("b", "user", "x", 0.0).seq == 0
    assert (store.turn_count("a"), store.turn_count("b")) == (3, 1)


@pytest.mark.parametrize("text", ODD_TEXTS, ids=range(len(ODD_TEXTS)))
def test_turn_text_roundtrips_exactly(store: Store, text: str) -> None:
    meta = {"tool_call_id": "call_1", "tool_calls": [{"id": "c1", "args": {"q": "ü"}}],
            "nested": {"k": [1, 2.5, None, "ü", True]}}
    t = store.append_turn("s", "assistant", text, 1772352000.25, meta)
    [back] = store.get_turns("s", 0, 1)
    assert back == Turn("s", 0, "assistant", text, 1772352000.25, meta)
    assert t == back


def test_changing_a_turns_meta_after_storing_or_reading_it_changes_nothing_stored(
    store: Store,
) -> None:
    """The in-process store kept the caller's nested meta objects and handed its stored
    dicts out: editing a read turn's meta (or a list passed in) edited the archive."""
    meta: dict[str, Any] = {"tags": ["a"], "nested": {"k": 1}}
    store.append_turn("s", "user", "hi", 0.0, meta)
    store.append_turns("s", [("user", "yo", 1.0, meta)])
    store.append_turn("s", "user", "no meta", 2.0).meta["added"] = 1  # type: ignore[index]
    meta["tags"].append("changed by the caller")
    meta["nested"]["k"] = 2
    for turn in store.get_turns("s", 0, 3):
        turn.meta["tags"] = ["changed by a reader"]  # type: ignore[index]
        if "nested" in turn.meta:
            turn.meta["nested"]["k"] = 3  # type: ignore[index, call-overload]
    assert [t.meta for t in store.get_turns("s", 0, 3)] == [
        {"tags": ["a"], "nested": {"k": 1}}] * 2 + [{}]


def test_get_turns_ranges(store: Store) -> None:
    store.append_turns("s", [("user", f"t{i}", float(i), None) for i in range(10)])
    assert [t.seq for t in store.get_turns("s", 3, 6)] == [3, 4, 5]
    assert [t.seq for t in store.get_turns("s", -5, 2)] == [0, 1]
    assert store.get_turns("s", 8, 100)[-1].text == "t9"
    assert store.get_turns("s", 6, 3) == []
    assert store.get_turns("s", 0, 0) == []
    assert [t.seq for t in store.get_turns("s", 0, 2**70)] == list(range(10))
    assert store.get_turns("nobody", 0, 10) == []


def test_append_turns_keeps_order(store: Store) -> None:
    store.append_turn("s", "user", "first", 0.0)
    got = store.append_turns("s", [("assistant", "a", 1.0, None), ("user", "b", 2.0, {"x": 1})])
    assert [(t.seq, t.text) for t in got] == [(1, "a"), (2, "b")]
    assert store.get_turns("s", 0, 3)[2].meta == {"x": 1}
    assert store.append_turns("s", []) == []
    big = store.append_turns("s", [("user", f"b{i}", float(i), None) for i in range(2500)])
    assert [t.seq for t in big] == list(range(3, 2503))
    assert [t.text for t in store.get_turns("s", 3, 2503)] == [f"b{i}" for i in range(2500)]


def test_pages_append_in_order(store: Store) -> None:
    assert store.page_count("s") == 0
    assert store.add_page(page("s", 0))
    assert store.add_page(page("s", 1, first_seq=2))
    assert not store.add_page(page("s", 1, first_seq=2))  # another writer sealed it
    assert not store.add_page(page("s", 0))
    with pytest.raises(PageConflictError, match="page 5"):
        store.add_page(page("s", 5))
    assert store.page_count("s") == 2
    assert store.get_pages("s", 0, 10) == [page("s", 0), page("s", 1, first_seq=2)]
    assert store.get_pages("s", 1, 2)[0].facts == ("2026-03-04", "v0.9.1")
    assert store.get_pages("s", 1, 2)[0].cues == ("launch moved 출시 일정", "")


def test_a_sealed_page_is_stored_only_over_its_turns(store: Store) -> None:
    """add_sealed_page (what the memory seals with) refuses a page whose turns the turn
    log does not hold (a session deleted since the page was made): stored, it would stand
    over a missing turn log and fail every later context of the session."""
    with pytest.raises(PageConflictError, match="turn log holds 0 turns"):
        store.add_sealed_page(page("s", 0))  # turns 0..2 of a session with none
    store.append_turns("s", [("user", "x", 0.0, None)] * 2)
    with pytest.raises(PageConflictError, match="turn log holds 2 turns"):
        store.add_sealed_page(page("s", 0))
    assert store.page_count("s") == 0
    store.append_turn("s", "user", "x", 0.0)
    assert store.add_sealed_page(page("s", 0))
    assert not store.add_sealed_page(page("s", 0))  # another writer sealed it
    with pytest.raises(PageConflictError, match="page 5"):
        store.add_sealed_page(page("s", 5))
    assert store.get_pages("s", 0, 10) == [page("s", 0)]
    assert store.get_pages("s", -3, 1) == [page("s", 0)]
    assert store.get_pages("s", 2, 5) == []
    assert store.get_pages("other", 0, 5) == []


def test_racing_page_writers_store_each_page_once(store: Store) -> None:
    wins: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        for n in range(20):
            if store.add_page(page("s", n, first_seq=3 * n)):
                with lock:
                    wins.append(n)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(20))  # every page won by exactly one writer
    assert [p.page_no for p in store.get_pages("s", 0, 100)] == list(range(20))


def test_blobs(store: Store) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB with every byte value
    assert store.get_blob("s", "png:1") is None
    store.put_blob("s", "png:1", data)
    store.put_blob("s", "rec:x:1", b"")
    assert store.get_blob("s", "png:1") == data
    assert store.get_blob("s", "rec:x:1") == b""
    store.put_blob("s", "png:1", b"new")
    assert store.get_blobs("s", ["png:1", "missing", "rec:x:1"]) == [b"new", None, b""]
    assert store.get_blobs("s", []) == []
    assert store.get_blob("t", "png:1") is None


@pytest.mark.parametrize("transcript", ODD_TEXTS[:8], ids=range(8))
def test_page_blobs_are_written_only_while_the_page_is_there(
    store: Store, transcript: str
) -> None:
    """An artefact of a page drawn before its session was deleted (or begun again, with
    another page under the same number and cache key) must not land in the session."""
    shown = page("s", 0, transcript=transcript)
    assert not store.put_page_blob(shown, "rec:0", b"old")  # never stored: refused
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(shown)
    assert store.put_page_blob(shown, "rec:0", b"read")
    assert asyncio.run(store.aput_page_blob(shown, "png:0", b"drawn"))
    assert store.get_blobs("s", ["rec:0", "png:0"]) == [b"read", b"drawn"]
    store.delete_session("s")
    assert not store.put_page_blob(shown, "rec:0", b"late")
    assert not asyncio.run(store.aput_page_blob(shown, "rec:0", b"late"))
    assert "s" not in set(store.sessions()) and store.get_blob("s", "rec:0") is None
    store.append_turn("s", "user", "y", 0.0)
    store.add_page(page("s", 0, transcript=transcript + " and more"))  # same number, key
    assert not store.put_page_blob(shown, "rec:0", b"late")
    assert not store.put_page_blob(page("s", 0, transcript=transcript + " and more",
                                        render_key="other"), "rec:0", b"late")
    assert store.get_blob("s", "rec:0") is None


@pytest.mark.parametrize("write", ["put_page_blob", "swap_state"])
def test_page_blob_check_and_write_are_one_step(
    store: Store, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """Another thread deletes the session and begins it again, with a new page 0, just
    as the page is found to be the same: it must wait until the blob is written (and
    then deletes it), or the old page's artefact would land on the new page. A swap of
    session state guarded by the page likewise (the old life's decay mark would land in
    the new life, whose state the delete emptied, so "nothing stored" matches again)."""
    old, new = page("s", 0, transcript="User: old"), page("s", 0, transcript="User: new")
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(old)

    def begin_again() -> None:
        store.delete_session("s")
        store.append_turn("s", "user", "y", 0.0)
        store.add_page(new)

    racer = threading.Thread(target=begin_again)
    real = store_module.same_page

    def same_page_then_race(a: PageRecord, b: PageRecord) -> bool:
        if not racer.is_alive() and racer.ident is None:
            racer.start()
            racer.join(0.5)  # an atomic backend keeps it waiting until the write is done
        return real(a, b)

    for module in (store_module, sqlite_store_module):
        monkeypatch.setattr(module, "same_page", same_page_then_race)
    if write == "put_page_blob":
        assert store.put_page_blob(old, "rec:0", b"old")
    else:
        assert store.swap_state("s", "mark/x", None, b"old", page=old)
    if racer.ident is None:
        pytest.skip("this backend checks and writes in one server-side script: there is "
                    "no point in between for another client to act")
    racer.join()
    assert store.get_pages("s", 0, 1) == [new]
    assert store.get_blob("s", "rec:0") is None and store.get_state("s", "mark/x") is None


def test_a_session_keeps_one_epoch_for_its_life_and_gets_a_new_one_when_begun_again(
    store: Store,
) -> None:
    """The epoch names a life of the session: none before its first turn, the same
    through appends, pages and forgetting (and asked for again, as every session stored
    before epochs existed is asked first), another once deleted and begun again."""
    assert store.session_epoch("s") == ""
    store.append_turns("s", [("user", f"t{i}", float(i), None) for i in range(4)])
    epoch = store.session_epoch("s")
    assert epoch and store.session_epoch("s") == epoch
    assert store.add_sealed_page(page("s", 0), epoch=epoch)
    store.append_turn("s", "user", "more", 5.0)
    store.forget_turns("s", 2)
    store.put_blob("s", "png/x", b"png")
    assert store.session_epoch("s") == epoch
    assert store.session_epoch("other") == ""
    store.delete_session("s")
    assert store.session_epoch("s") == ""
    store.append_turn("s", "user", "again", 6.0)
    assert store.session_epoch("s") not in ("", epoch)


@pytest.mark.parametrize("asked", [False, True], ids=["new-life-unasked", "new-life-asked"])
@pytest.mark.parametrize("page_no", [0, 1])
def test_a_page_sealed_from_a_deleted_life_is_refused_in_the_new_life(
    store: Store, page_no: int, asked: bool,
) -> None:
    """The deleted-and-begun-again race: a writer read the old life's turns and epoch
    and sealed a page; before it adds the page the session is deleted and begun again,
    and grows as many turns (more) and as many pages. The turn check alone took the stale
    page, and the new life showed text never said in it. With the epoch it is refused,
    whether or not the new life was asked for its epoch yet, and nothing stored changes."""
    old = [("user", f"old {i}", float(i), None) for i in range(6)]
    store.append_turns("s", old)
    if page_no:
        assert store.add_sealed_page(page("s", 0))
    epoch = store.session_epoch("s")
    assert epoch
    stale = page("s", page_no, first_seq=3 * page_no, transcript="User: old 0")

    store.delete_session("s")
    new = [("user", f"new {i}", 100.0 + i, None) for i in range(8)]
    store.append_turns("s", new)
    mine = page("s", 0, transcript="User: new 0")
    if page_no:
        assert store.add_sealed_page(mine)
    now = store.session_epoch("s") if asked else None
    with pytest.raises(PageConflictError, match="earlier life"):
        store.add_sealed_page(stale, epoch=epoch)
    with pytest.raises(PageConflictError, match="earlier life"):
        store.add_sealed_page(stale, epoch="")  # "" names no life

    assert store.get_pages("s", 0, 10) == ([mine] if page_no else [])
    assert [t.text for t in store.get_turns("s", 0, 100)] == [t[1] for t in new]
    assert store.session_epoch("s") == (now or store.session_epoch("s")) != epoch
    # the normal path: a page sealed in the new life, with its epoch, is stored
    fresh = page("s", page_no, first_seq=3 * page_no, transcript="User: new 3")
    assert store.add_sealed_page(fresh, epoch=store.session_epoch("s"))
    assert not store.add_sealed_page(fresh, epoch=store.session_epoch("s"))  # sealed twice
    assert store.get_pages("s", page_no, page_no + 1) == [fresh]


def test_pages_and_blobs_of_many_sessions_at_once(store: Store) -> None:
    """The batched lookups and writes a worker uses answer as the one-session calls do,
    in the order asked, across sessions (odd ids too), with gaps where nothing is."""
    sessions = ["a", *ODD_SESSIONS[:3]]
    for s in sessions:
        store.append_turn(s, "user", "x", 0.0)
        for n in range(2):
            store.add_page(page(s, n, transcript=f"User: {s} {n} 서울 😀"))
    refs = [(s, n) for s in reversed(sessions) for n in (1, 0, 2, -1)] + [("nobody", 0)]
    got = store.get_pages_of(refs)
    one = [store.get_pages(s, n, n + 1) if n >= 0 else [] for s, n in refs]
    assert got == [p[0] if p else None for p in one]
    assert [p is None for p in got] == [n not in (0, 1) or s == "nobody" for s, n in refs]
    assert store.get_pages_of([]) == []

    blobs = [(p, f"rec:{p.page_no}", f"{p.session}/{p.page_no}".encode())
             for p in (r for r in got if r is not None)]
    gone = page("a", 0, transcript="User: not the page a holds")
    assert store.put_page_blobs([*blobs, (gone, "rec:9", b"late")]) == [True] * len(blobs) + [False]
    assert store.put_page_blobs([]) == []
    asked = [(s, k) for s in sessions for k in ("rec:1", "rec:9", "rec:0")] + [("nobody", "rec:0")]
    assert store.get_blobs_of(asked) == [
        f"{s}/{k[-1]}".encode() if k != "rec:9" else None for s, k in asked[:-1]] + [None]
    assert store.get_blobs_of([]) == []


def test_session_state(store: Store) -> None:
    assert store.get_state("s", "mark/abc") is None
    store.put_state("s", "mark/abc", b'{"page_no":3,"level":1}')
    store.put_state("s", "mark/abc", b'{"page_no":4,"level":0}')
    store.put_state("t", "mark/abc", b"other")
    assert store.get_state("s", "mark/abc") == b'{"page_no":4,"level":0}'
    assert asyncio.run(store.aget_state("t", "mark/abc")) == b"other"
    asyncio.run(store.aput_state("t", "x", b"y"))
    assert store.get_state("t", "x") == b"y"
    store.delete_session("s")
    assert store.get_state("s", "mark/abc") is None and store.get_state("t", "x") == b"y"


@pytest.mark.parametrize("session", ODD_SESSIONS, ids=range(len(ODD_SESSIONS)))
def test_odd_session_ids_are_opaque_and_isolated(store: Store, session: str) -> None:
    neighbours = ["a", "a:b", "glob", "globx", "%", "with", session + "x", session[:-1] or "z"]
    for n in neighbours:
        if n != session:
            store.append_turn(n, "user", f"neighbour {n}", 0.0)
            store.put_blob(n, "k", b"n")
    store.append_turn(session, "user", "mine", 0.0)
    store.put_blob(session, "k", b"mine")
    store.add_page(page(session, 0))
    assert [t.text for t in store.get_turns(session, 0, 10)] == ["mine"]
    assert store.get_blob(session, "k") == b"mine"
    assert session in set(store.sessions())
    store.delete_session(session)
    assert store.turn_count(session) == 0 and store.page_count(session) == 0
    for n in neighbours:
        if n != session:
            assert [t.text for t in store.get_turns(n, 0, 10)] == [f"neighbour {n}"]
            assert store.get_blob(n, "k") == b"n"


def test_delete_session_forgets_everything_and_restarts_seq(store: Store) -> None:
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(page("s", 0))
    store.put_blob("s", "k", b"v")
    store.append_turn("keep", "user", "y", 0.0)
    store.delete_session("s")
    assert "s" not in set(store.sessions())
    assert (store.turn_count("s"), store.page_count("s"), store.get_blob("s", "k")) == (0, 0, None)
    assert store.append_turn("s", "user", "again", 0.0).seq == 0
    assert store.turn_count("keep") == 1
    store.delete_session("never-existed")


def test_forget_turns_keeps_seq_pages_and_blobs(store: Store) -> None:
    store.append_turns("s", [("user", f"t{i}", float(i), None) for i in range(6)])
    store.add_page(page("s", 0))
    store.put_blob("s", "k", b"v")
    assert store.forget_turns("s", 4) == 4
    assert store.forget_turns("s", 4) == 0
    assert store.forget_turns("s", 2) == 0
    assert [t.seq for t in store.get_turns("s", 0, 10)] == [4, 5]
    assert store.get_turns("s", 0, 4) == []
    assert store.turn_count("s") == 6
    assert store.append_turn("s", "user", "next", 9.0).seq == 6
    assert store.page_count("s") == 1 and store.get_blob("s", "k") == b"v"
    assert store.forget_turns("s", 100) == 3
    assert store.get_turns("s", 0, 100) == [] and store.turn_count("s") == 7
    assert "s" in set(store.sessions())  # forgetting text is not deleting the session
    assert store.forget_turns("nobody", 3) == 0


def test_sessions_lists_sessions_with_turns(store: Store) -> None:
    for s in ("x", "y y", "z:1"):
        store.append_turn(s, "user", "hi", 0.0)
    store.put_blob("only-blobs", "k", b"v")
    store.add_page(page("only-pages", 0))
    assert set(store.sessions()) == {"x", "y y", "z:1"}


def test_swap_state_writes_only_over_the_value_read(store: Store) -> None:
    """A compare-and-set: nothing stored matches only ``None``, a stored value (the empty
    one too) only itself; a refused swap changes nothing."""
    odd = bytes(range(256))
    assert not store.swap_state("s", "mark/a", b"", b"1")  # nothing stored is not b""
    assert store.get_state("s", "mark/a") is None
    assert store.swap_state("s", "mark/a", None, b"")
    assert store.get_state("s", "mark/a") == b""
    assert not store.swap_state("s", "mark/a", None, b"2")  # b"" is stored, not nothing
    assert store.swap_state("s", "mark/a", b"", odd)
    assert not store.swap_state("s", "mark/a", odd[:-1], b"3")
    assert not store.swap_state("s", "mark/a", b"", b"3")
    assert store.get_state("s", "mark/a") == odd
    assert not asyncio.run(store.aswap_state("s", "mark/a", b"", b"4"))
    assert asyncio.run(store.aswap_state("s", "mark/a", odd, b"4"))
    store.put_state("s", "mark/a", b"5")  # a plain put is what a swap compares with too
    assert store.swap_state("s", "mark/a", b"5", b"6")
    assert store.swap_state("t", "mark/a", None, b"t")  # other sessions and keys apart
    assert store.swap_state("s", "mark/b", None, b"b")
    assert [store.get_state(s, k) for s, k in (("s", "mark/a"), ("s", "mark/b"),
                                                ("t", "mark/a"), ("t", "mark/b"))] == [
        b"6", b"b", b"t", None]
    store.delete_session("s")
    assert not store.swap_state("s", "mark/a", b"6", b"7")
    assert store.get_state("s", "mark/a") is None and store.get_state("t", "mark/a") == b"t"


def test_swap_state_with_a_page_writes_only_while_the_session_holds_it(store: Store) -> None:
    """Given a page, a swap writes only while the session holds that very page: not
    before it is stored, not after the session was deleted, not over a new life's page of
    the same number."""
    shown = page("s", 0, transcript=ODD_TEXTS[2])
    assert not store.swap_state("s", "mark/a", None, b"1", page=shown)
    assert store.get_state("s", "mark/a") is None
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(shown)
    assert store.swap_state("s", "mark/a", None, b"1", page=shown)
    assert not store.swap_state("s", "mark/a", b"0", b"2", page=shown)  # value still counts
    assert asyncio.run(store.aswap_state("s", "mark/a", b"1", b"2", page=shown))
    assert not store.swap_state("s", "mark/a", b"2", b"3", page=page("s", 1))
    assert store.get_state("s", "mark/a") == b"2"
    store.delete_session("s")
    assert not store.swap_state("s", "mark/a", None, b"late", page=shown)
    assert not asyncio.run(store.aswap_state("s", "mark/a", None, b"late", page=shown))
    store.append_turn("s", "user", "y", 0.0)
    store.add_page(page("s", 0, transcript=ODD_TEXTS[2] + " and more"))
    assert not store.swap_state("s", "mark/a", None, b"late", page=shown)
    assert store.get_state("s", "mark/a") is None


def test_concurrent_swappers_one_wins_each_round(store: Store) -> None:
    """Threads that read the same value and swap at once: exactly one wins each round,
    and the value stored is the winner's. Then read-increment-swap loops lose no
    increment (what a plain read-then-put would)."""
    threads_n, rounds = 6, 15
    barrier = threading.Barrier(threads_n)
    won: list[list[bytes]] = [[] for _ in range(rounds)]
    errors: list[BaseException] = []

    def swapper(t: int) -> None:
        try:
            for r in range(rounds):
                seen = store.get_state("s", "n")
                barrier.wait()  # all have read; none has written
                mine = f"{r}:{t}".encode()
                if store.swap_state("s", "n", seen, mine):
                    won[r].append(mine)
                barrier.wait()  # all have swapped
            for _ in range(20):
                while True:
                    seen = store.get_state("s", "count")
                    if store.swap_state("s", "count", seen, b"%d" % (int(seen or 0) + 1)):
                        break
        except BaseException as exc:  # pragma: no cover - reported below
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=swapper, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert [len(w) for w in won] == [1] * rounds
    assert store.get_state("s", "n") == won[-1][0]
    assert store.get_state("s", "count") == b"%d" % (threads_n * 20)


def test_concurrent_appends_get_distinct_ordered_seqs(store: Store) -> None:
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for i in range(25):
                store.append_turn("s", "user", f"w{w}-{i}", float(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    turns = store.get_turns("s", 0, 1000)
    assert [t.seq for t in turns] == list(range(150))
    assert sorted(t.text for t in turns) == sorted(f"w{w}-{i}" for w in range(6) for i in range(25))
    for w in range(6):  # each writer's turns keep their order
        mine = [int(t.text.split("-")[1]) for t in turns if t.text.startswith(f"w{w}-")]
        assert mine == sorted(mine)


def test_async_twins(store: Store) -> None:
    async def go() -> None:
        t = await store.aappend_turn("s", "user", "hi", 1.0)
        more = await store.aappend_turns("s", [("assistant", "yo", 2.0, {"k": "v"})])
        assert (t.seq, more[0].seq) == (0, 1)
        assert await store.aappend_turns("s", []) == []
        assert await store.aturn_count("s") == 2
        assert [x.text for x in await store.aget_turns("s", 0, 2)] == ["hi", "yo"]
        assert (await store.aget_turns("s", 1, 2))[0].meta == {"k": "v"}
        assert await store.aadd_page(page("s", 0))
        assert not await store.aadd_page(page("s", 0))
        with pytest.raises(PageConflictError):
            await store.aadd_page(page("s", 3))
        assert await store.apage_count("s") == 1
        assert (await store.aget_pages("s", 0, 1))[0] == page("s", 0)
        await store.aput_blob("s", "k", b"v")
        assert await store.aget_blob("s", "k") == b"v"
        assert await store.aget_blobs("s", ["k", "q"]) == [b"v", None]
        assert await store.asessions() == ["s"]
        assert await store.aforget_turns("s", 1) == 1
        await store.adelete_session("s")
        assert await store.aturn_count("s") == 0

    asyncio.run(go())


def test_async_and_sync_writers_share_one_order(store: Store) -> None:
    async def go() -> list[Turn]:
        return list(await asyncio.gather(
            *(store.aappend_turn("s", "user", f"a{i}", float(i)) for i in range(200))
        ))

    acked = asyncio.run(go())
    acked += [store.append_turn("s", "user", f"b{i}", 0.0) for i in range(10)]
    assert sorted(t.seq for t in acked) == list(range(210))
    stored = {t.seq: t.text for t in store.get_turns("s", 0, 1000)}
    assert all(stored[t.seq] == t.text for t in acked)
