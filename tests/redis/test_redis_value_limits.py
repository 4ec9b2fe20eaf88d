"""A value larger than the Redis server takes in one piece (its ``proto-max-bulk-len``, or
its ``client-query-buffer-limit``) is a :class:`RecordTooLargeError` at once, nothing
stored: the server closes the connection on such a value, which the store took for a
server out of reach and retried for seconds before raising StoreUnavailableError.

Each test runs on a server of its own, whose limits it lowers to the least Redis allows
(1 MB), so the shared test server keeps its settings."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator

import pytest
import redis

from opticmem import OpticalMemory, RecordTooLargeError, StoreError
from opticmem.records import PageRecord
from opticmem.redis_store import ALWAYS_FITS, RedisStore, pack_blob
from tests.redis.server import RedisServer

pytestmark = pytest.mark.redis

MB = 1 << 20


@pytest.fixture
def server(server_factory: Callable[..., RedisServer]) -> RedisServer:
    return server_factory()


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        client.close()


def page(session: str, n: int, transcript: str = "p") -> PageRecord:
    return PageRecord(session=session, page_no=n, first_seq=0, first_line=0, last_seq=0,
                      end_line=1, transcript=transcript, text_tokens=1, first_ts=0.0,
                      last_ts=0.0, render_key="r")


def snapshot(raw: redis.Redis) -> dict[bytes, bytes]:
    """Every key of the server and its serialised value."""
    return {k: raw.dump(k) for k in raw.scan_iter()}  # type: ignore[misc]


def no_retries(caplog: pytest.LogCaptureFixture) -> bool:
    return "retry 1 in" not in caplog.text


def seed(store: RedisStore, session: str) -> None:
    store.append_turns(session, [("user", f"t{i}", float(i), None) for i in range(3)])
    store.add_page(page(session, 0))
    store.put_blob(session, "png", os.urandom(1000))
    store.put_state(session, "mark", b"1")


@pytest.mark.parametrize("kind", ["plain", "ttl", "long id"])
def test_a_value_over_proto_max_bulk_len_is_refused_at_once_and_nothing_is_lost(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture, kind: str,
) -> None:
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    raw.config_set("proto-max-bulk-len", "1mb")
    store = RedisStore.from_url(server.url, tenant="test", ttl=3600 if kind == "ttl" else None)
    session = "s" * 300 if kind == "long id" else "s"  # digest-keyed: MULTI/EXEC appends
    seed(store, session)
    before = snapshot(raw)
    big = "x" * (MB + 10)

    with pytest.raises(RecordTooLargeError) as caught:
        store.append_turn(session, "user", big, 9.0)
    err = caught.value
    assert isinstance(err, StoreError) and not isinstance(err, ConnectionError)
    assert err.limit == MB and err.setting == "proto-max-bulk-len" and err.size > MB
    assert "proto-max-bulk-len" in str(err) and "nothing was stored" in str(err)
    assert "the turn appended to session" in str(err) and server.url[:-2] in str(err)

    with pytest.raises(RecordTooLargeError, match="turn 1 of the 3 appended"):
        store.append_turns(session, [("user", "fits", 9.0, None), ("user", big, 9.0, None),
                                     ("user", "fits too", 9.0, None)])
    with pytest.raises(RecordTooLargeError, match="page 1 of session"):
        store.add_sealed_page(page(session, 1, big))
    with pytest.raises(RecordTooLargeError, match="blob 'huge' of session"):
        store.put_blob(session, "huge", os.urandom(MB + 10))  # incompressible
    with pytest.raises(RecordTooLargeError, match="state 'mark' of session"):
        store.put_state(session, "mark", os.urandom(MB + 10))
    with pytest.raises(RecordTooLargeError, match="state 'mark'"):
        store.swap_state(session, "mark", b"1", os.urandom(MB + 10))
    assert no_retries(caplog), caplog.text  # no backoff, no 15 s of retries

    assert snapshot(raw) == before  # not a byte written
    assert [t.text for t in store.get_turns(session, 0, 10)] == ["t0", "t1", "t2"]
    assert store.append_turn(session, "user", "next", 10.0).seq == 3  # no gap, no duplicate
    store.close()


def test_the_async_twins_refuse_it_too(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    raw.config_set("proto-max-bulk-len", "1mb")
    store = RedisStore.from_url(server.url, tenant="test")
    seed(store, "s")
    before = snapshot(raw)
    big = "x" * (MB + 10)

    async def go() -> None:
        with pytest.raises(RecordTooLargeError, match="proto-max-bulk-len"):
            await store.aappend_turn("s", "user", big, 9.0)
        with pytest.raises(RecordTooLargeError, match="turn 0 of the 2"):
            await store.aappend_turns("s", [("user", big, 9.0, None), ("user", "y", 9.0, None)])
        with pytest.raises(RecordTooLargeError):
            await store.aput_blob("s", "huge", os.urandom(MB + 10))
        with pytest.raises(RecordTooLargeError):
            await store.aput_state("s", "mark", os.urandom(MB + 10))
        with pytest.raises(RecordTooLargeError):
            await store.aadd_page(page("s", 1, big))
        assert (await store.aappend_turn("s", "user", "next", 10.0)).seq == 3
        await store.aclose()

    asyncio.run(go())
    assert no_retries(caplog), caplog.text
    after = snapshot(raw)
    assert {k: v for k, v in after.items() if k != b"opticmem:{test:s}:turns"} == {
        k: v for k, v in before.items() if k != b"opticmem:{test:s}:turns"}


def test_a_value_up_to_the_limit_is_stored_and_one_byte_more_is_refused(
    server: RedisServer, raw: redis.Redis
) -> None:
    raw.config_set("proto-max-bulk-len", "1mb")
    store = RedisStore.from_url(server.url, tenant="test", compress_blobs=False)
    header = len(pack_blob(b""))
    exact = os.urandom(MB - header)
    store.put_blob("s", "exact", exact)  # MB bytes as stored: just fits
    assert store.get_blob("s", "exact") == exact
    with pytest.raises(RecordTooLargeError) as caught:
        store.put_blob("s", "over", exact + b"!")
    assert caught.value.size == MB + 1
    assert store.get_blob("s", "over") is None
    store.close()


def test_a_limit_lowered_after_it_was_read_is_found_when_the_server_refuses(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    store = RedisStore.from_url(server.url, tenant="test")
    value = "x" * (2 * MB)
    assert store.append_turn("s", "user", value, 0.0).seq == 0  # reads the limit: 512 MB
    raw.config_set("proto-max-bulk-len", "1mb")  # the store still believes 512 MB
    for _ in range(3):  # the server closes the connection, or says why first: both ways
        with pytest.raises(RecordTooLargeError, match="1,048,576 bytes"):
            store.append_turn("s", "user", value, 1.0)
    assert no_retries(caplog), caplog.text
    assert store.turn_count("s") == 1 and store.get_turns("s", 0, 1)[0].text == value
    # ... and raised again, a value the store has seen refused is sent (read once more)
    raw.config_set("proto-max-bulk-len", "4mb")
    assert store.append_turn("s", "user", value, 2.0).seq == 1
    store.close()


def test_a_lower_client_query_buffer_limit_is_the_limit_then(
    server: RedisServer, raw: redis.Redis
) -> None:
    raw.config_set("client-query-buffer-limit", "1mb")  # proto-max-bulk-len stays 512 MB
    store = RedisStore.from_url(server.url, tenant="test", compress_blobs=False)
    header = len(pack_blob(b""))
    fits = os.urandom(MB - 2 - header)
    store.put_blob("s", "fits", fits)
    assert store.get_blob("s", "fits") == fits
    with pytest.raises(RecordTooLargeError, match="client-query-buffer-limit") as caught:
        store.put_blob("s", "over", fits + b"!")
    assert caught.value.limit == MB - 2 and caught.value.setting == "client-query-buffer-limit"
    assert store.get_blob("s", "over") is None
    store.close()


def test_where_config_get_is_not_allowed_the_refusal_is_still_recognised(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL (a managed Redis) may forbid CONFIG: the limit cannot be read, so the store
    recognises the value by how the server refuses it, after one retry at most."""
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    raw.config_set("proto-max-bulk-len", "1mb")
    raw.execute_command("ACL", "SETUSER", "bot", "on", ">pw", "~*", "&*", "+@all", "-config")
    url = server.url.replace("redis://", "redis://bot:pw@")
    store = RedisStore.from_url(url, tenant="test")
    seed(store, "s")
    before = snapshot(raw)
    for _ in range(5):  # either way the server ends it: a reply read, or the connection shut
        with pytest.raises(RecordTooLargeError, match="CONFIG GET is not allowed") as caught:
            store.append_turn("s", "user", "x" * (2 * MB), 9.0)
        assert caught.value.limit is None
    assert "retry 2 in" not in caplog.text, caplog.text
    assert snapshot(raw) == before
    assert store.append_turn("s", "user", "next", 10.0).seq == 3
    store.close()


def test_values_that_fit_any_server_never_ask_for_its_limit(
    server: RedisServer, raw: redis.Redis
) -> None:
    store = RedisStore.from_url(server.url, tenant="test")
    calls = int(raw.info("commandstats").get("cmdstat_config", {}).get("calls", 0))
    store.append_turn("s", "user", "x" * (ALWAYS_FITS - 100), 0.0)
    store.put_blob("s", "k", os.urandom(ALWAYS_FITS - 100))
    assert int(raw.info("commandstats").get("cmdstat_config", {}).get("calls", 0)) == calls
    store.close()


def test_an_artefact_too_large_for_the_server_is_left_out_of_the_cache_alone(
    server: RedisServer, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    raw.config_set("proto-max-bulk-len", "1mb")
    store = RedisStore.from_url(server.url, tenant="test")
    store.append_turn("s", "user", "hi", 0.0)
    p = page("s", 0)
    store.add_page(p)
    small = os.urandom(1000)
    with caplog.at_level(logging.WARNING, logger="opticmem.redis_store"):
        kept = store.put_page_blobs([(p, "a", small), (p, "b", os.urandom(MB + 10)),
                                     (p, "c", small)])
    assert kept == [True, False, True]
    assert "blob 'b'" in caplog.text and "not cached" in caplog.text
    assert store.get_blobs("s", ["a", "b", "c"]) == [small, None, small]
    with pytest.raises(RecordTooLargeError):  # one artefact on its own: the typed error
        store.put_page_blob(p, "b", os.urandom(MB + 10))
    store.close()


def test_the_memory_refuses_the_turn_and_keeps_the_session(
    server: RedisServer, raw: redis.Redis
) -> None:
    raw.config_set("proto-max-bulk-len", "1mb")
    store = RedisStore.from_url(server.url, tenant="test")
    mem = OpticalMemory(store, codec=None, verbatim_turns=2)
    for i in range(5):
        mem.add("s", "user", f"turn {i}")
    # 400,000 characters pass the memory's own limit (1,000,000), but not as 1.2 MB of UTF-8
    with pytest.raises(RecordTooLargeError, match="proto-max-bulk-len"):
        mem.add("s", "user", "€" * 400_000)
    with pytest.raises(RecordTooLargeError):
        mem.add_many("s", [("user", "ok"), ("user", "€" * 400_000)])
    assert [t.text for t in store.get_turns("s", 0, 10)] == [f"turn {i}" for i in range(5)]
    assert mem.add("s", "user", "after").seq == 5
    mem.close()
    store.close()
