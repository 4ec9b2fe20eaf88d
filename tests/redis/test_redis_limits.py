"""Sliding TTL and per-session caps."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

import pytest
import redis

from opticmem import SessionFullError, StoreError, redis_store
from opticmem.records import PageRecord
from opticmem.redis_store import RedisStore

pytestmark = pytest.mark.redis

KEYS = ("turns", "pages", "meta", "blobs")


def page(session: str, n: int) -> PageRecord:
    return PageRecord(session=session, page_no=n, first_seq=0, first_line=0, last_seq=0,
                      end_line=1, transcript="p", text_tokens=1, first_ts=0.0, last_ts=0.0,
                      render_key="r")


def pttls(raw: redis.Redis, session: str) -> dict[str, int]:
    return {k: int(raw.pttl(f"opticmem:{{test:{session}}}:{k}")) for k in KEYS}


def test_no_ttl_by_default(store: RedisStore, raw: redis.Redis) -> None:
    store.append_turn("s", "user", "hi", 0.0)
    store.add_page(page("s", 0))
    store.put_blob("s", "k", b"v")
    assert int(raw.pttl("opticmem:{test:s}:turns")) == -1  # no expiry
    assert int(raw.pttl("opticmem:{test:s}:b:k")) == -1


def test_ttl_slides_with_every_write_and_then_expires(redis_url: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, tenant="test", ttl=timedelta(milliseconds=1500))
    store.append_turn("s", "user", "hi", 0.0)
    store.add_page(page("s", 0))
    store.put_blob("s", "png", os.urandom(2000))
    store.append_turn("other", "user", "hi", 0.0)
    first = pttls(raw, "s")
    assert all(0 < v <= 1500 for v in first.values()), first
    assert 0 < int(raw.pttl("opticmem:{test:s}:b:png")) <= 1500

    for _ in range(3):  # keep writing: the session outlives its TTL several times over
        time.sleep(0.7)
        store.append_turn("s", "user", "still here", 0.0)
        assert all(v > 1000 for v in pttls(raw, "s").values())
    assert store.turn_count("s") == 4
    assert store.get_blob("s", "png") is not None  # swept along with the session
    assert store.turn_count("other") == 0  # idle for 2.1 s: gone
    assert "other" not in set(store.sessions())

    time.sleep(1.7)  # now idle past the TTL
    assert store.turn_count("s") == 0 and store.page_count("s") == 0
    assert store.get_blob("s", "png") is None
    assert [k for k in raw.scan_iter() if b"{test:s}" in k] == []
    assert store.append_turn("s", "user", "a new session", 0.0).seq == 0
    store.close()


def test_a_session_that_expired_and_began_again_shows_only_its_new_life(
    redis_url: str,
) -> None:
    from opticmem import OpticalMemory, RenderSettings

    store = RedisStore.from_url(redis_url, tenant="test", ttl=timedelta(milliseconds=800))
    mem = OpticalMemory(store, codec=None, verbatim_turns=2,
                        render_settings=RenderSettings(max_rows=6))
    for i in range(8):
        mem.add("u", "user", f"OLD {i}: my card is 4111-1111-1111-{1000 + i} " + "x " * 40)
    assert any("OLD" in p.record.transcript for p in mem.context("u").pages)
    assert mem.recall("u", "card 4111", decode=False)
    time.sleep(1.2)  # the user goes quiet past the TTL; then comes back
    assert store.turn_count("u") == 0
    for i in range(60):  # a longer new life: more pages than the old one had
        mem.add("u", "user", f"new {i}: " + "talk " * 12)
    ctx = mem.context("u")
    assert ctx.pages and not any("OLD" in p.record.transcript for p in ctx.pages)
    assert [p.record for p in ctx.pages] == mem.pages("u")[-len(ctx.pages):]
    assert not any("4111" in p.text for p in mem.recall("u", "card 4111", decode=False))
    store.close()


def test_ttl_applies_to_every_kind_of_write(redis_url: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, tenant="test", ttl=60)
    store.put_blob("b", "k", b"v")
    store.add_page(page("p", 0))
    store.append_turns("t", [("user", "x", 0.0, None)] * 3)
    store.forget_turns("t", 1)
    store.put_state("m", "mark/x", b"{}")
    assert store.swap_state("w", "mark/x", None, b"{}")
    for s in ("b", "p", "t", "m", "w"):
        for key in raw.scan_iter(match=f"opticmem:{{test:{s}}}:*"):
            assert 0 < int(raw.pttl(key)) <= 60_000, key
    store.close()


def test_a_swap_of_state_refreshes_the_ttl_only_when_it_writes(
    redis_url: str, raw: redis.Redis
) -> None:
    """A swap that writes is activity of the session (a context raised its decay mark),
    as a put_state is; a refused one writes nothing, so it touches no key and makes none
    (not even for a deleted session, whose keys it would bring back)."""
    store = RedisStore.from_url(redis_url, tenant="test", ttl=60)
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(page("s", 0))
    meta = "opticmem:{test:s}:meta"
    raw.pexpire("opticmem:{test:s}:turns", 5_000)
    assert not store.swap_state("s", "mark/x", b"{}", b"1")
    assert not store.swap_state("s", "mark/x", None, b"1", page=page("s", 1))
    assert int(raw.pttl("opticmem:{test:s}:turns")) <= 5_000
    assert raw.hget(meta, "state:mark/x") is None
    assert store.swap_state("s", "mark/x", None, b"1", page=page("s", 0))
    assert raw.hget(meta, "state:mark/x") == b"1"  # in the meta hash, as put_state keeps it
    assert int(raw.pttl("opticmem:{test:s}:turns")) > 5_000
    store.delete_session("s")
    assert not store.swap_state("s", "mark/x", None, b"2", page=page("s", 0))
    assert [k for k in raw.scan_iter() if b"{test:s}" in k] == []
    store.close()


def test_session_full_is_one_of_opticmems_store_errors() -> None:
    assert redis_store.SessionFullError is SessionFullError  # the old import path works
    assert issubclass(SessionFullError, StoreError)


def test_max_turns_refuses_with_a_typed_error_and_loses_nothing(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url, tenant="test", max_turns=5)
    assert [t.seq for t in store.append_turns("s", [("user", f"t{i}", 0.0, None)
                                                   for i in range(4)])] == [0, 1, 2, 3]
    with pytest.raises(SessionFullError, match="max_turns is 5"):
        store.append_turns("s", [("user", "a", 0.0, None), ("user", "b", 0.0, None)])
    assert store.turn_count("s") == 4  # the refused batch left nothing behind
    assert store.append_turn("s", "user", "t4", 0.0).seq == 4
    with pytest.raises(SessionFullError):
        store.append_turn("s", "user", "t5", 0.0)
    assert [t.text for t in store.get_turns("s", 0, 10)] == [f"t{i}" for i in range(5)]
    assert store.append_turn("other", "user", "caps are per session", 0.0).seq == 0

    assert store.forget_turns("s", 2) == 2  # forgetting makes room
    assert [t.seq for t in store.append_turns("s", [("user", "x", 0.0, None)] * 2)] == [5, 6]
    with pytest.raises(SessionFullError):
        store.append_turn("s", "user", "t7", 0.0)
    store.delete_session("s")
    assert store.append_turn("s", "user", "fresh", 0.0).seq == 0
    store.close()


def test_max_turns_holds_under_concurrent_writers(redis_url: str) -> None:
    import threading

    store = RedisStore.from_url(redis_url, tenant="test", max_turns=100)
    acked: list[int] = []
    refused = [0]
    lock = threading.Lock()

    def writer() -> None:
        for i in range(40):
            try:
                t = store.append_turn("s", "user", f"{i}", 0.0)
            except SessionFullError:
                with lock:
                    refused[0] += 1
            else:
                with lock:
                    acked.append(t.seq)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(acked) == list(range(100)) and refused[0] == 60
    assert store.turn_count("s") == 100
    store.close()


def test_max_blob_bytes_evicts_the_oldest_derived_blobs(redis_url: str, raw: redis.Redis) -> None:
    store = RedisStore.from_url(redis_url, tenant="test", max_blob_bytes=3100)
    store.append_turn("s", "user", "turns are never evicted", 0.0)
    store.put_state("s", "mark/x", b'{"page_no": 3, "level": 1}')
    blobs = {f"png:{i}": os.urandom(1000) for i in range(5)}  # incompressible
    for k, v in blobs.items():
        store.put_blob("s", k, v)
    got = store.get_blobs("s", list(blobs))
    assert got[:2] == [None, None]  # the two oldest made room
    assert got[2:] == [blobs["png:2"], blobs["png:3"], blobs["png:4"]]
    store.put_blob("s", "png:2", blobs["png:2"])  # re-put refreshes its place in line
    store.put_blob("s", "png:5", os.urandom(1000))
    assert store.get_blob("s", "png:3") is None and store.get_blob("s", "png:2") is not None
    huge = os.urandom(5000)  # bigger than the cap on its own: kept, everything else goes
    store.put_blob("s", "huge", huge)
    assert store.get_blob("s", "huge") == huge
    assert store.get_blobs("s", ["png:2", "png:4", "png:5"]) == [None, None, None]
    assert int(raw.zcard("opticmem:{test:s}:blobs")) == 1
    assert store.get_turns("s", 0, 5)[0].text == "turns are never evicted"
    assert store.get_state("s", "mark/x") == b'{"page_no": 3, "level": 1}'  # nor is state
    store.put_blob("other", "k", os.urandom(3000))  # caps are per session
    assert store.get_blob("s", "huge") == huge
    store.close()


def test_bad_settings_are_refused(redis_url: str) -> None:
    kwargs: dict[str, Any]
    for kwargs in ({"ttl": 0}, {"ttl": -1}, {"max_turns": 0}, {"max_turns": True},
                   {"max_blob_bytes": -5}, {"retries": -1}):
        with pytest.raises(ValueError):
            RedisStore.from_url(redis_url, **kwargs)
