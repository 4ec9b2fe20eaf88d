"""Many processes, one Redis: every acknowledged turn present exactly once, in one order,
readable by every process."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from opticmem.redis_store import RedisStore
from tests.redis.workers import append_and_read

pytestmark = pytest.mark.redis

PROCS, TURNS, SESSIONS = 8, 500, ["room:0", "room 1", "room*2", "{room}3"]


def test_eight_processes_four_sessions(redis_url: str) -> None:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(PROCS)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=append_and_read,
                    args=(redis_url, "mp", p, SESSIONS, TURNS, barrier, out))
        for p in range(PROCS)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    store = RedisStore.from_url(redis_url, tenant="mp")
    stored = {s: store.get_turns(s, 0, 10**9) for s in SESSIONS}
    store.close()
    assert sum(len(v) for v in stored.values()) == PROCS * TURNS
    where = {}
    for s, turns in stored.items():
        assert [t.seq for t in turns] == list(range(len(turns)))  # one order, no gaps
        for t in turns:
            assert t.text not in where, f"{t.text} stored twice"
            where[t.text] = (s, t.seq)
    acked = [a for _, acks, _ in results for a in acks]
    assert len(acked) == PROCS * TURNS
    for session, seq, text in acked:  # each acknowledged turn, exactly where acknowledged
        assert where[text] == (session, seq)
    for _proc, acks, _ in results:  # each writer's own turns keep its order
        for s in SESSIONS:
            seqs = [seq for session, seq, _ in acks if session == s]
            assert seqs == sorted(seqs)
    digests = {proc: d for proc, _, d in results}
    assert len({tuple(sorted(d.items())) for d in digests.values()}) == 1  # all read the same
    assert all(d[s][0] == len(stored[s]) for d in digests.values() for s in SESSIONS)


def test_a_forked_child_gets_its_own_append_tokens(redis_url: str) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs fork")
    from opticmem import redis_store

    store = RedisStore.from_url(redis_url, tenant="fork")
    parent = redis_store._TOKENS.next()
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child() -> None:
        q.put(redis_store._TOKENS.next())
        s = RedisStore.from_url(redis_url, tenant="fork")
        s.append_turn("s", "user", "from the child", 0.0)
        s.close()

    p = ctx.Process(target=child)
    p.start()
    p.join(timeout=30)
    assert p.exitcode == 0
    token = q.get(timeout=5)
    assert token[:12] != parent[:12]  # a fresh random prefix after fork
    store.append_turn("s", "user", "from the parent", 0.0)
    assert sorted(t.text for t in store.get_turns("s", 0, 5)) == ["from the child",
                                                                  "from the parent"]
    store.close()
