"""The fixture itself: a missing redis-server fails the tests loudly instead of skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis.server import RedisServer

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]


def test_missing_redis_server_fails_with_install_hint(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPTICMEM_REDIS_SERVER"}
    env["PATH"] = str(tmp_path)  # an empty directory: no redis-server anywhere
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/redis/test_redis_contract.py::test_seq_is_per_session_and_starts_at_zero"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0, proc.stdout  # an error, never a skip or a pass
    assert "skipped" not in proc.stdout.splitlines()[-1]
    assert "apt-get install redis-server" in proc.stdout


def test_server_answers_and_stops(redis_server: RedisServer, tmp_path: Path) -> None:
    assert redis_server.url.startswith("redis://127.0.0.1:")
    server = RedisServer(tmp_path / "own").start()
    proc = server.proc
    assert proc is not None and proc.poll() is None
    assert (tmp_path / "own" / "appendonlydir").is_dir()  # AOF inside its own directory
    server.stop()
    assert proc.poll() is not None and server.proc is None
