"""RedisStore on a real Redis Cluster: three primaries on loopback (``redis_cluster`` in
``tests/conftest.py``), no mocks. The shared store contract runs on the cluster too (the
``redis-cluster`` backend of ``tests/memory/backends.py``); these tests check what is
particular to a cluster: sessions spread over the nodes and listed from all of them, a
session's keys kept on one node, scripts and MGET on every node, URLs, clients, a node
restart, and a whole :class:`~opticmem.OpticalMemory` on top."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from opticmem import OpticalMemory, RenderSettings
from opticmem.errors import RecordTooLargeError, SessionFullError, StoreError, StoreURLError
from opticmem.redis_store import RedisStore
from opticmem.stores import open_store
from tests.memory.test_store_contract import page
from tests.redis.server import SLOTS
from tests.redis.server import RedisCluster as LocalCluster

pytestmark = pytest.mark.redis


@pytest.fixture
def cstore(redis_cluster_url: str) -> Iterator[RedisStore]:
    """A :class:`RedisStore` on the emptied cluster (tenant ``test``)."""
    s = RedisStore.from_url(redis_cluster_url, tenant="test", cluster=True, check=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def nodes(redis_cluster: LocalCluster) -> Iterator[dict[int, redis.Redis]]:
    """A plain client on each node, by port, for looking under the store."""
    clients = {p: redis.Redis(port=p) for p in redis_cluster.ports}
    try:
        yield clients
    finally:
        for c in clients.values():
            c.close()


def keys_by_node(nodes: dict[int, redis.Redis]) -> dict[int, set[bytes]]:
    """Every opticmem key, by the port of the node that holds it (SCAN on each node)."""
    return {p: set(c.scan_iter(match="opticmem:*", count=1000)) for p, c in nodes.items()}


def node_of(nodes: dict[int, redis.Redis], key: str) -> int:
    """The port of the node that serves ``key``'s slot (by CLUSTER SLOTS)."""
    any_node = next(iter(nodes.values()))
    slot = int(any_node.execute_command("CLUSTER", "KEYSLOT", key))
    for lo, hi, primary, *_ in any_node.execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return int(primary[1])
    raise AssertionError(f"slot {slot} is served by no node")


def one_session_per_node(nodes: dict[int, redis.Redis]) -> dict[int, str]:
    """A session id whose keys land on each node, by port."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < len(nodes):
        session = f"user-{i}"
        found.setdefault(node_of(nodes, f"opticmem:{{test:{session}}}:turns"), session)
        i += 1
    return found


def test_the_fixture_is_a_cluster_of_three_primaries(redis_cluster: LocalCluster) -> None:
    assert redis_cluster.created_with in ("redis-cli", "commands")
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        primaries = client.get_primaries()
        assert sorted(int(n.port) for n in primaries) == sorted(redis_cluster.ports)
        for port in redis_cluster.ports:
            info = LocalCluster.cluster_info(port)
            assert info["cluster_state"] == "ok"
            assert int(info["cluster_slots_ok"]) == SLOTS
            assert int(info["cluster_size"]) == 3  # three primaries holding slots
    finally:
        client.close()


def test_sessions_spread_over_every_node_and_all_are_listed(
    cstore: RedisStore, nodes: dict[int, redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = [f"user-{i}" for i in range(1500)] + ["a:b}*", "with space", "서울"]
    long = [f"{i}-" + "long id " * 40 for i in range(30)]  # digest-keyed: id kept in meta
    for s in plain + long:
        cstore.append_turns(s, [("user", "hi", 0.0, None)])
    for s in plain[:1500]:
        cstore.add_page(page(s, 0))  # more keys per node than one SCAN step covers
    cstore.put_blob("only-blobs", "k", b"v")  # a session without turns is not listed
    expected = set(plain) | set(long)

    by_node = keys_by_node(nodes)
    turn_keys = {p: {k for k in ks if k.endswith(b":turns")} for p, ks in by_node.items()}
    assert all(len(ks) > 400 for ks in turn_keys.values()), {
        p: len(ks) for p, ks in turn_keys.items()}  # every node holds a share
    assert all(len(ks) > 1000 for ks in by_node.values())  # so SCAN pages on each node

    steps: dict[str, int] = {}
    scan = cstore._scan

    def counted(node: Any, cursor: int, pattern: str) -> Any:
        steps[node.name] = steps.get(node.name, 0) + 1
        return scan(node, cursor, pattern)

    monkeypatch.setattr(cstore, "_scan", counted)  # counts the real SCANs, one per step
    listed = list(cstore.sessions())
    assert len(listed) == len(expected) and set(listed) == expected
    assert len(steps) == 3 and all(n >= 2 for n in steps.values()), steps
    assert sorted(asyncio.run(cstore.asessions())) == sorted(expected)


def test_a_sessions_keys_stay_on_one_node(
    cstore: RedisStore, nodes: dict[int, redis.Redis]
) -> None:
    sessions = one_session_per_node(nodes)
    for s in sessions.values():
        cstore.append_turn(s, "user", "x", 0.0)
        cstore.add_page(page(s, 0))
        cstore.put_blob(s, "png:0:large", b"\x89PNG" + b"\x00" * 100)
        cstore.put_state(s, "mark/abc", b"{}")
        assert cstore.swap_state(s, "mark/abc", b"{}", b"[]", page=page(s, 0))
    by_node = keys_by_node(nodes)
    for port, s in sessions.items():
        tag = f"{{test:{s}}}".encode()
        assert {k for k in by_node[port] if tag in k} == {
            b"opticmem:" + tag + suffix
            for suffix in (b":turns", b":pages", b":meta", b":blobs", b":b:png%3A0%3Alarge")
        }
        assert not any(tag in k for p, ks in by_node.items() if p != port for k in ks)


def test_blobs_read_with_one_mget_on_every_node(cstore: RedisStore,
                                                 nodes: dict[int, redis.Redis]) -> None:
    sessions = one_session_per_node(nodes)
    for port, s in sessions.items():
        for i in range(5):
            cstore.put_blob(s, f"rec:{i}", f"{port}/{i} ".encode() * 400)
    for port, s in sessions.items():
        keys = [f"rec:{i}" for i in (4, 0, 9, 2)]
        want = [f"{port}/{i} ".encode() * 400 if i < 5 else None for i in (4, 0, 9, 2)]
        assert cstore.get_blobs(s, keys) == want
        assert asyncio.run(cstore.aget_blobs(s, keys)) == want


def test_scripts_run_on_every_node_with_ttl_and_caps(
    redis_cluster_url: str, nodes: dict[int, redis.Redis]
) -> None:
    store = RedisStore.from_url(redis_cluster_url, tenant="test", cluster=True, check=False,
                                ttl=600, max_turns=5, max_blob_bytes=10_000)
    try:
        sessions = one_session_per_node(nodes)
        for port, s in sessions.items():
            assert [t.seq for t in store.append_turns(
                s, [("user", f"t{i}", float(i), None) for i in range(4)])] == [0, 1, 2, 3]
            with pytest.raises(SessionFullError):
                store.append_turns(s, [("user", "x", 0.0, None)] * 2)
            assert store.forget_turns(s, 2) == 2
            assert store.append_turns(s, [("user", "y", 0.0, None)] * 3)[0].seq == 4
            assert store.add_page(page(s, 0)) and not store.add_page(page(s, 0))
            for i in range(4):  # 4 x 4 KB of incompressible bytes: the oldest go
                store.put_blob(s, f"b{i}", os.urandom(4000))
            assert store.get_blob(s, "b0") is None and store.get_blob(s, "b3") is not None
            tag = f"{{test:{s}}}"
            for suffix in ("turns", "pages", "meta", "blobs", "b:b3"):
                assert 0 < nodes[port].pttl(f"opticmem:{tag}:{suffix}") <= 600_000
            store.delete_session(s)
            assert not any(tag.encode() in k for k in keys_by_node(nodes)[port])
    finally:
        store.close()


def test_async_writers_share_one_order_within_the_connection_limit(
    redis_cluster_url: str,
) -> None:
    store = RedisStore.from_url(redis_cluster_url, tenant="test", cluster=True, check=False,
                                max_connections=8)

    async def go() -> list[int]:
        turns = await asyncio.gather(
            *(store.aappend_turn(f"s{i % 3}", "user", f"t{i}", 0.0) for i in range(150))
        )
        return [t.seq for t in turns]

    try:
        seqs = asyncio.run(go())  # 150 tasks, 8 connections: they wait, none fails
        assert sorted(seqs) == sorted(list(range(50)) * 3)
        assert [store.turn_count(f"s{i}") for i in range(3)] == [50, 50, 50]
    finally:
        store.close()


def test_store_urls_open_a_cluster(redis_cluster_url: str) -> None:
    store = open_store(f"{redis_cluster_url}?cluster=1&tenant=acme")
    try:
        assert isinstance(store, RedisStore) and store.cluster and store.tenant == "acme"
        assert store.url == f"{redis_cluster_url}?cluster=1"
        store.append_turn("s", "user", "hi", 0.0)
        assert list(store.sessions()) == ["s"]
    finally:
        store.close()
    for query, named in [("cluster=maybe", "cluster"), ("cluster=", "cluster"),
                         ("cluster=1&tenatn=acme", "tenatn"),
                         ("cluster=1&decode_responses=true", "decode_responses=False")]:
        with pytest.raises(StoreURLError, match=named):
            RedisStore.from_store_url(f"{redis_cluster_url}?{query}")
    with pytest.raises(StoreURLError, match="Redis Cluster"):
        RedisStore.from_url(f"{redis_cluster_url}/2", cluster=True)  # no db on a cluster


def test_a_plain_client_on_a_cluster_node_is_told_to_open_a_cluster(
    redis_cluster_url: str, nodes: dict[int, redis.Redis], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="opticmem.redis_store")
    store = RedisStore.from_store_url(f"{redis_cluster_url}?cluster=no&tenant=test")
    try:
        assert not store.cluster
        assert "is a Redis Cluster node: open it with cluster=True" in caplog.text
        first = int(redis_cluster_url.rsplit(":", 1)[1])
        elsewhere = next(s for p, s in one_session_per_node(nodes).items() if p != first)
        with pytest.raises(StoreError, match=r"MOVED .*cluster=True"):
            store.append_turn(elsewhere, "user", "hi", 0.0)
    finally:
        store.close()


def test_cluster_clients_passed_in(redis_cluster_url: str,
                                   caplog: pytest.LogCaptureFixture) -> None:
    client = RedisCluster.from_url(redis_cluster_url, retry=Retry(NoBackoff(), 0))
    aclient = AsyncRedisCluster.from_url(redis_cluster_url, retry=AsyncRetry(NoBackoff(), 0))
    store = RedisStore(client, aclient, tenant="mine")
    try:
        assert store.cluster and store.url.endswith("?cluster=1")
        long = "x" * 300  # digest-keyed: a script on a cluster, not MULTI/EXEC
        store.append_turn(long, "user", "hi", 0.0)

        async def go() -> None:
            assert (await store.aappend_turn(long, "user", "yo", 1.0)).seq == 1
            assert await store.asessions() == [long]
            await store.adelete_session(long)
            await aclient.aclose()

        asyncio.run(go())
        assert list(store.sessions()) == []
        with pytest.raises(ValueError, match="both be Redis Cluster clients or neither"):
            RedisStore(client, redis.asyncio.Redis())
        decoding = RedisCluster.from_url(redis_cluster_url, decode_responses=True)
        with pytest.raises(ValueError, match="decode_responses=False"):
            RedisStore(decoding)
        decoding.close()
        caplog.set_level(logging.WARNING, logger="opticmem.redis_store")
        retrying = RedisCluster.from_url(redis_cluster_url)  # redis-py's default: 3 retries
        RedisStore(retrying)
        assert "resends failed commands itself" in caplog.text
        retrying.close()
    finally:
        store.close()
        client.close()


def test_a_node_restart_is_ridden_out(redis_cluster: LocalCluster, cstore: RedisStore,
                                      nodes: dict[int, redis.Redis],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    port, session = next(iter(one_session_per_node(nodes).items()))
    cstore.append_turns(session, [("user", f"t{i}", 0.0, None) for i in range(3)])
    server = next(s for s in redis_cluster.servers if s.port == port)
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGKILL)  # the node that holds the session dies ...
    restart = threading.Timer(0.3, server.restart)  # ... and comes back (from its AOF)
    restart.start()
    try:
        started = time.monotonic()
        turn = cstore.append_turn(session, "user", "after", 1.0)  # retried meanwhile
        assert turn.seq == 3 and time.monotonic() - started < 15
        assert [t.text for t in cstore.get_turns(session, 0, 10)] == ["t0", "t1", "t2", "after"]
        assert session in set(cstore.sessions())
        assert "append failed" in caplog.text and "retry 1 in" in caplog.text, caplog.text
    finally:
        restart.join()
        redis_cluster.wait_ok()


SMALL = RenderSettings(max_rows=6)


def test_optical_memory_end_to_end_on_a_cluster(redis_cluster_url: str) -> None:
    url = f"{redis_cluster_url}?cluster=1&tenant=bots"
    mem = OpticalMemory(url, codec=None, verbatim_turns=2, render_settings=SMALL)
    other = OpticalMemory(url, codec=None, verbatim_turns=2, render_settings=SMALL)
    try:
        users = [f"user-{i}" for i in range(6)]  # spread over the nodes
        for i in range(40):
            for u in users:
                mem.add(u, "user", f"{u} line {i}: ticket ABC-{1000 + i} ships on "
                        f"2026-03-{1 + i % 28:02d} " + "plan " * (i % 7))
        for u in users:
            pages = mem.pages(u)
            assert len(pages) >= 3
            assert other.pages(u) == pages  # another process sees the same sealed pages
            ctx = other.context(u, budget_tokens=4000)
            assert ctx.pages and int(ctx.cost) <= 4000 and len(ctx.turns) >= 2
            hits = other.recall(u, "ticket ABC-1003", decode=False, include_original=True)
            assert any("ABC-1003" in t.text for p in hits for t in p.original)
        assert sorted(other.sessions()) == sorted(users)

        async def go() -> None:
            await other.aadd("user-0", "assistant", "noted ABC-9999")
            ctx = await other.acontext("user-0", budget_tokens=4000)
            assert ctx.turns[-1].text == "noted ABC-9999"

        asyncio.run(go())
        mem.delete_session("user-0")
        assert sorted(other.sessions()) == users[1:]
    finally:
        other.close()
        mem.close()


def test_a_value_over_a_nodes_proto_max_bulk_len_is_refused_at_once(
    redis_cluster_url: str, nodes: dict[int, redis.Redis], caplog: pytest.LogCaptureFixture,
) -> None:
    """Every primary's limit is read (the least counts): a value over it is a typed error
    at once, not a cluster out of reach after the retries."""
    caplog.set_level(logging.INFO, logger="opticmem.redis_store")
    lowered = next(iter(nodes.values()))
    lowered.config_set("proto-max-bulk-len", "1mb")
    try:
        store = RedisStore.from_url(redis_cluster_url, tenant="test", cluster=True, check=False)
        for s in ("a", "b", "c", "d"):
            store.append_turn(s, "user", "hi", 0.0)
        big = "x" * (2 << 20)
        for s in ("a", "b", "c", "d"):
            with pytest.raises(RecordTooLargeError, match="proto-max-bulk-len"):
                store.append_turn(s, "user", big, 1.0)

        assert [store.turn_count(s) for s in ("a", "b", "c", "d")] == [1, 1, 1, 1]

        async def go() -> None:
            with pytest.raises(RecordTooLargeError):
                await store.aappend_turn("a", "user", big, 1.0)
            await store.aclose()

        asyncio.run(go())
        assert "retry 1 in" not in caplog.text
    finally:
        lowered.config_set("proto-max-bulk-len", "512mb")


def test_artefacts_are_cached_where_a_cluster_pipeline_refuses_scripts(
    cstore: RedisStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """redis-py before 8.2 refuses EVALSHA in a cluster pipeline (as it is queued): every
    put_page_blobs on a cluster failed there, so no worker's reading was ever kept."""
    import redis.cluster

    monkeypatch.setattr(redis.cluster.ClusterPipeline, "evalsha",
                        redis.cluster.block_pipeline_command("EVALSHA"), raising=False)
    pages = []
    for s in ("a", "b", "c", "d"):
        cstore.append_turn(s, "user", "hi", 0.0)
        cstore.add_page(page(s, 0))
        pages.append(page(s, 0))
    assert cstore.put_page_blobs([(p, "rec", p.session.encode()) for p in pages]) == [True] * 4
    assert cstore.get_blobs_of([(p.session, "rec") for p in pages]) == [b"a", b"b", b"c", b"d"]
    cstore.delete_session("d")  # and the page check still holds for each
    assert cstore.put_page_blobs([(pages[3], "rec", b"x"), (pages[0], "more", b"y")]) == [
        False, True]
