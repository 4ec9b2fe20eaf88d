"""A throwaway ``redis-server`` on a free loopback port: used by the Redis tests and the
Redis benchmark (``benchmarks/redis_speed.py``).

The server keeps everything in its own directory (AOF on, ``appendfsync always``, no RDB
snapshots), answers only on 127.0.0.1, and can be killed (SIGKILL) and restarted on the
same port and directory to test recovery from its append-only file.

:class:`RedisCluster` starts several of them in cluster mode and joins them into one
Redis Cluster (for the cluster tests: ``redis_cluster`` in ``tests/conftest.py``).
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


class _PortTaken(RuntimeError):
    """redis-server could not bind its port or its cluster bus port."""


class RedisServer:
    """One ``redis-server`` process in ``directory`` on 127.0.0.1.

    ``appendfsync`` defaults to ``always`` so that every acknowledged write is on disk
    before the reply: what the kill-and-restart test relies on. ``forbid_keys`` renames
    the ``KEYS`` command away, so any code that uses it fails loudly. ``cluster`` starts it
    as a Redis Cluster node (its ``nodes.conf`` in its directory; see :class:`RedisCluster`).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        appendfsync: str = "always",
        forbid_keys: bool = True,
        cluster: bool = False,
    ) -> None:
        self.binary = find_redis_server()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self._ports_chosen = port is None
        """True while the ports are ours to change: chosen free here, never yet served on."""
        self.appendfsync = appendfsync
        self.forbid_keys = forbid_keys
        self.cluster = cluster
        self.cluster_port = free_port() if cluster else 0
        """The node's cluster bus port (chosen free: ``port + 10000`` may be taken or > 65535)."""
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
        if self.cluster:
            lines += [
                "cluster-enabled yes",
                'cluster-config-file "nodes.conf"',  # relative to dir: the node's own
                f"cluster-port {self.cluster_port}",
                "cluster-node-timeout 5000",
            ]
        conf = self.directory / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 20.0) -> RedisServer:
        """Start the server and wait until it answers PING (loading its AOF if any).

        A port chosen free can be taken before the server binds it (any outgoing
        connection may get it as its ephemeral port); on the first start, such a clash
        picks new ports and starts again, up to twice."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except _PortTaken:
                if not self._ports_chosen or attempt == 2:
                    raise
                log.info("port %d or %d was taken before redis-server bound it; choosing "
                         "again", self.port, self.cluster_port)
                self.port = free_port()
                self.cluster_port = free_port() if self.cluster else 0
                (self.directory / "nodes.conf").unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> RedisServer:
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
                why = f"{err.strip()}\n{self.log_tail()}"
                failure = _PortTaken if "Address already in use" in why else RuntimeError
                raise failure(
                    f"redis-server exited with {self.proc.returncode} on port {self.port}: {why}"
                )
            if ping(self.port):
                log.debug("redis-server up on port %d (pid %d)", self.port, self.proc.pid)
                self._ports_chosen = False  # clients know this port now: a restart keeps it
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


def command(port: int, *args: str | int, timeout: float = 5.0) -> bytes | int:
    """Send one command to the server on 127.0.0.1:``port`` and return its reply (a
    status, bulk string or integer; an error reply raises :class:`RuntimeError`).

    Just enough RESP for setting up a cluster, with no client library.
    """
    parts = [str(a).encode() for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        reader = s.makefile("rb")
        line = reader.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            return b"" if int(rest) < 0 else reader.read(int(rest))
        raise RuntimeError(f"{args[0]} on port {port} failed: {line.decode(errors='replace')}")


def find_redis_cli() -> str | None:
    """``redis-cli`` beside the ``redis-server`` in use, else on PATH, else ``None``."""
    beside = Path(find_redis_server()).with_name("redis-cli")
    return str(beside) if os.access(beside, os.X_OK) else shutil.which("redis-cli")


SLOTS = 16384


class RedisCluster:
    """A Redis Cluster of ``nodes`` primaries (no replicas) on 127.0.0.1, each one a
    :class:`RedisServer` in its own subdirectory of ``directory``.

    :meth:`start` starts the servers, makes them one cluster with ``redis-cli --cluster
    create`` (or, without ``redis-cli`` or with ``create="commands"``, by sending the same
    ``CLUSTER ADDSLOTSRANGE`` / ``SET-CONFIG-EPOCH`` / ``MEET`` commands itself) and waits
    until every node reports ``cluster_state:ok`` and knows every other one. :meth:`stop`
    stops them all. Nodes keep :class:`RedisServer`'s ``appendfsync always``: with
    ``everysec`` a node may postpone writing its AOF while an fsync is running and still
    reply, so a node that a test kills could come back without acknowledged writes.
    """

    def __init__(self, directory: Path, *, nodes: int = 3, create: str = "auto") -> None:
        if create not in ("auto", "redis-cli", "commands"):
            raise ValueError(f"create must be auto, redis-cli or commands, got {create!r}")
        self.directory = Path(directory)
        self.servers = [
            RedisServer(self.directory / f"node-{i}", cluster=True)
            for i in range(nodes)
        ]
        self.create = create
        self.created_with = ""
        """How :meth:`start` made the cluster: ``"redis-cli"`` or ``"commands"``."""

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def url(self) -> str:
        """A startup node's URL (a cluster client finds the other nodes from it)."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 30.0) -> RedisCluster:
        """Start every node, create the cluster if it is new, wait until it serves."""
        try:
            for server in self.servers:
                server.start()
            if self._slots_assigned() == 0:
                self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _slots_assigned(self) -> int:
        info = self.cluster_info(self.ports[0])
        return int(info.get("cluster_slots_assigned", "0"))

    def _create(self, timeout: float) -> None:
        cli = find_redis_cli() if self.create in ("auto", "redis-cli") else None
        if self.create == "redis-cli" and cli is None:
            raise RedisServerMissing("redis-cli was not found beside redis-server or on PATH")
        if cli is not None:
            proc = subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                 "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True, text=True, timeout=timeout,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{proc.stdout}"
                                   f"{proc.stderr}")
            self.created_with = "redis-cli"
            return
        n = len(self.servers)
        for i, port in enumerate(self.ports):  # contiguous ranges, as redis-cli assigns them
            try:  # a distinct epoch per node, set while it is still 0 (before its slots)
                command(port, "CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            except RuntimeError as exc:
                # A node that already bumped its own epoch has one: the cluster resolves
                # equal epochs itself, and wait_ok checks the result.
                if "already non-zero" not in str(exc):
                    raise
            command(port, "CLUSTER", "ADDSLOTSRANGE", SLOTS * i // n, SLOTS * (i + 1) // n - 1)
        for server in self.servers[1:]:  # the bus port too: it is not port + 10000 here
            command(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", server.port,
                    server.cluster_port)
        self.created_with = "commands"

    @staticmethod
    def cluster_info(port: int) -> dict[str, str]:
        reply = command(port, "CLUSTER", "INFO")
        assert isinstance(reply, bytes)
        return dict(
            line.split(":", 1) for line in reply.decode().splitlines() if ":" in line
        )

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every node says ``cluster_state:ok`` and knows all the others."""
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for port in self.ports:
                try:
                    info = self.cluster_info(port)
                except (OSError, RuntimeError) as exc:
                    info = {"cluster_state": f"unreachable ({exc})"}
                states[port] = (info.get("cluster_state"), info.get("cluster_known_nodes"))
            if all(v == ("ok", str(len(self.ports))) for v in states.values()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Redis Cluster not ready after {timeout}s: {states}")
            time.sleep(0.05)

    def ensure_running(self) -> None:
        """Restart any node that died (it rejoins from its nodes.conf), then wait."""
        if any(s.proc is None or s.proc.poll() is not None for s in self.servers):
            for server in self.servers:
                server.start()
            self.wait_ok()

    def flushall(self) -> None:
        """Empty every node (``FLUSHALL`` on a cluster node empties only that node)."""
        for port in self.ports:
            command(port, "FLUSHALL")

    def stop(self) -> None:
        """Stop every node (killing any that will not stop); never raises for one."""
        for server in self.servers:
            try:
                server.stop()
            except Exception:  # keep stopping the others
                log.exception("could not stop redis-server on port %d", server.port)
                with contextlib.suppress(Exception):
                    server.kill()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
