"""A store in one SQLite file (stdlib ``sqlite3``, WAL): durable, shared by threads and processes.

Layout (schema version 1, in ``PRAGMA user_version``)::

    sessions(session PRIMARY KEY, next_seq)        -- the atomic per-session sequence
    turns(session, seq, role, text, ts, meta)      -- the archive, PRIMARY KEY (session, seq)
    pages(session, page_no, record)                -- sealed pages as JSON
    blobs(session, key, data)                      -- derived artefacts; the row of key
                                                      EPOCH_KEY holds the session's epoch

Every write is one ``BEGIN IMMEDIATE`` transaction, so the sequence number and the row
are written together and two processes appending to one session get distinct, ordered
seqs. WAL lets readers run while one writer commits. ``synchronous="FULL"`` (default)
makes a turn survive power loss once ``append_turn`` returns; ``"NORMAL"`` is faster and
still survives a crash of the process.

Each thread gets its own connection (opened lazily, reopened after ``fork``, closed when
the thread ends).

>>> import tempfile, os
>>> with SQLiteStore(os.path.join(tempfile.mkdtemp(), "m.db")) as s:
...     s.append_turn("alice", "user", "hi", 0.0).seq
0
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from opticmem.errors import (
    ConfigurationError,
    ConfigurationTypeError,
    CorruptRecordError,
    PageConflictError,
    StoreError,
    StoreUnavailableError,
)
from opticmem.forks import renew_in_forked_child
from opticmem.records import PageRecord, Turn
from opticmem.store import (
    Store,
    new_epoch,
    same_page,
    sealed_in_another_life,
    sealed_over_missing_turns,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_TABLES = ("blobs", "pages", "sessions", "turns")
"""The tables every opticmem store has (a file with a version but not these is another
program's)."""

_PUT_BLOB = "INSERT OR REPLACE INTO blobs(session, key, data) VALUES (?, ?, ?)"

EPOCH_KEY = "opticmem/epoch"
"""The blob row that holds a session's :meth:`~opticmem.store.Store.session_epoch`.

A row of ``blobs`` rather than a column of ``sessions``: files of schema version 1 need
no migration, and ``delete_session`` (of any version) deletes it with the session. The
memory's own blob keys (``png/``, ``vt/``, ``rec/``, ``state/``) never take this name."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS turns (
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    ts REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (session, seq)
);
CREATE TABLE IF NOT EXISTS pages (
    session TEXT NOT NULL,
    page_no INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (session, page_no)
);
CREATE TABLE IF NOT EXISTS blobs (
    session TEXT NOT NULL,
    key TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (session, key)
);
"""

MEMORY_PATH_REFUSED = (
    "SQLiteStore cannot use ':memory:': each thread opens its own connection, and each "
    "connection would get its own empty database (turns added from one thread, or by an "
    "async twin, would be invisible to the others); use InMemoryStore (memory://) for a "
    "store that lives in this process"
)

WAL_SIZE_LIMIT = 8 * 1024 * 1024
"""Bytes the write-ahead log is truncated to after a checkpoint (SQLite's
``journal_size_limit``): it grows while a reader holds an old snapshot, and without a
limit kept that size until the last connection closed."""

_INT64 = (-(2**63), 2**63 - 1)

_UNDECODABLE = "Could not decode to UTF-8"
"""How :mod:`sqlite3` says a TEXT value it read is not UTF-8: the row is damaged (written
by another tool), not the file unreachable."""


def _bounds(start: int, stop: int) -> tuple[int, int]:
    """A seq range clamped to SQLite's 64-bit integers (a caller may ask for "up to
    2**70"; sqlite3 would raise OverflowError binding it)."""
    lo, hi = _INT64
    return min(max(int(start), lo), hi), min(max(int(stop), lo), hi)


class _ThreadConnection:
    """A thread's connection, kept in the store's thread-local slot.

    CPython drops a thread's thread-local values when the thread ends, and with them this
    holder, whose finalizer then closes the connection: a store used from a thread per
    request would otherwise keep a connection (and its file descriptors) open for every
    thread that ever used it, until the process ran out of them.
    """

    __slots__ = ("__weakref__", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()


_INHERITED: list[sqlite3.Connection] = []
"""Connections a forked child let go of unclosed that its parent opened with a call still
using them at the fork (past :data:`_ForkGate.WAIT_S`): closing one would roll back, in
the wal-index the processes share, a transaction the parent is still writing; kept, so
that freeing them does not close them either."""


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error as exc:  # pragma: no cover - closing is best effort
        log.debug("closing a SQLite connection failed: %s", exc)


class _ForkGate:
    """Keeps ``fork`` from splitting a SQLite call: a fork waits for the calls in progress
    in this process (any store's), and calls begun meanwhile wait for the fork.

    SQLite keeps its file locks' bookkeeping per process, keyed by the file, and a forked
    child inherits a copy of the parent's. A connection the child then opens shares that
    copy: a child forked while a thread of the parent was writing saw the write lock as
    held by itself for good ("database is locked" on its every write), and one forked at
    all never took the lock that tells SQLite another process has the file open — so the
    parent closing its store (or exiting) checkpointed and deleted the WAL under the
    child, whose later turns were lost. With no call in progress at the fork, every
    connection the child inherits is idle, and the child closes them all
    (:meth:`_Connections.after_fork_in_child`): its own then start from fresh bookkeeping.
    """

    WAIT_S = 120.0
    """How long a fork waits for the calls in progress (each ends within its store's busy
    timeout); past it the fork goes on, with a warning."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(before=self._before, after_in_parent=self._after_in_parent,
                            after_in_child=self._renew)

    def _renew(self) -> None:
        # Reentrant: a connection's finalizer (a close, gated too) may run in a garbage
        # collection on a thread already in a call, or on the forking thread in _before.
        self._cond = threading.Condition(threading.RLock())
        self._calls = 0
        self._forker: int | None = None
        """The thread forking now (``None``: none)."""
        self._depth = threading.local()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Hold off a fork for the block: a store call, or closing a connection (a thread's
        connection is closed by its finalizer as the thread ends: a fork beside that close
        left the child a lock inside SQLite held for good, and the child hung). A call
        nested in one this thread is making, or made by the forking thread, waits for
        nothing."""
        depth = getattr(self._depth, "n", 0)
        if depth or self._forker == threading.get_ident():
            self._depth.n = depth + 1
            try:
                yield
            finally:
                self._depth.n = depth
            return
        cond = self._cond
        with cond:
            while self._forker is not None:
                cond.wait()
            self._calls += 1
        self._depth.n = 1
        try:
            yield
        finally:
            self._depth.n = 0
            with cond:
                self._calls -= 1
                if not self._calls:
                    cond.notify_all()

    def _before(self) -> None:
        with self._cond:
            self._forker = threading.get_ident()
            if not self._cond.wait_for(lambda: not self._calls, self.WAIT_S):
                log.warning("forking while %d SQLite store calls are still in progress: "
                            "the child may find the store locked", self._calls)

    def _after_in_parent(self) -> None:
        with self._cond:
            self._forker = None
            self._cond.notify_all()


_FORKS = _ForkGate()


class _Connections:
    """The connections a store opened (``open``), those a call is using now (``busy``, one
    entry per call) and the lock guarding both; shared with the threads' finalizers.

    Renewed in a forked child: a thread of the parent that held the lock at the fork (any
    store call takes it, twice) does not live on there to release it, and the child's
    first call waited for good.
    """

    def __init__(self) -> None:
        self.open: list[sqlite3.Connection] = []
        self.busy: list[sqlite3.Connection] = []
        self.lock = threading.Lock()
        renew_in_forked_child(self)

    def after_fork_in_child(self) -> None:
        """Close the parent's connections (idle: :class:`_ForkGate`), so that the child's
        own share no lock bookkeeping with them; any a call was still using at the fork
        are let go of unclosed, as :data:`_INHERITED` says."""
        self.lock = threading.Lock()
        for conn in self.open:
            if conn in self.busy:
                _INHERITED.append(conn)
            else:
                _close_quietly(conn)
        self.open.clear()
        self.busy.clear()


def _release(conn: sqlite3.Connection, pid: int, conns: _Connections) -> None:
    """Close ``conn`` (opened by process ``pid``) when its thread has ended, unless
    :meth:`SQLiteStore.close` has."""
    with conns.lock:
        if conn not in conns.open:
            return
        conns.open.remove(conn)
    if pid != os.getpid():
        _INHERITED.append(conn)
        return
    with _FORKS.call():  # a thread ending as another forks
        _close_quietly(conn)


class SQLiteStore(Store):
    """A :class:`~opticmem.store.Store` in the SQLite file ``path`` (created if absent)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        timeout: float = 30.0,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigurationError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ConfigurationTypeError(
                f"timeout must be seconds to wait for a lock (a number ≥ 0), not "
                f"{type(timeout).__name__} {timeout!r}")
        if not 0 <= timeout < math.inf:  # NaN too
            # inf and NaN failed with a bare OverflowError or ValueError once the file was
            # made; a negative one made every write under contention fail at once, locked.
            raise ConfigurationError(
                f"timeout must be a finite number of seconds ≥ 0, got {timeout!r}")
        if os.fspath(path) == ":memory:":
            raise ConfigurationError(MEMORY_PATH_REFUSED)
        # Absolute now: each thread opens its own connection later, and a relative path
        # would then name a file in whatever the working directory is by then.
        self.path = Path(os.path.abspath(path))
        self._synchronous = synchronous
        self._timeout = timeout
        self._local = threading.local()
        self._conns = _Connections()
        self._closed = False
        self._file_id: tuple[int, int] | None = None
        with _FORKS.call():
            self._conn()  # open now: a bad path fails here, not on first use
            self._file_id = self._identity()

    # ------------------------------------------------------------------ connections
    def _closed_error(self) -> StoreError:
        return StoreError(f"SQLite store {self.path} is closed")

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise self._closed_error()
        slot: _ThreadConnection | None = getattr(self._local, "slot", None)
        if slot is not None and slot.pid == os.getpid():
            return slot.conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._prepare(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailableError(
                f"cannot open SQLite store {self.path}: {exc}{self._open_hint()}"
            ) from exc
        slot = _ThreadConnection(conn)
        with self._conns.lock:
            closed = self._closed
            if not closed:
                self._conns.open.append(conn)
        if closed:  # by another thread while this one opened it
            conn.close()
            raise self._closed_error()
        release = weakref.finalize(slot, _release, conn, slot.pid, self._conns)
        release.atexit = False  # at exit a daemon thread may still be using it
        self._local.slot = slot
        return conn

    def _identity(self) -> tuple[int, int] | None:
        """The device and inode of the file at :attr:`path` now; ``None`` if none is there."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st.st_dev, st.st_ino

    def _check_in_place(self) -> None:
        """Raise :class:`StoreUnavailableError` if the file at :attr:`path` is no longer the
        one the store opened (deleted, moved or replaced).

        SQLite does not notice: the open connections went on with the old file, so turns
        acknowledged after a delete were lost with it, and a thread's new connection made
        a new, empty file beside the old one's WAL (which then held both files' pages)."""
        if self._file_id is None:  # still opening: the first connection sets it
            return
        try:
            now = self._identity()
        except OSError:  # a directory made unsearchable: SQLite's own calls will say
            return
        if now != self._file_id:
            raise StoreUnavailableError(
                f"SQLite store {self.path} was deleted, moved or replaced since it was "
                f"opened: its connections would go on with the old file and what they "
                f"wrote would be lost with it; open the store again")

    def _open_hint(self) -> str:
        """Why the file did not open, where that is plain to see: SQLite says only "unable
        to open database file" for a directory and for a file in a missing directory (as
        a ``~`` that nothing expanded makes)."""
        if self.path.is_dir():
            return "; that is a directory: name a file in it"
        if self.path.parent.is_dir():
            return ""
        hint = f"; the directory {self.path.parent} does not exist"
        if any(part.startswith("~") for part in self.path.parts):
            hint += " ('~' is not expanded: give the full path)"
        return hint

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Set a new connection up, making the schema if the file has none; raises
        :class:`StoreError` for a file that is another program's database or holds
        another schema version."""
        conn.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        # The version and the tables are read in one transaction: read apart, another
        # process creating the schema in between made a new store look like another
        # program's database (no version yet, then tables).
        conn.execute("BEGIN")
        try:
            version = self._check_file(conn)  # before WAL, which would change the file for good
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self._use_wal(conn)
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        # A checkpoint resets the WAL but never shrinks it: one long reader's worth of
        # writes (50 MB in a test) stayed on disk as long as any connection was open.
        conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        if version == 0:
            with self._tx(conn):  # another process may be creating it too: re-check
                if self._check_file(conn) == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL, waiting up to ``timeout`` for other connections.

        Switching needs the file to itself, and SQLite reports "database is locked" at once,
        without waiting out the busy timeout, while another connection reads it: processes
        that opened one new file together failed to open it.
        """
        deadline = time.monotonic() + self._timeout
        delay = 0.001
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if str(exc) != "database is locked" or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _check_file(self, conn: sqlite3.Connection) -> int:
        """The file's schema version: 0 for a file with no tables (ours to make), else
        :data:`SCHEMA_VERSION`.

        Raises :class:`StoreError` for another program's database: tables but no schema
        version, or a version (many programs number theirs in ``user_version``) but not
        our tables. Stamped or taken as ours, it would have our tables added beside its
        own (or its own ``turns`` taken for ours) and every write fail; its journal mode
        would change too. Raises it as well for an opticmem store of another version.
        """
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        foreign = bool(tables) if version == 0 else not set(_TABLES) <= set(tables)
        if foreign:
            shown = ", ".join(tables[:4]) + (", …" if len(tables) > 4 else "")
            why = (f"it holds other tables ({shown}) and no opticmem schema version"
                   if version == 0 else
                   f"it has user_version {version} but not opticmem's tables "
                   f"({', '.join(_TABLES)}; it holds {shown or 'none'})")
            raise StoreError(f"{self.path} is not an opticmem store: {why}; give opticmem "
                             "a file of its own")
        if version not in (0, SCHEMA_VERSION):
            raise StoreError(
                f"{self.path} has opticmem schema version {version}; this opticmem "
                f"reads version {SCHEMA_VERSION}"
            )
        return version

    @staticmethod
    @contextmanager
    def _tx(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with the write lock up front (no upgrade deadlocks).

        On some errors (a full disk, an I/O error) SQLite has rolled the transaction back
        itself: rolling back again would raise "no transaction is active" in place of the
        error that says what went wrong.

        ``BEGIN`` and ``COMMIT`` are inside the ``try``: an exception a signal handler
        raises (a job's timeout, a caught Ctrl-C) comes out when ``BEGIN`` returns, often
        after a wait for the lock, and outside it left the transaction open: the thread's
        every later write failed and every other connection's waited out its timeout.
        """
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, held open for one call: :meth:`close` from another
        thread leaves it to be closed here when the call ends (``sqlite3`` crashes the
        process, a segmentation fault, when a connection is closed while another thread
        runs a statement on it). No fork splits it (:class:`_ForkGate`)."""
        with _FORKS.call():
            yield from self._held()

    def _held(self) -> Iterator[sqlite3.Connection]:
        """:meth:`_using`'s body, run inside the fork gate."""
        if self._closed:
            raise self._closed_error()
        self._check_in_place()  # before _conn(), which would make a new file
        conn = self._conn()
        conns = self._conns
        with conns.lock:
            if self._closed:  # since _conn(): the connection may be closed already
                raise self._closed_error()
            conns.busy.append(conn)
        try:
            yield conn
        finally:
            with conns.lock:
                conns.busy.remove(conn)
                last = self._closed and conn not in conns.busy
            if last:
                _close_quietly(conn)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite's errors come out as typed errors naming the file
        (as :meth:`_conn`'s: ``DatabaseError`` too, a file damaged since it was opened)."""
        try:
            with self._using() as conn:
                with self._tx(conn):
                    yield conn
                # Moved away while this wrote: say so rather than report it stored.
                self._check_in_place()
        except sqlite3.DatabaseError as exc:
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from exc

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        try:
            with self._using() as conn:
                return conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            if _UNDECODABLE in str(exc):  # a row's text, not the file: retrying won't help
                raise CorruptRecordError(f"SQLite store {self.path}: {exc}") from exc
            raise StoreUnavailableError(f"SQLite store {self.path}: {exc}") from exc

    def close(self) -> None:
        """Close the store: later calls raise :class:`StoreError`. A call another thread
        is making finishes first (its write is kept), and its connection closes after it."""
        with self._conns.lock:
            conns = [c for c in self._conns.open if c not in self._conns.busy]
            self._conns.open.clear()  # in place: the threads' finalizers hold this list
            self._closed = True
        with _FORKS.call():
            for c in conns:
                _close_quietly(c)

    # ------------------------------------------------------------------ turn log
    @staticmethod
    def _next_seq(conn: sqlite3.Connection, session: str, n: int) -> int:
        row = conn.execute(
            "INSERT INTO sessions(session, next_seq) VALUES (?, ?) "
            "ON CONFLICT(session) DO UPDATE SET next_seq = next_seq + excluded.next_seq "
            "RETURNING next_seq",
            (session, n),
        ).fetchone()
        return int(row[0]) - n

    def append_turn(
        self, session: str, role: str, text: str, ts: float, meta: Mapping[str, Any] | None = None
    ) -> Turn:
        return self.append_turns(session, [(role, text, ts, meta)])[0]

    def append_turns(
        self, session: str, items: Sequence[tuple[str, str, float, Mapping[str, Any] | None]]
    ) -> list[Turn]:
        if not items:
            return []
        with self._write() as conn:
            first = self._next_seq(conn, session, len(items))
            turns = [
                Turn(session, first + i, r, t, float(ts), dict(m or {}))
                for i, (r, t, ts, m) in enumerate(items)
            ]
            conn.executemany(
                "INSERT INTO turns(session, seq, role, text, ts, meta) VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (session, t.seq, t.role, t.text, t.ts,
                     json.dumps(dict(t.meta), ensure_ascii=False) if t.meta else "{}")
                    for t in turns
                ],
            )
        return turns

    def turn_count(self, session: str) -> int:
        rows = self._read("SELECT next_seq FROM sessions WHERE session = ?", (session,))
        if rows and type(rows[0][0]) is not int:
            raise CorruptRecordError(f"SQLite store {self.path}: session {session!r}: its "
                                     f"turn count {rows[0][0]!r} is no whole number")
        return rows[0][0] if rows else 0  # an int: checked just above

    def get_turns(self, session: str, start: int, stop: int) -> list[Turn]:
        rows = self._read(
            "SELECT seq, role, text, ts, meta FROM turns "
            "WHERE session = ? AND seq >= ? AND seq < ? ORDER BY seq",
            (session, *_bounds(start, stop)),
        )
        out = []
        for seq, role, text, ts, meta in rows:
            # SQLite keeps whatever type a row was given (another tool's BLOB text, a
            # 'NaN' time): str() and float() made b'hi' the text "b'hi'" and a list the meta.
            if type(role) is not str or type(text) is not str:
                bad = role if type(role) is not str else text
                raise CorruptRecordError(
                    f"SQLite store {self.path}: session {session!r}: turn {seq}: its role "
                    f"or text is a {type(bad).__name__} value, not text")
            if type(ts) not in (float, int) or not math.isfinite(ts):
                raise CorruptRecordError(
                    f"SQLite store {self.path}: session {session!r}: turn {seq}: its time "
                    f"{ts!r} is not a finite number")
            try:
                m = json.loads(meta) if meta != "{}" else {}
            except (ValueError, TypeError) as exc:
                raise CorruptRecordError(
                    f"SQLite store {self.path}: session {session!r}: turn {seq} has "
                    f"unreadable meta: {exc}") from exc
            if type(m) is not dict:
                raise CorruptRecordError(
                    f"SQLite store {self.path}: session {session!r}: turn {seq}: its meta "
                    "is no JSON object")
            out.append(Turn(session, int(seq), role, text, float(ts), m))
        return out

    # ------------------------------------------------------------------ page log
    def add_page(self, page: PageRecord) -> bool:
        return self._add_page(page, sealed=False)

    def add_sealed_page(self, page: PageRecord, *, epoch: str | None = None) -> bool:
        """See :meth:`Store.add_sealed_page`: checked in the write transaction."""
        return self._add_page(page, sealed=True, epoch=epoch)

    def _add_page(self, page: PageRecord, *, sealed: bool, epoch: str | None = None) -> bool:
        with self._write() as conn:
            if sealed:
                row = conn.execute("SELECT next_seq FROM sessions WHERE session = ?",
                                   (page.session,)).fetchone()
                held = int(row[0]) if row else 0
                if held <= page.last_seq:
                    raise PageConflictError(sealed_over_missing_turns(page, held))
                if epoch is not None and (not epoch or self._epoch_in(conn, page.session)
                                          != epoch):
                    raise PageConflictError(sealed_in_another_life(page))
            n = conn.execute(
                "SELECT COALESCE(MAX(page_no) + 1, 0) FROM pages WHERE session = ?",
                (page.session,),
            ).fetchone()[0]
            if page.page_no < n:
                return False
            if page.page_no > n:
                raise PageConflictError(
                    f"session {page.session!r}: page {page.page_no} written but the log "
                    f"holds {n} pages (pages must be added in order)"
                )
            conn.execute(
                "INSERT INTO pages(session, page_no, record) VALUES (?, ?, ?)",
                (page.session, page.page_no, page.to_json()),
            )
        return True

    @staticmethod
    def _epoch_in(conn: sqlite3.Connection, session: str) -> str | None:
        """The session's stored epoch as ``conn`` sees it; ``None`` if it has none yet."""
        row = conn.execute("SELECT data FROM blobs WHERE session = ? AND key = ?",
                           (session, EPOCH_KEY)).fetchone()
        return None if row is None else bytes(row[0]).decode("latin-1")

    def session_epoch(self, session: str) -> str | None:
        """See :meth:`Store.session_epoch`: kept in the blob row :data:`EPOCH_KEY`, written
        (one write transaction, so processes asking at once agree) the first time a life
        with a turn log is asked for one: also a session stored before epochs existed."""
        rows = self._read(
            "SELECT b.data FROM sessions s LEFT JOIN blobs b "
            "ON b.session = s.session AND b.key = ? WHERE s.session = ?", (EPOCH_KEY, session))
        if not rows:
            return ""
        if rows[0][0] is not None:
            return bytes(rows[0][0]).decode("latin-1")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM sessions WHERE session = ?",
                            (session,)).fetchone() is None:
                return ""  # deleted since the read
            got = self._epoch_in(conn, session)
            if got is None:
                got = new_epoch()
                conn.execute(_PUT_BLOB, (session, EPOCH_KEY, got.encode("latin-1")))
        return got

    def page_count(self, session: str) -> int:
        rows = self._read(
            "SELECT COALESCE(MAX(page_no) + 1, 0) FROM pages WHERE session = ?", (session,)
        )
        return int(rows[0][0])

    def get_pages(self, session: str, start: int, stop: int) -> list[PageRecord]:
        rows = self._read(
            "SELECT record FROM pages WHERE session = ? AND page_no >= ? AND page_no < ? "
            "ORDER BY page_no",
            (session, *_bounds(start, stop)),
        )
        return [PageRecord.from_json(session, r[0]) for r in rows]

    # ------------------------------------------------------------------ blob cache
    def put_blob(self, session: str, key: str, data: bytes) -> None:
        with self._write() as conn:
            conn.execute(_PUT_BLOB, (session, key, sqlite3.Binary(bytes(data))))

    def put_page_blob(self, page: PageRecord, key: str, data: bytes) -> bool:
        """See :meth:`Store.put_page_blob`: the page is compared and the blob written in
        one write transaction, so no delete or new session slips in between."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT record FROM pages WHERE session = ? AND page_no = ?",
                (page.session, page.page_no),
            ).fetchone()
            if row is None or not same_page(PageRecord.from_json(page.session, row[0]), page):
                return False
            conn.execute(_PUT_BLOB, (page.session, key, sqlite3.Binary(bytes(data))))
        return True

    def get_blob(self, session: str, key: str) -> bytes | None:
        rows = self._read("SELECT data FROM blobs WHERE session = ? AND key = ?", (session, key))
        return bytes(rows[0][0]) if rows else None

    def get_blobs(self, session: str, keys: Sequence[str]) -> list[bytes | None]:
        found: dict[str, bytes] = {}
        keys = list(keys)
        for lo in range(0, len(keys), 500):
            chunk = keys[lo : lo + 500]
            marks = ",".join("?" * len(chunk))
            for k, d in self._read(
                f"SELECT key, data FROM blobs WHERE session = ? AND key IN ({marks})",
                (session, *chunk),
            ):
                found[str(k)] = bytes(d)
        return [found.get(k) for k in keys]

    # ------------------------------------------------------------------ session state
    def swap_state(
        self, session: str, key: str, expected: bytes | None, data: bytes, *,
        page: PageRecord | None = None,
    ) -> bool:
        """See :meth:`Store.swap_state`: the page and the value are compared and the value
        written in one write transaction, so no other process's write or delete slips in
        between. Kept where :meth:`Store.put_state` keeps it, as the blob ``state/{key}``."""
        blob_key = f"state/{key}"
        with self._write() as conn:
            if page is not None:
                row = conn.execute(
                    "SELECT record FROM pages WHERE session = ? AND page_no = ?",
                    (session, page.page_no),
                ).fetchone()
                if row is None or not same_page(PageRecord.from_json(session, row[0]), page):
                    return False
            row = conn.execute(
                "SELECT data FROM blobs WHERE session = ? AND key = ?", (session, blob_key)
            ).fetchone()
            if (None if row is None else bytes(row[0])) != expected:
                return False
            conn.execute(_PUT_BLOB, (session, blob_key, sqlite3.Binary(bytes(data))))
        return True

    # ------------------------------------------------------------------ sessions
    def sessions(self) -> Iterator[str]:
        rows = self._read("SELECT session FROM sessions WHERE next_seq > 0")
        return iter([str(r[0]) for r in rows])

    def delete_session(self, session: str) -> None:
        with self._write() as conn:
            for table in ("turns", "pages", "blobs", "sessions"):
                conn.execute(f"DELETE FROM {table} WHERE session = ?", (session,))

    def forget_turns(self, session: str, before_seq: int) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM turns WHERE session = ? AND seq < ?",
                (session, _bounds(0, before_seq)[1]),
            )
            return int(cur.rowcount)
