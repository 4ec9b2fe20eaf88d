"""Fixtures of the Redis store tests, on the real ``redis-server`` that ``tests/conftest.py``
starts (``redis_server``, ``redis_url``, ``server_factory`` live there, shared with the
memory contract suite and the examples' tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from opticmem.redis_store import RedisStore


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain redis-py client on the test server, for looking under the store."""
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisStore]:
    """A :class:`RedisStore` on the emptied test server (tenant ``test``)."""
    s = RedisStore.from_url(redis_url, tenant="test")
    try:
        yield s
    finally:
        s.close()
