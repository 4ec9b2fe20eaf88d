"""Shared test configuration: GPU tests skip where no CUDA device exists, and one real
``redis-server`` serves every test that needs Redis (memory contract, Redis store, examples).

The Redis fixtures start :class:`tests.redis.server.RedisServer` on a free loopback port in
a temporary directory (AOF on, ``appendfsync always``, ``KEYS`` renamed away) and stop it
at the end: no mocks. Without a ``redis-server`` binary those tests skip, naming the
package to install — except where ``CI`` or ``OPTICMEM_REQUIRE_REDIS`` is set (``.ci/run``
sets it): there they fail, so a CI image that lost the binary cannot pass by running
nothing.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.redis.server import RedisCluster, RedisServer, RedisServerMissing


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (CI has none)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def redis_required() -> bool:
    """True where a missing ``redis-server`` must fail the tests rather than skip them."""
    return any(os.environ.get(v, "").strip() not in ("", "0", "false")
               for v in ("CI", "OPTICMEM_REQUIRE_REDIS"))


def start_redis(directory: Path, **kwargs: object) -> RedisServer:
    """Start a server in ``directory``; skip (locally) or fail (CI) if there is no binary."""
    try:
        return RedisServer(directory, **kwargs).start()  # type: ignore[arg-type]
    except RedisServerMissing as exc:
        if redis_required():
            pytest.fail(f"\n\n*** {exc} ***\n", pytrace=False)
        pytest.skip(f"no redis-server: {exc}")


def start_redis_cluster(directory: Path, **kwargs: object) -> RedisCluster:
    """Start a Redis Cluster in ``directory``; skip or fail as :func:`start_redis` does."""
    try:
        return RedisCluster(directory, **kwargs).start()  # type: ignore[arg-type]
    except RedisServerMissing as exc:
        if redis_required():
            pytest.fail(f"\n\n*** {exc} ***\n", pytrace=False)
        pytest.skip(f"no redis-server for a Redis Cluster: {exc}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` shared by the whole test session."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server's URL, emptied (FLUSHALL) for this test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a previous test's failure must not cascade
    import redis  # the optional dependency, only where a test needs it

    with redis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-primary Redis Cluster on loopback, shared by the whole test session."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """A startup URL of the shared cluster, every node emptied for this test (open it with
    ``RedisStore.from_url(url, cluster=True)`` or ``redis.cluster.RedisCluster.from_url``)."""
    redis_cluster.ensure_running()  # a previous test's failure must not cascade
    redis_cluster.flushall()
    return redis_cluster.url


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start dedicated servers (for kill/restart tests); all are stopped afterwards."""
    started: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = start_redis(tmp_path / f"redis-{len(started)}", **kwargs)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def pillow_11_3_fromarray(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Image.fromarray`` as Pillow 11.3 has it: passing ``mode=`` is deprecated there
    (Pillow 12 took the deprecation back), and the supported range includes 11.3."""
    from PIL import Image

    real = Image.fromarray

    def fromarray(obj: object, mode: str | None = None) -> Image.Image:
        if mode is not None:
            warnings.warn("'mode' parameter is deprecated and will be removed in Pillow 13",
                          DeprecationWarning, stacklevel=2)
        return real(obj, mode)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "fromarray", fromarray)


@pytest.fixture
def unwritable_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[[str, str], Path]:
    """``make(damage, name)``: a path a command cannot write to, ``name`` inside either a
    file (``"under a file"``) or a folder that takes no files (``"takes no files"``: no
    permission or a read-only mount, as :func:`tempfile.TemporaryFile` there finds it;
    root, which tests run as on CI, ignores permissions)."""
    import tempfile

    def make(damage: str, name: str) -> Path:
        if damage == "under a file":
            (tmp_path / "a-file").write_text("x")
            return tmp_path / "a-file" / name
        refusing = tmp_path / "read-only"
        refusing.mkdir(exist_ok=True)
        real = tempfile.TemporaryFile

        def refused(*args: object, **kwargs: object) -> object:
            if str(kwargs.get("dir")) == str(refusing):
                raise PermissionError(13, "Permission denied")
            return real(*args, **kwargs)  # type: ignore[call-overload]

        monkeypatch.setattr(tempfile, "TemporaryFile", refused)
        return refusing / name

    return make
