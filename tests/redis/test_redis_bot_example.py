"""``examples/redis_bot.py`` against the real test server, as an operator reruns it."""

from __future__ import annotations

import json

import pytest
import redis

from opticmem.redis_store import RedisStore
from tests.integrations.test_examples import run_example

pytestmark = pytest.mark.redis


def test_fresh_deletes_every_session_an_earlier_run_left(
    redis_url: str, raw: redis.Redis
) -> None:
    """``--fresh`` promises to delete the sessions a previous run left: a run that served
    fewer sessions than the one before must not leave the extra ones in the tenant."""
    run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "4", "--turns", "1",
                "--json")
    raw.rpush("opticmem:{redis-bot:keep-me}:turns", b"{}")  # not one of the bot's
    fresh = run_example("redis_bot.py", "--redis-url", redis_url, "--sessions", "2",
                        "--turns", "1", "--fresh", "--json").stdout
    assert json.loads(fresh)["turns"] == 4
    store = RedisStore.from_url(redis_url, tenant="redis-bot")
    try:
        assert sorted(store.sessions()) == ["keep-me", "user-0", "user-1"]
    finally:
        store.close()
