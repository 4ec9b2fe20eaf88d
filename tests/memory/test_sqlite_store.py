"""What only the SQLite file store promises: persistence, processes, clear failures."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from opticmem.errors import (
    ConfigurationError,
    CorruptRecordError,
    StoreError,
    StoreUnavailableError,
    StoreURLError,
)
from opticmem.sqlite_store import SQLiteStore
from opticmem.stores import open_store
from tests.memory.forking import fork_and_wait


def _writer(path: str, w: int, n: int) -> None:
    with SQLiteStore(path) as s:
        for i in range(n):
            s.append_turn("shared", "user", f"p{w}-{i}", float(i))


def test_processes_append_to_one_session(tmp_path: Path) -> None:
    db = str(tmp_path / "m.db")
    SQLiteStore(db).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 20)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with SQLiteStore(db) as s:
        turns = s.get_turns("shared", 0, 100)
        assert [t.seq for t in turns] == list(range(60))
        assert {t.text for t in turns} == {f"p{w}-{i}" for w in range(3) for i in range(20)}


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    with SQLiteStore(db, synchronous="NORMAL") as s:
        s.append_turn("a b:c", "user", "kept \x00 exactly 😀", 5.5, {"k": "v"})
        s.put_blob("a b:c", "png", b"\x89PNG")
    with SQLiteStore(db) as s:
        [t] = s.get_turns("a b:c", 0, 1)
        assert (t.text, t.ts, t.meta) == ("kept \x00 exactly 😀", 5.5, {"k": "v"})
        assert s.get_blob("a b:c", "png") == b"\x89PNG"
        assert s.append_turn("a b:c", "user", "next", 6.0).seq == 1


def test_page_rows_written_before_cues_still_load(tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    old_row = ('{"page_no":0,"first_seq":0,"first_line":0,"last_seq":1,"end_line":2,'
               '"transcript":"User: hi","text_tokens":3,"first_ts":1.0,"last_ts":2.0,'
               '"render_key":"k","facts":["TITAN-7"],"missing":[],"text_counter":"approx"}')
    SQLiteStore(db).close()
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # as an older version wrote it
        conn.execute("INSERT INTO pages(session, page_no, record) VALUES ('a', 0, ?)",
                     (old_row,))
    with SQLiteStore(db) as s:
        [p] = s.get_pages("a", 0, 1)
        assert (p.facts, p.cues, p.text_counter) == (("TITAN-7",), (), "approx")


def test_unopenable_path_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        SQLiteStore(tmp_path / "no" / "such" / "dir" / "m.db")


def test_not_a_database_is_a_typed_error(tmp_path: Path) -> None:
    bad = tmp_path / "junk.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreUnavailableError):
        SQLiteStore(bad)


def test_another_programs_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    # It used to be stamped as ours (user_version 1, WAL, our tables beside its own) and
    # every write then failed with "table turns has no column named session".
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE turns (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute("INSERT INTO turns (body) VALUES ('theirs')")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"not an opticmem store: it holds other tables \(turns\)"):
        SQLiteStore(path)
    assert path.read_bytes() == before
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("SELECT body FROM turns").fetchall() == [("theirs",)]
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # an empty database file is ours to use
    with SQLiteStore(empty) as store:
        store.append_turn("s", "user", "hi", 1.0)
        assert store.turn_count("s") == 1


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "m.db")
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.turn_count("a")


def test_uses_wal(tmp_path: Path) -> None:
    with SQLiteStore(tmp_path / "m.db") as s:
        assert s._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_write_ahead_log_shrinks_once_a_long_reader_is_done(tmp_path: Path) -> None:
    """A reader holding a snapshot makes the WAL grow; checkpoints afterwards reset it but
    never shrank it, so it kept that size on disk while any connection was open."""
    from opticmem.sqlite_store import WAL_SIZE_LIMIT

    path = tmp_path / "m.db"
    with SQLiteStore(path) as s:
        s.append_turn("s", "user", "x", 0.0)
        reader = sqlite3.connect(path)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM turns").fetchone()
        for i in range(3 * WAL_SIZE_LIMIT >> 20):  # 1 MiB blobs the checkpoints cannot copy
            s.put_blob("s", f"b{i}", os.urandom(1 << 20))
        wal = Path(f"{path}-wal")
        assert wal.stat().st_size > 2 * WAL_SIZE_LIMIT
        reader.rollback()
        reader.close()
        for i in range(3):
            s.put_blob("s", f"c{i}", b"x")
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
        assert s.get_blob("s", "b0") is not None and s.turn_count("s") == 1


def test_memory_path_is_refused_not_split_per_thread() -> None:
    # ':memory:' would give each thread's connection its own empty database: a turn added
    # through an async twin (a worker thread) would vanish for every other thread.
    with pytest.raises(ConfigurationError, match="InMemoryStore"):
        SQLiteStore(":memory:")
    with pytest.raises(ConfigurationError, match="synchronous"):
        SQLiteStore(":memory:", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(StoreURLError, match="memory://"):
        open_store("sqlite:///:memory:")


def _open_handles(path: Path) -> int:
    """File descriptors of this process open on ``path`` (Linux: /proc/self/fd)."""
    fds = Path("/proc/self/fd")
    return sum(1 for fd in fds.iterdir()
               if os.path.realpath(fd) == os.path.realpath(path))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_a_thread_that_ends_closes_its_connection(tmp_path: Path) -> None:
    # A thread per request (a threading HTTP server) opened a connection per thread that
    # stayed open until close(): file descriptors ran out after a few hundred requests.
    db = tmp_path / "m.db"
    with SQLiteStore(db) as s:
        for i in range(40):
            t = threading.Thread(target=s.append_turn, args=("s", "user", f"t{i}", 0.0))
            t.start()
            t.join()
        gc.collect()
        assert _open_handles(db) <= 2  # this thread's, and one SQLite keeps to reuse; not 41
        assert s.turn_count("s") == 40


def test_a_failed_write_reports_its_cause_not_the_rollback(tmp_path: Path) -> None:
    # SQLite rolls a transaction back itself on some errors (a full disk); rolling back
    # again raised "cannot rollback - no transaction is active", which hid the cause.
    with SQLiteStore(tmp_path / "m.db") as s:
        s._conn().execute("PRAGMA max_page_count=8")  # a disk that is full at 8 pages
        with pytest.raises(StoreUnavailableError, match="full"):
            s.append_turns("s", [("user", "x" * 100_000, 0.0, None)] * 4)
        assert s.turn_count("s") == 0  # nothing half-written
        assert s.append_turn("s", "user", "small", 0.0).seq == 0  # the store still works


def test_a_database_corrupted_after_opening_is_a_typed_error(tmp_path: Path) -> None:
    # A file damaged under an open store (a disk fault, a copy taken mid-write) raised
    # sqlite3.DatabaseError ("database disk image is malformed") from reads and writes.
    db = tmp_path / "m.db"
    with SQLiteStore(db) as s:
        s.append_turns("s", [("user", "x" * 500, 0.0, None)] * 200)
    data = bytearray(db.read_bytes())
    for at in range(8192, len(data), 4096):  # every page but the schema's
        data[at + 100 : at + 400] = bytes(range(256)) + bytes(44)
    db.write_bytes(bytes(data))
    with SQLiteStore(db) as s:
        for call in (lambda: s.get_turns("s", 0, 1000),
                     lambda: s.append_turn("s", "user", "more", 0.0),
                     lambda: s.delete_session("s")):
            with pytest.raises(StoreError, match=str(db)):
                call()


def test_opening_waits_for_a_connection_that_holds_the_write_lock(tmp_path: Path) -> None:
    # Switching a new file to WAL failed at once with "database is locked", without waiting
    # out the timeout, while another connection was writing it: worker processes started
    # together on one new file (one of them creating the schema) failed to open it.
    db = tmp_path / "m.db"
    sqlite3.connect(db).close()
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    done = threading.Timer(0.3, other.execute, ("COMMIT",))
    done.start()
    try:
        with SQLiteStore(db, timeout=10) as s:
            assert s.append_turn("s", "user", "hi", 0.0).seq == 0
    finally:
        done.join()
        other.close()


def test_threads_opening_one_new_file_together_all_open_it(tmp_path: Path) -> None:
    # The schema version and the tables were read apart: a thread (or process) that read
    # "no version" just before another created the schema then saw tables, and refused
    # the new store as "not an opticmem store".
    errors: list[Exception] = []
    for trial in range(10):
        db = tmp_path / f"m{trial}.db"
        start = threading.Barrier(6)

        def open_it(db: Path = db, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                SQLiteStore(db).close()
            except StoreError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []


@pytest.mark.parametrize("version", [1, 7])
def test_another_programs_versioned_database_is_refused_and_left_as_it_was(
    tmp_path: Path, version: int
) -> None:
    # A database whose program numbers its schema in user_version (as many do) was taken
    # for ours when the number was 1: switched to WAL, then every call failed with "no
    # such table: sessions"; with another number it was switched to WAL before refusal.
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.execute(f"PRAGMA user_version={version}")
        db.commit()
    before = path.read_bytes()
    with pytest.raises(StoreError, match=rf"not an opticmem store: it has user_version "
                                         rf"{version} but not opticmem's tables"):
        SQLiteStore(path)
    assert path.read_bytes() == before
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    newer = tmp_path / "newer.db"  # an opticmem store of another version: said so
    SQLiteStore(newer).close()
    with contextlib.closing(sqlite3.connect(newer)) as db:
        db.execute("PRAGMA user_version=2")
    with pytest.raises(StoreError, match="schema version 2; this opticmem reads version 1"):
        SQLiteStore(newer)


def _close_under_calls(path: str) -> None:
    """Close stores while threads call them; exit 3 on an error that is not a StoreError
    or on a reported write the file does not hold."""
    for trial in range(10):
        db = f"{path}.{trial}"
        store = SQLiteStore(db)
        stored = [0, 0]
        odd: list[BaseException] = []

        def call(k: int, store: SQLiteStore = store, stored: list[int] = stored,
                 odd: list[BaseException] = odd) -> None:
            while True:
                try:
                    store.append_turns(f"s{k}", [("user", "x" * 3000, 0.0, None)] * 20)
                    stored[k] += 20
                    store.get_turns(f"s{k}", 0, 10**9)
                except StoreError:
                    return
                except BaseException as exc:  # what the test looks for
                    odd.append(exc)
                    return

        threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        threading.Event().wait(0.05 + 0.03 * trial)
        store.close()
        for t in threads:
            t.join()
        with SQLiteStore(db) as again:
            if odd or [again.turn_count(f"s{k}") for k in range(2)] != stored:
                raise SystemExit(3)


def test_closing_while_other_threads_make_calls_waits_for_them(tmp_path: Path) -> None:
    # close() closed every thread's connection under the calls running on it: sqlite3
    # then crashed the process (a segmentation fault), so the test runs in a child.
    child = mp.get_context("spawn").Process(
        target=_close_under_calls, args=(str(tmp_path / "m.db"),))
    child.start()
    child.join(120)
    assert child.exitcode == 0


def test_a_directory_or_a_missing_directory_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each said only "unable to open database file"; sqlite:///~/mem.db (no shell expands
    # a '~' inside a URL) left the user to guess that the '~' was taken literally.
    with pytest.raises(StoreUnavailableError, match="that is a directory: name a file in it"):
        SQLiteStore(tmp_path)
    with pytest.raises(StoreUnavailableError, match=r"the directory \S+ does not exist$"):
        SQLiteStore(tmp_path / "no" / "m.db")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StoreUnavailableError, match=r"directory \S*/~/bot does not exist \('~' is "
                                                    "not expanded: give the full path"):
        open_store("sqlite:///~/bot/mem.db")


def test_a_relative_path_names_one_file_whatever_the_directory_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each thread opens its connection on first use, with the path as given: after the
    # process changed directory, a new thread (a request) opened a new, empty store there,
    # and the session's turns were split between two files.
    monkeypatch.chdir(tmp_path)
    with open_store("sqlite:///mem.db") as s:
        s.append_turn("a", "user", "one", 0.0)
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        seen: list[int] = []
        t = threading.Thread(target=lambda: seen.append(s.append_turn("a", "user", "two", 0.0).seq))
        t.start()
        t.join()
        assert seen == [1]
        assert s.path == tmp_path / "mem.db"
    assert not (tmp_path / "elsewhere" / "mem.db").exists()


class _JobTimeout(Exception):
    pass


def _raise_job_timeout(*_: object) -> None:
    raise _JobTimeout


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_a_signal_raised_while_waiting_for_the_lock_leaves_no_transaction_open(
    tmp_path: Path,
) -> None:
    # A job timeout (SIGALRM) that fired while a write waited for the lock was raised as
    # BEGIN returned, outside the rollback: the transaction stayed open, holding the write
    # lock, so this thread's writes failed ("within a transaction") and everyone else's
    # timed out ("database is locked").
    db = tmp_path / "m.db"
    with SQLiteStore(db) as s, SQLiteStore(db, timeout=2) as elsewhere:
        other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        done = threading.Timer(0.4, other.execute, ("COMMIT",))
        old = signal.signal(signal.SIGALRM, _raise_job_timeout)
        try:
            done.start()
            signal.setitimer(signal.ITIMER_REAL, 0.1)
            with pytest.raises(_JobTimeout):
                s.append_turn("a", "user", "timed out", 0.0)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
            done.join()
            other.close()
        assert elsewhere.append_turn("a", "user", "other worker", 0.0).seq == 0
        assert s.append_turn("a", "user", "next job", 0.0).seq == 1
        assert [t.text for t in s.get_turns("a", 0, 9)] == ["other worker", "next job"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.timeout(120)
def test_a_child_forked_while_a_thread_makes_a_call_can_use_the_store(tmp_path: Path) -> None:
    """Every call takes the store's connection-list lock; a child forked while a thread of
    the parent held it (a request being served) inherited it held, and its first call
    waited for good. Both processes go on writing the one file."""
    store = SQLiteStore(tmp_path / "m.db")
    store.append_turn("s", "user", "before", 0.0)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store._conns.lock:  # what any call holds for a moment
            held.set()
            release.wait(60)

    def in_child() -> int:
        try:
            store.append_turn("s", "user", "child", 1.0)
            store.close()  # closes the child's own connection, not the parent's
            return 0
        except BaseException:
            return 1

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(30)
        code = fork_and_wait(in_child)
    finally:
        release.set()
        holder.join(30)
    assert code == 0, "the child hung" if code is None else f"the child failed ({code})"
    store.append_turn("s", "user", "parent", 2.0)
    assert [t.text for t in store.get_turns("s", 0, 3)] == ["before", "child", "parent"]
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.timeout(120)
def test_a_forked_childs_turns_survive_the_parent_closing_its_store(tmp_path: Path) -> None:
    """A child's connection shared SQLite's lock bookkeeping with the connections it
    inherited, so it never took the lock telling SQLite another process has the file
    open: the parent closing its store (or exiting) then checkpointed and deleted the WAL
    under the child, and every turn the child added after that was lost."""
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    store.append_turn("s", "user", "parent", 0.0)
    go, ready = os.pipe(), os.pipe()

    def in_child() -> int:
        try:
            store.append_turn("s", "user", "child 0", 1.0)
            os.write(ready[1], b"1")
            os.read(go[0], 1)  # the parent has closed its store
            for i in range(1, 20):
                store.append_turn("s", "user", f"child {i}", 1.0)
            return 0  # exits without closing, as a killed worker does
        except BaseException:
            return 1

    pid = os.fork()
    if pid == 0:
        os._exit(in_child())
    try:
        assert os.read(ready[0], 1) == b"1"
        store.close()
        os.write(go[1], b"1")
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with SQLiteStore(path) as again:
        assert [t.text for t in again.get_turns("s", 0, 100)] == (
            ["parent"] + [f"child {i}" for i in range(20)])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.timeout(120)
def test_a_child_forked_while_a_thread_writes_can_write(tmp_path: Path) -> None:
    """A child forked while a thread of the parent was inside a write transaction took
    the write lock for its own, held for good: each of its writes waited out the busy
    timeout and failed ("database is locked"). A fork now waits for the calls in
    progress, and the child writes after the parent's write is committed."""
    from opticmem import sqlite_store

    store = SQLiteStore(tmp_path / "m.db", timeout=3)
    store.append_turn("s", "user", "before", 0.0)
    writing, release, forked = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        with store._write() as conn:  # an append in progress
            conn.execute("INSERT INTO blobs(session, key, data) VALUES ('s', 'k', x'00')")
            writing.set()
            release.wait(60)

    def release_once_forking() -> None:
        # The write ends once a fork waits for it (or, without that wait, has happened).
        gate = getattr(sqlite_store, "_FORKS", None)
        deadline = time.monotonic() + 60
        while not (forked.is_set() or getattr(gate, "_forker", None) is not None):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        release.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert writing.wait(30)
    releaser = threading.Thread(target=release_once_forking)
    releaser.start()

    def in_child() -> int:
        try:
            store.append_turn("s", "user", "child", 1.0)
            return 0
        except StoreError:
            return 1

    try:
        pid = os.fork()
        if pid == 0:
            os._exit(in_child())
        forked.set()
        _, status = os.waitpid(pid, 0)
    finally:
        forked.set()
        releaser.join(60)
        writer.join(60)
    assert os.waitstatus_to_exitcode(status) == 0
    assert [t.text for t in store.get_turns("s", 0, 3)] == ["before", "child"]
    assert store.get_blob("s", "k") == b"\x00"
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork with threads
@pytest.mark.timeout(60)
def test_a_fork_waits_for_a_thread_connection_being_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread's connection is closed by its finalizer as the thread ends, outside any
    store call: a fork beside that close left the child a lock inside SQLite held for
    good, and the child hung (once in a full test run). The close holds the fork off now."""
    from opticmem import sqlite_store

    store = SQLiteStore(tmp_path / "m.db")
    closing, closed = threading.Event(), threading.Event()
    real = sqlite_store._close_quietly

    def slow_close(conn: sqlite3.Connection) -> None:
        closing.set()
        time.sleep(0.3)  # inside SQLite's close, as far as a fork can tell
        real(conn)
        closed.set()

    monkeypatch.setattr(sqlite_store, "_close_quietly", slow_close)
    user = threading.Thread(target=lambda: store.append_turn("s", "user", "x", 0.0))
    user.start()
    user.join()
    gc.collect()  # the ended thread's connection slot is freed: its finalizer closes it
    assert closing.wait(10)
    # the child sees the close finished: the fork waited for it
    assert fork_and_wait(lambda: 0 if closed.is_set() else 1) == 0
    store.close()


def test_a_session_of_a_file_written_before_epochs_gets_one_every_opener_agrees_on(
    tmp_path: Path,
) -> None:
    """A file of schema version 1 written before epochs holds no epoch row: it opens as
    it did, its sessions get an epoch on first ask (kept as a row of ``blobs``, so the
    schema is unchanged), another opener reads the same one, a sealed page is checked
    against it, and ``delete_session`` drops it with the session."""
    from opticmem.sqlite_store import EPOCH_KEY
    from tests.memory.test_store_contract import page

    path = tmp_path / "old.db"
    with SQLiteStore(path) as store:
        store.append_turns("s", [("user", f"t{i}", float(i), None) for i in range(3)])

    def epoch_rows() -> list[tuple[str]]:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            return conn.execute("SELECT session FROM blobs WHERE key = ?",
                                (EPOCH_KEY,)).fetchall()

    assert epoch_rows() == []  # as an earlier version left the file
    with SQLiteStore(path) as store, SQLiteStore(path) as other:
        assert [t.text for t in store.get_turns("s", 0, 3)] == ["t0", "t1", "t2"]
        epoch = store.session_epoch("s")
        assert epoch and other.session_epoch("s") == epoch and epoch_rows() == [("s",)]
        assert other.add_sealed_page(page("s", 0), epoch=epoch)
        store.delete_session("s")
        assert epoch_rows() == [] and other.session_epoch("s") == ""


@pytest.mark.parametrize(("damage", "why"), [
    ("UPDATE turns SET text = X'6869' WHERE seq = 1", "role or text is a bytes value"),
    ("UPDATE turns SET text = CAST(X'ff41' AS TEXT) WHERE seq = 1", "decode to UTF-8"),
    ("UPDATE turns SET ts = 'soon' WHERE seq = 1", "time 'soon' is not a finite number"),
    ("UPDATE turns SET ts = 9e999 WHERE seq = 1", "time inf is not a finite number"),
    ("UPDATE turns SET meta = '[1]' WHERE seq = 1", "meta is no JSON object"),
    ("UPDATE turns SET meta = 'null' WHERE seq = 1", "meta is no JSON object"),
    ("UPDATE sessions SET next_seq = 'x'", "turn count 'x' is no whole number"),
])
def test_a_damaged_turn_row_is_a_corrupt_record_error(tmp_path: Path, damage: str,
                                                      why: str) -> None:
    """SQLite keeps a value of any type in any column, so a row another tool wrote or
    damaged came back as something else: BLOB text as the text ``"b'hi'"``, a list or
    ``None`` as the meta (a crash later, far from the row), an infinite time (refused by
    every append), or a bare ValueError; text that is not UTF-8 was a
    StoreUnavailableError, a ConnectionError that a caller retries for ever."""
    db = tmp_path / "m.db"
    with SQLiteStore(db) as s:
        s.append_turns("s", [("user", f"turn {i}", 0.0, {"i": i}) for i in range(3)])
    with contextlib.closing(sqlite3.connect(db)) as conn:
        conn.execute(damage)
        conn.commit()
    with SQLiteStore(db) as s:
        with pytest.raises(CorruptRecordError, match=why) as err:
            s.turn_count("s")
            s.get_turns("s", 0, 3)
        assert not isinstance(err.value, StoreUnavailableError) and str(db) in str(err.value)


@pytest.mark.parametrize("how", ["deleted", "moved", "replaced"])
def test_a_file_deleted_moved_or_replaced_under_an_open_store_is_a_typed_error(
    tmp_path: Path, how: str
) -> None:
    db = tmp_path / "m.db"
    s = SQLiteStore(db)
    s.append_turn("a", "user", "kept", 0.0)
    if how == "deleted":
        os.remove(db)
    elif how == "moved":
        os.rename(db, tmp_path / "elsewhere.db")
    else:
        SQLiteStore(tmp_path / "new.db").close()
        os.replace(tmp_path / "new.db", db)
    # Its connections would go on with the old file: a turn acknowledged there is lost,
    # and a thread's new connection made a new file beside the old one's WAL.
    with pytest.raises(StoreUnavailableError, match=f"{db}.*(deleted|moved|replaced)"):
        s.append_turn("a", "user", "lost", 1.0)
    got: list[BaseException] = []

    def other_thread() -> None:
        try:
            s.turn_count("a")
        except BaseException as exc:
            got.append(exc)

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(30)
    assert [type(e) for e in got] == [StoreUnavailableError]
    s.close()
    assert not db.exists() or how == "replaced"  # no new file made at the old path


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), -1.0, True, None, "30"])
def test_a_timeout_that_is_no_wait_in_seconds_is_refused_before_the_file_is_made(
    tmp_path: Path, timeout: object
) -> None:
    # inf and NaN failed with a bare OverflowError or ValueError after making the file;
    # -1 opened a store whose every write under contention failed at once, "locked".
    db = tmp_path / "m.db"
    with pytest.raises(ConfigurationError, match="timeout"):
        SQLiteStore(db, timeout=timeout)  # type: ignore[arg-type]
    assert not db.exists()
