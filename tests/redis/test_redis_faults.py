"""Faults: an unreachable server, a server killed and restarted mid-run, replies lost after
the server executed an append, and corrupt records or blobs."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import pytest
import redis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry

from opticmem.errors import CorruptRecordError, StoreError, StoreUnavailableError
from opticmem.records import PageRecord, Turn
from opticmem.redis_store import RedisStore
from tests.redis.server import RedisServer, free_port

pytestmark = pytest.mark.redis


def page(session: str, n: int) -> PageRecord:
    return PageRecord(session=session, page_no=n, first_seq=0, first_line=0, last_seq=0,
                      end_line=1, transcript=f"page {n}", text_tokens=1, first_ts=0.0,
                      last_ts=0.0, render_key="r")


# ------------------------------------------------------------------ unreachable
def test_unreachable_at_start_names_the_url_without_its_password() -> None:
    port = free_port()  # nothing listens there
    url = f"redis://opticmem:hunter2@127.0.0.1:{port}/3"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        RedisStore.from_url(url)
    assert time.monotonic() - t0 < 5  # fails fast: no retry loop at start
    msg = str(info.value)
    assert f"127.0.0.1:{port}" in msg and "***" in msg and "hunter2" not in msg
    assert isinstance(info.value, ConnectionError)  # catchable as the builtin too


def test_bad_url_is_a_typed_error() -> None:
    with pytest.raises(StoreError):
        RedisStore.from_url("http://127.0.0.1:1/0")


def test_server_gone_for_good_raises_after_the_retries(
    server_factory: Callable[..., RedisServer],
) -> None:
    server = server_factory()
    store = RedisStore.from_url(server.url, retries=3, backoff=ConstantBackoff(0.05))
    store.append_turn("s", "user", "before", 0.0)
    server.kill()
    for call in (lambda: store.append_turn("s", "user", "after", 0.0),
                 lambda: store.get_turns("s", 0, 10),
                 lambda: store.add_page(page("s", 0)),
                 lambda: list(store.sessions())):
        with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1.*after 3 retries"):
            call()

    async def go() -> None:
        with pytest.raises(StoreUnavailableError):
            await store.aappend_turn("s", "user", "after", 0.0)
        await store.aclose()

    asyncio.run(go())


# ------------------------------------------------------------------ kill and restart
def test_kill_and_restart_with_aof_loses_no_acknowledged_turn(
    server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    server = server_factory()  # AOF on, appendfsync always
    store = RedisStore.from_url(server.url, tenant="bot")
    per_writer, sessions = 250, ["s0", "s1", "s2"]
    acked: list[Turn] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            for i in range(per_writer):
                t = store.append_turn(sessions[i % 3], "user", f"w{w}-{i}", float(i))
                with lock:
                    acked.append(t)
        except BaseException as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    def async_writer(w: int) -> None:
        async def go() -> None:
            for i in range(per_writer):
                t = await store.aappend_turn(sessions[i % 3], "assistant", f"w{w}-{i}", 0.0)
                with lock:
                    acked.append(t)

        try:
            asyncio.run(go())
        except BaseException as exc:  # pragma: no cover - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads.append(threading.Thread(target=async_writer, args=(3,)))
    for t in threads:
        t.start()
    while len(acked) < 150 and not errors:
        time.sleep(0.005)
    server.kill()  # SIGKILL mid-run: no shutdown, no final save
    time.sleep(0.5)
    server.start()  # same port and directory: replays the AOF
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(acked) == 4 * per_writer
    assert "retry 1 in" in caplog.text  # the writers did hit the dead server and retried

    fresh = RedisStore.from_url(server.url, tenant="bot")  # read back on new connections
    stored: dict[str, list[Turn]] = {s: fresh.get_turns(s, 0, 10_000) for s in sessions}
    for _s, turns in stored.items():
        assert [t.seq for t in turns] == list(range(len(turns)))  # one order, no gaps
        texts = [t.text for t in turns]
        assert len(texts) == len(set(texts)), "a turn was stored twice"
    by_key = {(t.session, t.seq): t for turns in stored.values() for t in turns}
    for t in acked:  # every acknowledged turn is there, exactly where it was acknowledged
        assert by_key[(t.session, t.seq)] == t
    assert sum(len(v) for v in stored.values()) == len(acked)
    fresh.close()
    store.close()


# ------------------------------------------------------------------ lost replies
def _busy(url: str, seconds: float) -> threading.Thread:
    """Keep the server busy (a Lua loop) so that commands pile up unanswered."""
    script = (
        "local s = redis.call('TIME') "
        "while true do local t = redis.call('TIME') "
        "if (t[1] - s[1]) * 1000000 + (t[2] - s[2]) > tonumber(ARGV[1]) then return 1 end end"
    )

    def run() -> None:
        with redis.Redis.from_url(url) as r:
            r.eval(script, 0, int(seconds * 1_000_000))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.15)  # let the script start
    return thread


@pytest.mark.parametrize(
    ("mode", "session", "settings"),
    [("sync", "s", {}), ("async", "s", {}),
     ("sync", "a very long id " * 20, {"ttl": 600, "max_turns": 1000})],  # Lua append path
    ids=["sync", "async", "sync-ttl-cap-digest-id"],
)
def test_an_append_whose_reply_was_lost_is_stored_once(
    redis_url: str, mode: str, session: str, settings: dict[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The server runs the append, the client times out before the reply and retries:
    the retry must find the stored turn instead of appending it again."""
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    store = RedisStore.from_url(redis_url, tenant="t", socket_timeout=0.3,
                                retries=30, backoff=ConstantBackoff(0.05), **settings)
    store.append_turn(session, "user", "before", 0.0)
    items = [("user", "once", 1.0, None), ("assistant", "ok", 2.0, {"k": 1})]
    if mode == "sync":
        busy = _busy(redis_url, 1.2)
        turns = store.append_turns(session, items)
    else:
        async def go() -> tuple[list[Turn], threading.Thread]:
            try:
                await store.aturn_count(session)  # connect first: the append must be sent
                thread = _busy(redis_url, 1.2)
                return await store.aappend_turns(session, items), thread
            finally:
                await store.aclose()

        turns, busy = asyncio.run(go())
    busy.join()
    assert "stored before its reply was lost" in caplog.text  # the retry found it
    check = RedisStore.from_url(redis_url, tenant="t")
    assert [t.seq for t in turns] == [1, 2]
    assert [t.text for t in check.get_turns(session, 0, 10)] == ["before", "once", "ok"]
    assert list(check.sessions()) == [session]
    check.close()


def test_a_client_that_retries_itself_is_warned_about(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with caplog.at_level(logging.WARNING, logger="opticmem.redis_store"):
        RedisStore(client=redis.Redis(port=port))  # redis-py's constructor default retries
    assert "stored twice" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="opticmem.redis_store"):
        RedisStore(client=redis.Redis(port=port, retry=Retry(NoBackoff(), 0)))
        RedisStore(client=redis.Redis.from_url(redis_url))  # from_url: no retries
    assert caplog.text == ""


def test_scripts_are_reloaded_after_script_flush(store: RedisStore, raw: redis.Redis) -> None:
    assert store.add_page(page("s", 0))
    raw.script_flush()  # what a restarted server looks like to EVALSHA
    assert store.add_page(page("s", 1))
    store.put_blob("s", "k", b"v")
    assert store.forget_turns("s", 0) == 0
    raw.script_flush()
    shown = store.get_pages("s", 0, 2)
    assert store.put_page_blobs([(p, f"rec:{p.page_no}", b"read") for p in shown]) == [True] * 2
    assert store.get_blobs_of([("s", "rec:0"), ("s", "rec:1")]) == [b"read", b"read"]


# ------------------------------------------------------------------ corruption
def test_a_corrupt_turn_is_a_typed_error_and_the_rest_stays_readable(
    store: RedisStore, raw: redis.Redis
) -> None:
    store.append_turns("s", [("user", f"t{i}", float(i), None) for i in range(6)])
    store.add_page(page("s", 0))
    store.put_blob("s", "k", b"v")
    key = "opticmem:{test:s}:turns"
    raw.lset(key, 2, '{"role":"user","text":"t2"')  # truncated JSON
    with pytest.raises(CorruptRecordError, match=r"opticmem:\{test:s\}:turns turn 2"):
        store.get_turns("s", 0, 6)
    assert [t.text for t in store.get_turns("s", 3, 6)] == ["t3", "t4", "t5"]
    assert [t.text for t in store.get_turns("s", 0, 2)] == ["t0", "t1"]
    assert store.turn_count("s") == 6 and store.page_count("s") == 1
    assert store.get_blob("s", "k") == b"v" and store.get_pages("s", 0, 1) == [page("s", 0)]
    assert store.append_turn("s", "user", "t6", 6.0).seq == 6

    raw.lset(key, 4, '{"role":7,"text":"t4","ts":4.0}')  # valid JSON, wrong type
    with pytest.raises(CorruptRecordError, match="turn 4"):
        store.get_turns("s", 3, 7)
    raw.lset(key, 5, '1},{"role":"user","text":"x","ts":0')  # would merge with a neighbour
    with pytest.raises(CorruptRecordError, match="turn 5"):
        store.get_turns("s", 5, 7)
    assert store.get_turns("s", 6, 7)[0].text == "t6"


@pytest.mark.parametrize("ts", ["1" + "0" * 400, "1e999", "-Infinity", "NaN"])
def test_a_turn_whose_time_is_no_finite_number_is_a_corrupt_record(
    store: RedisStore, raw: redis.Redis, ts: str
) -> None:
    """The store refuses to write such a time; one found in Redis (damaged, or another
    writer's) is a CorruptRecordError too, not an OverflowError or a NaN handed on."""
    store.append_turn("s", "user", "t0", 0.0)
    raw.rpush("opticmem:{test:s}:turns", '{"role":"user","text":"t1","ts":' + ts + '}')
    with pytest.raises(CorruptRecordError, match="turn 1"):
        store.get_turns("s", 0, 2)
    assert store.get_turns("s", 0, 1)[0].text == "t0"


def test_a_corrupt_blob_is_a_typed_error_for_that_key_only(
    store: RedisStore, raw: redis.Redis
) -> None:
    store.append_turn("s", "user", "hi", 0.0)
    big = b"compressible " * 1000
    for k in ("png:0", "png:1", "rec:0"):
        store.put_blob("s", k, big)
    stored = cast(bytes, raw.get("opticmem:{test:s}:b:png%3A1"))
    assert stored is not None
    raw.set("opticmem:{test:s}:b:png%3A1", stored[:-5] + b"XXXXX")  # damaged payload
    raw.set("opticmem:{test:s}:b:rec%3A0", b"not a blob at all")
    with pytest.raises(CorruptRecordError, match=r"opticmem:\{test:s\}:b:png%3A1"):
        store.get_blob("s", "png:1")
    with pytest.raises(CorruptRecordError, match="rec%3A0"):
        store.get_blob("s", "rec:0")
    with pytest.raises(CorruptRecordError, match="png%3A1"):
        store.get_blobs("s", ["png:0", "png:1"])
    assert store.get_blob("s", "png:0") == big
    assert store.get_turns("s", 0, 1)[0].text == "hi"
    store.put_blob("s", "png:1", big)  # a recomputed artefact replaces the damaged one
    assert store.get_blob("s", "png:1") == big
    raw.set("opticmem:{test:s}:b:png%3A0", stored[:3])
    with pytest.raises(CorruptRecordError, match="shorter than its header"):
        store.get_blob("s", "png:0")


def test_a_corrupt_page_is_a_typed_error(store: RedisStore, raw: redis.Redis) -> None:
    for n in range(3):
        store.add_page(page("s", n))
    raw.lset("opticmem:{test:s}:pages", 1, '{"page_no":1}')
    with pytest.raises(CorruptRecordError, match="page 1"):
        store.get_pages("s", 0, 3)
    raw.lset("opticmem:{test:s}:pages", 2, page("s", 7).to_json())  # misplaced
    with pytest.raises(CorruptRecordError, match="page 2: the record says page 7"):
        store.get_pages("s", 2, 3)
    assert store.get_pages("s", 0, 1) == [page("s", 0)]
    for field, value in (("page_no", "1e999"), ("first_ts", "1" + "0" * 400)):
        damaged = json.loads(page("s", 1).to_json()) | {field: 0}
        raw.lset("opticmem:{test:s}:pages", 1,
                 json.dumps(damaged).replace(f'"{field}": 0', f'"{field}": {value}'))
        with pytest.raises(CorruptRecordError, match="page 1"):
            store.get_pages("s", 1, 2)


def test_a_retry_finds_its_append_behind_other_writers(store: RedisStore) -> None:
    """The retry path on its own: an append stored, its reply lost, 500 turns from other
    writers in between, then the retry script: it must answer with the stored seq."""
    from opticmem.redis_store import _needle, _records

    keys = store._keys("s")
    items = [("user", "mine", 1.0, None), ("assistant", "mine too", 2.0, None)]
    recs, token = _records(items)
    needle = _needle(token)
    stored = store._push(keys, recs)  # the attempt whose reply was "lost"
    store.append_turns("s", [("user", f"other {i}", 0.0, None) for i in range(500)])
    again = store._evalsha(store._resolve_lua, keys, (keys.id_arg, needle, *recs))
    assert (int(again[0]), int(again[1])) == (1, int(stored[1])) == (1, 0)
    assert store.turn_count("s") == 502
    fresh, token2 = _records(items)  # a different call with the same content appends
    args = (keys.id_arg, _needle(token2), *fresh)
    assert int(store._evalsha(store._resolve_lua, keys, args)[0]) == 0
    assert [t.text for t in store.get_turns("s", 502, 504)] == ["mine", "mine too"]


# ------------------------------------------------------------------ eviction
def test_a_turn_log_evicted_while_its_pages_stay_is_an_error_not_a_silent_context(
    server_factory: Callable[..., RedisServer],
) -> None:
    """An eviction policy evicts keys one by one: a session may lose its turn list and
    keep its pages. New turns are then numbered from 0, below the pages' frontier, and a
    context would show the old pages and silently leave out everything said since: it
    must raise a typed error that says what happened and what to do."""
    from opticmem import OpticalMemory

    server = server_factory()
    store = RedisStore.from_url(server.url, tenant="bot")
    raw = redis.Redis.from_url(server.url)
    try:
        mem = OpticalMemory(store, codec=None, verbatim_turns=2)
        mem.add_many("s", [("user", f"turn {i}: the plan, its owners and dates " * 4)
                           for i in range(60)])
        assert store.page_count("s") > 0
        # A real eviction: volatile-ttl evicts the key nearest to expiring first, and the
        # turn list is the only key with an expiry.
        raw.pexpire("opticmem:{bot:s}:turns", 600_000)
        raw.config_set("maxmemory-policy", "volatile-ttl")
        raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) + 100_000)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            raw.set("filler", b"x" * 1_000_000)
        raw.config_set("maxmemory", 0)
        assert raw.exists("opticmem:{bot:s}:turns") == 0
        assert store.page_count("s") > 0

        mem.add_many("s", [("user", f"new turn {i}") for i in range(3)])
        with pytest.raises(CorruptRecordError, match=r"turn log was lost.*noeviction"):
            mem.context("s")
        mem.delete_session("s")  # what the message says to do: the session begins again
        mem.add("s", "user", "hello again")
        assert [t.text for t in mem.context("s").turns] == ["hello again"]
        mem.close()
    finally:
        raw.close()
        store.close()
