"""The store backends the contract suite runs against.

Adding a backend is one entry: a name, a factory ``(request, tmp_path) -> Store`` and any
marks. The factory may pull other fixtures through ``request.getfixturevalue``: the Redis
backend asks for ``redis_url`` (``tests/conftest.py``: a real redis-server, emptied for
each test, so every test starts from a clean server), the Redis Cluster one for
``redis_cluster_url`` (three real cluster nodes, all emptied for each test).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opticmem.memory_store import InMemoryStore
from opticmem.sqlite_store import SQLiteStore
from opticmem.store import Store


def _redis(request: pytest.FixtureRequest, tmp: Path) -> Store:
    from opticmem.redis_store import RedisStore  # optional dependency: imported on use

    return RedisStore.from_url(request.getfixturevalue("redis_url"), tenant="contract")


def _redis_cluster(request: pytest.FixtureRequest, tmp: Path) -> Store:
    from opticmem.redis_store import RedisStore

    url = request.getfixturevalue("redis_cluster_url")
    return RedisStore.from_url(url, tenant="contract", cluster=True, check=False)


@dataclass(frozen=True)
class Backend:
    factory: Callable[[pytest.FixtureRequest, Path], Store]
    marks: tuple[pytest.MarkDecorator, ...] = ()


BACKENDS: dict[str, Backend] = {
    "memory": Backend(lambda request, tmp: InMemoryStore()),
    "sqlite": Backend(lambda request, tmp: SQLiteStore(tmp / "store.db")),
    "redis": Backend(_redis, marks=(pytest.mark.redis,)),
    "redis-cluster": Backend(_redis_cluster, marks=(pytest.mark.redis,)),
}


def backend_params() -> list[object]:
    return [pytest.param(name, marks=b.marks, id=name) for name, b in BACKENDS.items()]
