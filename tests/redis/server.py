"""A throwaway ``redis-server`` on a free loopback port: used by the Redis tests and the
Redis benchmark (``benchmarks/redis_speed.py``).

The server keeps everything in its own directory (AOF on, ``appendfsync always``, no RDB
snapshots), answers only on 127.0.0.1, and can be killed (SIGKILL) and restarted on the
same port and directory to test recovery from its append-only file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "redis-server was not found on PATH. The Redis tests need a real server: install the "
    "Debian package with `sudo apt-get install redis-server` (or `make redis-server`; "
    "CI's .ci/run does this), or point OPTICMEM_REDIS_SERVER at a redis-server binary."
)


class RedisServerMissing(RuntimeError):
    """No ``redis-server`` binary to start (see :data:`INSTALL_HINT`)."""


def find_redis_server() -> str:
    """Path of the ``redis-server`` binary, or :class:`RedisServerMissing`."""
    explicit = os.environ.get("OPTICMEM_REDIS_SERVER")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisServerMissing(f"OPTICMEM_REDIS_SERVER={explicit!r} is not executable")
        return explicit
    found = shutil.which("redis-server")
    if found is None:
        raise RedisServerMissing(INSTALL_HINT)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(port: int, timeout: float = 0.5) -> bool:
    """True if a Redis server on 127.0.0.1:``port`` answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process in ``directory`` on 127.0.0.1.

    ``appendfsync`` defaults to ``always`` so that every acknowledged write is on disk
    before the reply: what the kill-and-restart test relies on. ``forbid_keys`` renames
    the ``KEYS`` command away, so any code that uses it fails loudly.
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        forbid_keys: bool = True,
    ) -> None:
        self.binary = find_redis_server()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.appendfsync = appendfsync
        self.forbid_keys = forbid_keys
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def _write_config(self) -> Path:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            "daemonize no",
            f'dir "{self.directory}"',
            f'logfile "{self.log_path}"',
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'appenddirname "appendonlydir"',
            'save ""',
            "maxmemory-policy noeviction",
        ]
        if self.forbid_keys:
            lines.append('rename-command KEYS ""')
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and wait until it answers PING (loading its AOF if any)."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [self.binary, str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode} on port {self.port}: "
                    f"{err.strip()}\n{self.log_tail()}"
                )
            if ping(self.port):
                log.debug("redis-server up on port %d (pid %d)", self.port, self.proc.pid)
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING in {timeout}s")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no final fsync) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM); kill it if it does not exit within ``timeout``."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("redis-server on port %d ignored SIGTERM; killing it", self.port)
        self.kill()

    def restart(self) -> RedisServer:
        """Start again on the same port and directory (replaying the AOF)."""
        self.kill()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
