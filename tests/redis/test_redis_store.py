"""RedisStore behaviour beyond the shared store contract (which runs against Redis too, in
``tests/memory/test_store_contract.py``): key layout, compression, SCAN paging, clients and
event loops, URL settings."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aredis

from opticmem.errors import (
    ConfigurationError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
)
from opticmem.redis_store import RedisStore
from tests.memory.test_store_contract import page
from tests.redis.server import RedisServer

pytestmark = pytest.mark.redis


def test_delete_session_leaves_no_key_behind(store: RedisStore, raw: redis.Redis) -> None:
    store.append_turn("s", "user", "x", 0.0)
    store.add_page(page("s", 0))
    store.put_blob("s", "k", b"v")
    store.put_state("s", "mark/abc", b"{}")
    store.append_turn("keep", "user", "y", 0.0)
    store.delete_session("s")
    assert [k for k in raw.scan_iter() if b"{test:s}" in k] == []
    assert store.turn_count("keep") == 1


def test_forgetting_erases_the_text_from_the_server(store: RedisStore, raw: redis.Redis) -> None:
    store.append_turns("s", [("user", f"secret {i}", float(i), None) for i in range(6)])
    assert store.forget_turns("s", 4) == 4
    stored = raw.lrange("opticmem:{test:s}:turns", 0, -1)
    assert len(stored) == 6  # tombstones keep index == seq
    assert not any(b"secret 0" in r or b"secret 3" in r for r in stored)


def test_forgetting_a_page_of_turns_costs_no_pass_over_the_session(
    store: RedisStore, raw: redis.Redis,
) -> None:
    """Each forget rebuilt the list's head, one tombstone per turn ever forgotten: 15 ms of
    a blocked Redis per sealed page at 100k turns. A page's turns (a few) are blanked in
    place now; a long stretch at once still rebuilds the head. Both leave index == seq."""
    store.append_turns("s", [("user", f"secret {i}", float(i), None) for i in range(700)])
    assert store.forget_turns("s", 300) == 300  # a long stretch: the rebuild
    raw.config_resetstat()
    assert store.forget_turns("s", 310) == 10  # a page's turns: in place
    calls = raw.info("commandstats")
    assert "cmdstat_lpush" not in calls and calls["cmdstat_lset"]["calls"] == 10
    assert store.forget_turns("s", 600) == 290
    assert store.forget_turns("s", 600) == 0
    stored = raw.lrange("opticmem:{test:s}:turns", 0, -1)
    assert len(stored) == 700 and stored[:600] == [b""] * 600
    assert all(f"secret {600 + i}".encode() in r for i, r in enumerate(stored[600:]))
    kept = store.get_turns("s", 598, 603)  # forgotten turns are left out
    assert [(t.seq, t.text) for t in kept] == [(i, f"secret {i}") for i in range(600, 603)]


def test_blobs_are_compressed_only_when_it_pays(store: RedisStore, raw: redis.Redis) -> None:
    text = ("recollected text of a page, fairly repetitive. " * 2000).encode()
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100
    store.put_blob("s", "rec", text)
    store.put_blob("s", "png", png)
    assert store.get_blob("s", "rec") == text and store.get_blob("s", "png") == png
    assert raw.strlen("opticmem:{test:s}:b:rec") < len(text) // 10
    assert raw.strlen("opticmem:{test:s}:b:png") == len(png) + 7  # header only


def test_turns_pages_blobs_live_in_separate_keys(store: RedisStore, raw: redis.Redis) -> None:
    store.append_turn("s", "user", "hi", 0.0)
    store.add_page(page("s", 0))
    store.put_blob("s", "png:0:large", b"\x89PNG" + b"\x00" * 5000)
    assert raw.type("opticmem:{test:s}:turns") == b"list"
    assert raw.type("opticmem:{test:s}:pages") == b"list"
    assert raw.type("opticmem:{test:s}:b:png%3A0%3Alarge") == b"string"
    assert raw.llen("opticmem:{test:s}:turns") == 1  # no blob bytes in the hot key
    assert all(len(r) < 200 for r in raw.lrange("opticmem:{test:s}:turns", 0, -1))


def test_sessions_pages_through_scan(store: RedisStore) -> None:
    ids = [f"user-{i}" for i in range(1100)] + [f"{'long' * 50}-{i}" for i in range(600)]
    for s in ids:
        store.append_turn(s, "user", "hi", 0.0)
    listed = list(store.sessions())
    assert len(listed) == len(set(listed)) == len(ids)
    assert set(listed) == set(ids)


def test_async_works_across_event_loops(store: RedisStore) -> None:
    for i in range(3):  # a new loop each time: the store opens a client per loop
        assert asyncio.run(store.aappend_turn("s", "user", f"t{i}", 0.0)).seq == i


def test_event_loops_that_ended_leave_no_client_behind(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A caller that runs each call in an asyncio.run of its own (a sync web handler, a
    task queue) must not keep a client and a server connection for every loop that
    ever ran: Redis would run out of connections (maxclients)."""
    before = len(raw.client_list())
    for i in range(30):
        asyncio.run(store.aappend_turn("s", "user", f"t{i}", 0.0))
    assert len(store._aclients) == 1  # the last loop's
    gc.collect()  # sockets of a closed loop's client close as it is collected
    for _ in range(50):
        if len(raw.client_list()) - before <= 2:
            break
        time.sleep(0.05)
    assert len(raw.client_list()) - before <= 2
    assert store.turn_count("s") == 30


def test_close_releases_the_async_clients_of_every_event_loop(
    redis_url: str, raw: redis.Redis
) -> None:
    """``close()`` from sync code closed only the sync client: the async clients opened
    under other event loops (one still running in a thread, one whose asyncio.run ended)
    kept their server connections until garbage collection, which a reference cycle may
    put off indefinitely (Redis counts them against maxclients)."""
    def connections() -> int:
        return sum(1 for c in raw.client_list() if c.get("name") != "raw")

    raw.client_setname("raw")
    before = connections()
    gc.disable()  # what is released must be released by the store, not by collection
    store = RedisStore.from_url(redis_url, tenant="close")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    try:
        store.append_turn("s", "user", "sync", 0.0)
        asyncio.run(store.aappend_turn("s", "user", "ended loop", 0.0))
        thread.start()
        asyncio.run_coroutine_threadsafe(
            store.aappend_turn("s", "user", "running loop", 0.0), loop).result(10)
        # a new loop's client drops the ended loop's: its connection goes at once too
        asyncio.run(store.aappend_turn("s", "user", "another ended loop", 0.0))
        assert len(store._aclients) == 2
        for _ in range(100):
            if connections() - before == 3:
                break
            time.sleep(0.05)
        assert connections() - before == 3  # sync, running loop's, last ended loop's
        store.close()
        for _ in range(100):
            if connections() == before:
                break
            time.sleep(0.05)
        assert connections() == before
    finally:
        gc.enable()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
    with pytest.raises(StoreError, match="closed"):
        asyncio.run(store.aappend_turn("s", "user", "after", 0.0))


def test_a_blob_written_without_a_ttl_expires_with_its_session(
    redis_url: str, raw: redis.Redis
) -> None:
    """A store opened without ``ttl`` writing put_blob into a session a ttl store keeps
    alive set the blob and the blob index with no expiry: they outlived the session, and
    the next session of that id (its first write sweeping the index) got the old blob."""
    bot = RedisStore.from_url(redis_url, tenant="life", ttl=1)
    other = RedisStore.from_url(redis_url, tenant="life")
    try:
        bot.append_turn("s", "user", "first life", 0.0)
        other.put_blob("s", "k", b"v")
        asyncio.run(other.aput_blob("s", "ak", b"av"))
        keys = list(raw.scan_iter(match="opticmem:{life:s}:*"))
        assert keys and all(0 < raw.pttl(k) <= 1000 for k in keys), {
            k: raw.pttl(k) for k in keys}
        time.sleep(1.2)
        bot.append_turn("s", "user", "second life", 0.0)
        assert bot.get_blob("s", "k") is None and bot.get_blob("s", "ak") is None
        # a session kept for ever keeps the blob for ever
        other.append_turn("kept", "user", "hi", 0.0)
        other.put_blob("kept", "k", b"v")
        assert {k: raw.pttl(k) for k in raw.scan_iter(match="opticmem:{life:kept}:*")
                if raw.pttl(k) != -1} == {}
    finally:
        bot.close()
        other.close()


def test_threads_each_running_event_loops_share_the_store(store: RedisStore) -> None:
    """Many threads, each calling through an asyncio.run of its own (a threaded web
    server's handlers), make and drop per-loop clients at once: that bookkeeping must
    not fail a call with "dictionary changed size during iteration"."""
    errors: list[BaseException] = []

    def handler(i: int) -> None:
        for j in range(40):
            try:
                asyncio.run(store.aappend_turn(f"s{i}", "user", f"t{j}", 0.0))
            except Exception as exc:  # every failure is the finding
                errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded server does
    try:
        threads = [threading.Thread(target=handler, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert [store.turn_count(f"s{i}") for i in range(16)] == [40] * 16


def test_existing_clients(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    aclient = aredis.Redis.from_url(redis_url)
    store = RedisStore(client=client, aclient=aclient, tenant="mine")
    store.append_turn("s", "user", "hi", 0.0)

    async def go() -> list[str]:
        try:
            return [t.text for t in await store.aget_turns("s", 0, 5)]
        finally:
            await aclient.aclose()

    assert asyncio.run(go()) == ["hi"]
    store.close()
    assert client.ping()  # a client passed in stays open
    client.close()


def test_sync_only_and_async_only_stores(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    sync_only = RedisStore(client=client)
    assert asyncio.run(sync_only.aappend_turn("s", "user", "via thread", 0.0)).seq == 0
    assert asyncio.run(sync_only.asessions()) == ["s"]

    async def go() -> None:
        aclient = aredis.Redis.from_url(redis_url)
        async_only = RedisStore(aclient=aclient)
        assert (await async_only.aappend_turn("s", "user", "native", 0.0)).seq == 1
        with pytest.raises(StoreError, match="a-prefixed"):
            async_only.turn_count("s")
        await aclient.aclose()

    asyncio.run(go())
    client.close()


def test_rejects_clients_that_decode_responses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(client=client)
    client.close()


def test_closed_store_refuses_calls(redis_url: str) -> None:
    s = RedisStore.from_url(redis_url)
    s.close()
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.turn_count("s")



def test_close_lets_a_call_another_thread_is_making_finish(
    redis_url: str, raw: redis.Redis
) -> None:
    """``close()`` closed every connection, those in use too: a thread whose append was
    on the wire failed with redis-py's bare ``AttributeError: 'NoneType' object has no
    attribute 'readline'`` (or a connection error), its turn stored or not, no one could
    tell. A call in flight now finishes on its connection, which closes after it."""
    s = RedisStore.from_url(redis_url)
    s.append_turn("s", "user", "first", 0.0)  # connected
    got: list[object] = []
    raw.execute_command("CLIENT", "PAUSE", "400", "WRITE")  # the next append waits there
    writer = threading.Thread(
        target=lambda: got.append(s.append_turn("s", "user", "second", 0.0)))
    writer.start()
    time.sleep(0.15)  # the append is on the wire
    s.close()
    writer.join(30)
    assert [(t.seq, t.text) for t in got] == [(1, "second")]  # type: ignore[attr-defined]
    assert raw.llen("opticmem:{default:s}:turns") == 2
    with pytest.raises(StoreError, match="closed"):
        s.turn_count("s")
    pool = s._client.connection_pool  # type: ignore[union-attr]
    assert not any(c._sock for c in pool._available_connections)  # all closed


def test_from_store_url_reads_settings_from_the_query(redis_url: str, raw: redis.Redis) -> None:
    s = RedisStore.from_store_url(
        redis_url + "?tenant=acme%3Aeu&ttl=60&max_turns=3&max_blob_bytes=5000&socket_timeout=5"
    )
    assert (s.tenant, s.ttl_ms, s.max_turns, s.max_blob_bytes) == ("acme:eu", 60_000, 3, 5000)
    s.append_turns("x", [("user", "hi", 0.0, None)] * 3)
    assert 0 < int(raw.pttl("opticmem:{acme%3Aeu:x}:turns")) <= 60_000
    s.close()
    for bad in ("?ttl=soon", "?max_turns=0", "?max_blob_bytes=-1"):
        with pytest.raises(ValueError, match="bad"):
            RedisStore.from_store_url(redis_url + bad)
    with pytest.raises(ValueError, match=r"redis://u:\*\*\*@"):
        RedisStore.from_store_url("redis://u:secret@127.0.0.1:1/0?ttl=x")


def test_from_url_points_settings_in_the_url_to_from_store_url(redis_url: str) -> None:
    """The URL a worker takes (``…?tenant=acme``) passed to from_url reached redis-py,
    which raised a bare TypeError about a connection argument named tenant."""
    with pytest.raises(StoreURLError, match=r"\(\?tenant=, \?ttl=\).*from_store_url") as info:
        RedisStore.from_url("redis://:hunter2@127.0.0.1:1/0?tenant=acme&ttl=60", tenant="b")
    assert "hunter2" not in str(info.value)
    RedisStore.from_url(redis_url + "?socket_keepalive=true").close()  # redis-py's own: fine


def test_a_password_in_the_query_is_never_shown(
    server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py takes the password as ``?password=`` too (the form its docs give for
    ``unix://`` URLs): it must be hidden wherever the URL is shown, as a netloc one is."""
    server = server_factory()
    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("requirepass", "hunter2-right")
    caplog.set_level(logging.INFO, logger="opticmem")
    s = RedisStore.from_store_url(f"{server.url}?password=hunter2-right&tenant=acme")
    s.append_turn("x", "user", "hi", 0.0)  # it authenticated
    assert "hunter2" not in s.url and "password=***" in s.url
    s.close()
    with pytest.raises(StoreUnavailableError, match="refused the credentials") as info:
        RedisStore.from_store_url(f"{server.url}?tenant=acme&password=hunter2-wrong")
    assert "hunter2" not in str(info.value) and "password=***" in str(info.value)
    with pytest.raises(StoreUnavailableError) as info:
        RedisStore.from_store_url("unix:///nowhere/redis.sock?db=0&password=hunter2-sock")
    assert "hunter2" not in str(info.value) and "unix:///nowhere/redis.sock" in str(info.value)
    assert "hunter2" not in caplog.text


def test_store_urls_with_a_password_are_shown_without_it(
    server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """``opticmem ingest``/``inspect`` report the store they used, and ``open_store``
    names the URL it cannot open: a password in it must never be printed."""
    from typer.testing import CliRunner

    from opticmem import StoreURLError, open_store
    from opticmem.cli import app

    server = server_factory()
    with redis.Redis.from_url(server.url) as admin:
        admin.config_set("requirepass", "hunter2")
    url = f"redis://:hunter2@127.0.0.1:{server.port}/0?tenant=acme"
    transcript = tmp_path / "t.jsonl"
    transcript.write_text("".join(json.dumps({"session": "s", "role": "user", "text": f"hi {i}"})
                                  + "\n" for i in range(3)))
    runner = CliRunner()
    for args, names_it in ((["ingest", str(transcript), "--store", url], True),
                           (["ingest", str(transcript), "--store", url, "--json"], True),
                           (["inspect", "s", "--store", url, "--json"], True),
                           (["inspect", "s", "--store", url], False),
                           (["inspect", "nobody", "--store", url, "--json"], True)):
        result = runner.invoke(app, args)
        assert result.exit_code in (0, 1), result.output
        assert "hunter2" not in result.output, args
        assert ("***" in result.output) == names_it, args
    for bad in ("reddis://:hunter2@127.0.0.1/0", "redis://:hunter2@[::1/0"):
        with pytest.raises(StoreURLError) as info:
            open_store(bad)
        assert "hunter2" not in str(info.value)


def test_a_user_whose_acl_refuses_info_can_open_the_store(
    server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """INFO is in ACL's ``@dangerous`` category, which application users commonly lack
    (``+@all -@dangerous``). from_url reads it only to warn about risky settings: its
    refusal must not make the store impossible to open (a store URL cannot pass
    ``check=False``)."""
    from opticmem import OpticalMemory

    server = server_factory()
    with redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "app", "on", ">pw", "~*", "&*", "+@all",
                              "-@dangerous")
    url = f"redis://app:pw@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.WARNING, logger="opticmem.redis_store")
    s = RedisStore.from_url(url, tenant="acme")
    assert "refused INFO" in caplog.text and "not checked" in caplog.text
    s.append_turn("x", "user", "hi", 0.0)
    assert list(s.sessions()) == ["x"]
    s.close()
    with OpticalMemory(url + "?tenant=acme", codec=None) as mem:
        assert [t.text for t in mem.context("x").turns] == ["hi"]


def test_open_store_and_optical_memory_take_redis_urls(redis_url: str, raw: redis.Redis) -> None:
    from opticmem import OpticalMemory, StoreUnavailableError, StoreURLError, open_store

    s = open_store(redis_url + "?tenant=acme&max_turns=50")
    assert isinstance(s, RedisStore) and (s.tenant, s.max_turns) == ("acme", 50)
    s.close()
    with OpticalMemory(redis_url + "?tenant=bots", codec=None, verbatim_turns=2) as mem:
        assert isinstance(mem.store, RedisStore)
        mem.add("alice", "user", "Ticket ABC-123 ships on 2026-03-04.")
        mem.add("alice", "assistant", "Noted.")
        assert [t.text for t in mem.context("alice").turns][-1] == "Noted."
        assert raw.llen("opticmem:{bots:alice}:turns") == 2
    with pytest.raises(StoreError, match="closed"):
        mem.store.turn_count("alice")  # the memory opened the store, so it closed it
    with pytest.raises(StoreURLError, match="bad ttl"):
        open_store(redis_url + "?ttl=soon")
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1"):
        open_store("redis://127.0.0.1:1/0")
    # Redis on a unix socket, as RedisStore.from_url and `opticmem worker` take it
    with pytest.raises(StoreUnavailableError, match=r"unix:///nowhere/redis\.sock"):
        open_store("unix:///nowhere/redis.sock?tenant=acme")


def test_every_bad_store_url_is_a_store_url_error(redis_url: str) -> None:
    from opticmem import StoreURLError, open_store

    for query, named in [("?ttl=inf", "ttl"), ("?ttl=1e400", "ttl"), ("?ttl=nan", "ttl"),
                         ("?ttl=0", "ttl"), ("?ttl=-5", "ttl"), ("?tenant=", "tenant"),
                         ("?tenatn=acme", "tenatn"),
                         ("?decode_responses=true", "decode_responses=False")]:
        with pytest.raises(StoreURLError, match=named):
            open_store(redis_url + query)
    with pytest.raises(StoreURLError, match="malformed"):
        open_store("redis://[::1")
    # not UTF-8 once %-decoded: read leniently, both would be tenant "caf\ufffd", one tenant
    for tenant in ("caf%E9", "caf%E8"):
        with pytest.raises(StoreURLError, match="UTF-8"):
            open_store(f"{redis_url}?tenant={tenant}")
    # the package's ConfigurationError (a ValueError): a bare ValueError before
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisStore.from_url(redis_url, ttl=float("inf"))
    with pytest.raises(ConfigurationError, match="ttl"):
        RedisStore.from_url(redis_url, ttl=-5)
    # 0 would make the sockets non-blocking: a reply not there at once fails at random
    for name in ("socket_timeout", "socket_connect_timeout"):
        for seconds in (0, -1.0, float("nan"), True, "5"):
            with pytest.raises(ConfigurationError,
                               match=f"{name} must be a number of seconds > 0"):
                RedisStore.from_url(redis_url, **{name: seconds})


@pytest.mark.parametrize("setting", [
    {"max_turns": 0}, {"max_blob_bytes": -1}, {"retries": -1}, {"tenant": ""},
    {"ttl": float("nan")},
])
def test_from_url_refuses_a_bad_setting_before_connecting(setting: dict[str, Any]) -> None:
    # checked only once the server had answered: against one out of reach a bad setting
    # was a StoreUnavailableError (which callers retry), not the ConfigurationError it is
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigurationError):
        RedisStore.from_url(f"redis://127.0.0.1:{port}/0", **setting)


def test_a_bad_redis_py_option_value_is_a_store_url_error_before_connecting(
    redis_url: str,
) -> None:
    """redis-py checks a URL option's type only as a bare ValueError, and the rest when it
    connects: ``?protocol=9`` or ``?socket_connect_timeout=-1`` was "cannot reach Redis"
    (or a generic StoreError), on a server that answers or none at all."""
    from opticmem import StoreURLError, open_store

    for query, takes in [("socket_timeout=abc", "number > 0"),
                         ("socket_connect_timeout=-1", "number > 0"),
                         ("socket_timeout=0", "> 0 .*non-blocking"),
                         ("socket_connect_timeout=0.0", "> 0 .*non-blocking"),
                         ("health_check_interval=x", "an int"), ("max_connections=-1", ">= 0"),
                         ("protocol=9", "2 or 3"), ("db=abc", ">= 0"), ("db=-1", ">= 0"),
                         ("socket_timeout=nan", "number > 0"), ("timeout=inf", "> 0")]:
        name = query.split("=")[0]
        for url in (f"redis://:hunter2@127.0.0.1:1/0?{query}", f"{redis_url}?{query}"):
            with pytest.raises(StoreURLError, match=f"bad {name}=.*{name} takes .*{takes}") as info:
                open_store(url)
            assert "hunter2" not in str(info.value)
    with pytest.raises(StoreURLError, match="ssl_cert_reqs takes none, optional or required"):
        open_store("rediss://:hunter2@127.0.0.1:1/0?ssl_cert_reqs=bogus")
    # how many databases there are only the server knows: said as a bad db, not a dead server
    for url in (redis_url.rsplit("/", 1)[0] + "/?db=99999", redis_url.rsplit("/", 1)[0] + "/99999"):
        with pytest.raises(StoreURLError, match=r"bad db=99999 .*databases"):
            open_store(url)
    # what redis-py takes stays taken
    open_store(f"{redis_url}?max_connections=0&socket_keepalive=yes&socket_timeout=2.5&protocol=3"
               "&health_check_interval=30").close()


def test_a_reset_racing_an_add_does_not_leave_pages_over_an_empty_turn_log(
    store: RedisStore, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process deletes the session (a user's "reset") after the memory made a page
    from its turns and before the page is stored: the page is refused, not stored over the
    deleted session's empty turn log, which made every later context fail with
    CorruptRecordError ("the turn log was lost") until the session was deleted again."""
    from opticmem import OpticalMemory
    from opticmem.errors import PageConflictError

    mem = OpticalMemory(store, codec=None, verbatim_turns=2)
    seal, count = mem._packer.seal, store.turn_count
    raced: list[int] = []

    def sealing(*args: Any, **kwargs: Any) -> Any:
        pages = seal(*args, **kwargs)
        if pages and not raced:
            raced.append(0)  # the memory now checks the turn count, then stores the page
        return pages

    def deleted_after(session: str) -> int:
        n = count(session)
        if raced == [0]:  # the reset lands right after that check
            other = RedisStore.from_url(redis_url, tenant="test")
            other.delete_session(session)
            other.close()
            raced.append(1)
        return n

    monkeypatch.setattr(mem._packer, "seal", sealing)
    monkeypatch.setattr(store, "turn_count", deleted_after)
    for i in range(200):
        mem.add("s", "user", f"line {i} " * 40)
        if len(raced) == 2:
            break
    assert raced == [0, 1] and store.page_count("s") == 0 and store.turn_count("s") == 0
    monkeypatch.undo()
    mem.add("s", "user", "a fresh start after the reset")
    assert [t.text for t in mem.context("s").turns] == ["a fresh start after the reset"]
    # the store call itself: a page over turns the log does not hold stores nothing
    with pytest.raises(PageConflictError, match="turn log holds 1 turns"):
        store.add_sealed_page(page("s", 0, first_seq=0, last_seq=3))
    assert store.page_count("s") == 0
    store.append_turns("s", [("user", "x", 0.0, None)] * 3)
    assert store.add_sealed_page(page("s", 0, first_seq=0, last_seq=3))


def test_a_session_stored_before_epochs_gets_one_that_lives_as_long_as_its_turns(
    store: RedisStore, raw: redis.Redis
) -> None:
    """Keys as an earlier version left them (a turn list, no epoch; no meta hash at all
    without a TTL) keep loading: the first ask gives the session an epoch, which a sealed
    page is then checked against. The meta hash that ask makes gets what is left of the
    turn list's life (none where the turn list has none): an epoch never outlives its
    turns, which would hand it to the session's next life."""
    base = "opticmem:{test:%s}:"
    store.append_turns("kept", [("user", f"t{i}", float(i), None) for i in range(3)])
    store.append_turns("expiring", [("user", f"t{i}", float(i), None) for i in range(3)])
    raw.pexpire(base % "expiring" + "turns", 60_000)
    assert not raw.exists(base % "kept" + "meta", base % "expiring" + "meta")

    for session in ("kept", "expiring"):
        epoch = store.session_epoch(session)
        assert epoch and raw.hget(base % session + "meta", "epoch") == epoch.encode()
        assert store.session_epoch(session) == epoch
        assert store.add_sealed_page(page(session, 0), epoch=epoch)
        assert store.get_pages(session, 0, 1) == [page(session, 0)]
    assert raw.pttl(base % "kept" + "meta") == -1
    # The turn list's life is read first: read the other way round, the milliseconds that
    # pass between the two reads could make an equal deadline look later.
    turns_left = raw.pttl(base % "expiring" + "turns")
    assert 0 < raw.pttl(base % "expiring" + "meta") <= turns_left
    assert store.session_epoch("never") == "" and not raw.exists(base % "never" + "meta")


def test_a_ttl_beyond_what_redis_takes_is_refused_before_connecting(
    redis_url: str, raw: redis.Redis
) -> None:
    """ttl=1e300 (or ttl in milliseconds mistaken for seconds, ten times over) was taken,
    and every append of every session then failed with Redis's 'value is not an integer or
    out of range': the store was useless, and said so only at the first write."""
    from opticmem.redis_store import MAX_TTL_SECONDS
    from opticmem.stores import open_store

    for ttl in ("1e300", str(MAX_TTL_SECONDS + 1)):
        with pytest.raises(StoreURLError, match="ttl must be at most"):
            open_store(f"redis://127.0.0.1:1/0?ttl={ttl}")  # nothing listens: not reached
    with pytest.raises(ValueError, match="ttl must be at most"):
        RedisStore.from_url(redis_url, ttl=1e300)
    longest = open_store(f"{redis_url}?ttl={MAX_TTL_SECONDS}&tenant=t")
    try:
        assert longest.append_turn("s", "user", "hi", 0.0).seq == 0
        assert raw.pttl("opticmem:{t:s}:turns") > (MAX_TTL_SECONDS - 60) * 1000
    finally:
        longest.close()


@pytest.mark.parametrize("location", ["/cache", "/1/2", "/1?db=2", "/-0", ":99999/0"])
def test_a_url_that_names_no_one_database_is_refused(
    redis_url: str, raw: redis.Redis, location: str
) -> None:
    """redis-py reads a URL's path as a database number with every '/' taken out and
    ignores one that is not a number: redis://host/cache used database 0, /1/2 database 12
    and /1?db=2 database 2, silently (the bots' sessions where the operator never looked);
    a port out of range was a StoreError, not the URL error it is."""
    from opticmem.stores import open_store

    host = redis_url.rsplit("/", 1)[0]
    bad = host.rsplit(":", 1)[0] if location.startswith(":") else host
    with pytest.raises(StoreURLError, match=r"database|Port out of range"):
        open_store(f"{bad}{location}?tenant=t")
    assert raw.dbsize() == 0
    for fine in ("/1?db=1", "/?db=1", "/%31"):  # one database, said once
        store = open_store(f"{host}{fine}{'&' if '?' in fine else '?'}tenant=t")
        try:
            store.append_turn("s", "user", "hi", 0.0)
        finally:
            store.close()
    with redis.Redis.from_url(host + "/1") as one:
        assert one.llen("opticmem:{t:s}:turns") == 3


def test_a_store_url_setting_given_twice_differently_is_refused(
    redis_url: str, raw: redis.Redis
) -> None:
    """?tenant=a&tenant=b opened tenant b without a word (the last one won): a worker or
    a bot then served another tenant's sessions and queue than the one the operator
    read first in the URL."""
    from opticmem.recollect_queue import RedisRecollectQueue
    from opticmem.stores import open_store

    for query in ("tenant=a&tenant=b", "ttl=60&ttl=61", "cluster=0&cluster=1"):
        with pytest.raises(StoreURLError, match="twice"):
            open_store(f"{redis_url}?{query}")
        with pytest.raises(StoreURLError, match="twice"):
            RedisRecollectQueue.from_url(f"{redis_url}?{query}")
    assert raw.dbsize() == 0
    store = open_store(f"{redis_url}?tenant=a&ttl=60&tenant=a&ttl=60.0")  # same: taken
    try:
        assert (store.tenant, store.ttl_ms) == ("a", 60_000)
    finally:
        store.close()


@pytest.mark.parametrize("location", ["/2", "?db=3", "/%32"])
def test_a_database_in_a_cluster_url_is_a_url_error_not_an_unreachable_server(
    location: str,
) -> None:
    """A Redis Cluster has only database 0: redis-py refused /2 with a cluster error,
    which the store raised as StoreUnavailableError, the error a caller waiting for Redis
    retries (a ConnectionError), and the CLI gave it exit 1 rather than the usage error.
    It is refused as the URL error it is, before anything connects (no server listens
    on port 1)."""
    url = f"redis://127.0.0.1:1{location}"
    with pytest.raises(StoreURLError, match=r"database [23] in Redis Cluster URL") as caught:
        RedisStore.from_url(url, cluster=True)
    assert not isinstance(caught.value, StoreUnavailableError)
    with pytest.raises(StoreURLError, match="database"):
        RedisStore.from_store_url(url + ("&" if "?" in url else "?") + "cluster=1&tenant=t")
