"""The fixture itself: a missing redis-server skips locally with the install hint, and
fails loudly in CI (``CI`` / ``OPTICMEM_REQUIRE_REDIS``) instead of passing on nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis.server import SLOTS, RedisCluster, RedisServer, command

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
A_REDIS_TEST = "tests/redis/test_redis_store.py::test_blobs_are_compressed_only_when_it_pays"
A_CLUSTER_TEST = "tests/redis/test_redis_cluster.py::test_blobs_read_with_one_mget_on_every_node"


def _run_without_redis_server(tmp_path: Path, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPTICMEM_REDIS_SERVER", "CI", "OPTICMEM_REQUIRE_REDIS")}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server anywhere
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", A_REDIS_TEST,
         A_CLUSTER_TEST],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_missing_redis_server_fails_in_ci_with_install_hint(tmp_path: Path) -> None:
    proc = _run_without_redis_server(tmp_path, OPTICMEM_REQUIRE_REDIS="1")
    assert proc.returncode != 0, proc.stdout  # an error, never a skip or a pass
    assert "skipped" not in proc.stdout.splitlines()[-1]
    assert "2 errors" in proc.stdout.splitlines()[-1]  # the server and the cluster fixture
    assert "apt-get install redis-server" in proc.stdout


def test_missing_redis_server_skips_locally_with_install_hint(tmp_path: Path) -> None:
    proc = _run_without_redis_server(tmp_path)
    assert proc.returncode == 0, proc.stdout
    assert "2 skipped" in proc.stdout.splitlines()[-1]
    assert "apt-get install redis-server" in proc.stdout  # the reason, shown by -rs
    assert "no redis-server for a Redis Cluster" in proc.stdout


def test_server_answers_and_stops(redis_server: RedisServer, tmp_path: Path) -> None:
    assert redis_server.url.startswith("redis://127.0.0.1:")
    server = RedisServer(tmp_path / "own").start()
    proc = server.proc
    assert proc is not None and proc.poll() is None
    assert (tmp_path / "own" / "appendonlydir").is_dir()  # AOF inside its own directory
    server.stop()
    assert proc.poll() is not None and server.proc is None


def test_a_cluster_is_made_without_redis_cli_too(tmp_path: Path) -> None:
    """The fallback for a machine with redis-server but no redis-cli: the fixture sends
    CLUSTER ADDSLOTSRANGE / SET-CONFIG-EPOCH / MEET itself."""
    import redis.cluster

    cluster = RedisCluster(tmp_path, create="commands").start()
    try:
        assert cluster.created_with == "commands"
        client = redis.cluster.RedisCluster.from_url(cluster.url)
        try:
            assert len(client.get_primaries()) == 3
            assert all(int(RedisCluster.cluster_info(p)["cluster_slots_ok"]) == SLOTS
                       for p in cluster.ports)
            for i in range(30):  # keys in slots of every node
                client.set(f"k{i}", i)
            sizes = [command(p, "DBSIZE") for p in cluster.ports]
            assert sum(sizes) == 30 and all(sizes), sizes
        finally:
            client.close()
    finally:
        procs = [s.proc for s in cluster.servers]
        cluster.stop()
    assert all(p is not None and p.poll() is not None for p in procs)


def test_a_port_taken_before_the_server_binds_it_is_chosen_again(tmp_path: Path) -> None:
    """A free port can be taken between choosing and binding (an outgoing connection's
    ephemeral port): a cluster node failed to start so, once, in a full run."""
    import socket

    with socket.socket() as taker:
        taker.bind(("127.0.0.1", 0))
        taker.listen()
        taken = taker.getsockname()[1]
        server = RedisServer(tmp_path, cluster=True)
        server.cluster_port = taken
        try:
            server.start()
            assert taken not in (server.port, server.cluster_port)
            assert command(server.port, "PING") == b"PONG"
        finally:
            server.stop()
        pinned = RedisServer(tmp_path / "pinned", port=taken)  # a port asked for is kept
        with pytest.raises(RuntimeError, match="Address already in use"):
            pinned.start()
