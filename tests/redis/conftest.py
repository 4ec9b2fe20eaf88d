"""Fixtures of the Redis tests: a real ``redis-server`` started for the session, and stores.

No mocks: every test talks to a ``redis-server`` that :class:`tests.redis.server.RedisServer`
starts on a free loopback port in a temporary directory (AOF on, ``appendfsync always``,
``KEYS`` renamed away) and stops at the end. Without the binary the tests FAIL (not
skip) with a message saying to install the Debian package ``redis-server``: a CI image
that lost it must not pass by running nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from opticmem.redis_store import RedisStore
from tests.redis.server import RedisServer, RedisServerMissing


def _server_or_fail(directory: Path, **kwargs: object) -> RedisServer:
    try:
        return RedisServer(directory, **kwargs).start()  # type: ignore[arg-type]
    except RedisServerMissing as exc:
        pytest.fail(f"\n\n*** {exc} ***\n", pytrace=False)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` shared by the whole test session."""
    server = _server_or_fail(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied (FLUSHALL) for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a previous test's failure must not cascade
    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


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


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start dedicated servers (for kill/restart tests); all are stopped afterwards."""
    started: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = _server_or_fail(tmp_path / f"redis-{len(started)}", **kwargs)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
