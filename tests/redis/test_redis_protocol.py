"""What the Redis store sends, watched with ``MONITOR`` on the real test server: writes
that touch more than one key must reach Redis as one atomic unit (a Lua script or a
MULTI/EXEC block), so a client killed between commands cannot leave half a write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis

from opticmem.redis_store import RedisStore

pytestmark = pytest.mark.redis

_END = "opticmem-test-monitor-end"


@contextmanager
def watched(redis_url: str) -> Iterator[list[str]]:
    """Record the commands other clients send while the block runs (first word upper-cased)."""
    seen: list[str] = []
    watcher = redis.Redis.from_url(redis_url)
    sender = redis.Redis.from_url(redis_url)
    try:
        with watcher.monitor() as m:
            yield seen
            sender.echo(_END)
            while True:
                cmd = m.next_command()["command"]
                if _END in cmd:
                    break
                seen.append(cmd.split(" ", 1)[0].upper())
    finally:
        sender.close()
        watcher.close()


def _atomic_writes(commands: list[str]) -> bool:
    """True if every write command in ``commands`` sits inside MULTI ... EXEC."""
    inside = False
    for cmd in commands:
        if cmd == "MULTI":
            inside = True
        elif cmd == "EXEC":
            inside = False
        elif cmd in {"RPUSH", "HSETNX", "HSET", "SET", "LPUSH"} and not inside:
            return False
    return True


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_digest_keyed_append_is_one_transaction(redis_url: str, mode: str) -> None:
    """A long (digest-keyed) id needs its turns and its meta ``id`` written together:
    turns without the id are skipped by sessions() for good."""
    store = RedisStore.from_url(redis_url, tenant="t", check=False)
    session = "long-" * 40
    append: Callable[[], object]
    if mode == "sync":
        def append() -> object:
            return store.append_turns(session, [("user", "hi", 1.0, None)])
    else:
        def append() -> object:
            return asyncio.run(store.aappend_turns(session, [("user", "hi", 1.0, None)]))
    try:
        with watched(redis_url) as commands:
            append()
        assert "RPUSH" in commands and "HSETNX" in commands, commands
        assert _atomic_writes(commands), commands
        assert list(store.sessions()) == [session]
    finally:
        store.close()
