"""SQLAlchemy engines for SQLite and Postgres, with Keel's transaction rules.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (a committed transaction survives a killed
process) and a busy timeout. Writes go through :meth:`Database.write`, which takes a
process-wide lock and ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing with
"database is locked". Postgres uses ordinary transactions from a pool.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError

from keel.errors import ConflictError, InvalidInputError, StoreError

metadata = sa.MetaData()

_CHECKPOINT_EVERY_S = 0.25
_BACKSTOP_PAGES = 16_384  # 64 MiB of 4 KiB pages
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_CACHE_KIB = 65_536  # page cache of one connection (PRAGMA cache_size, in KiB)
# SQLite's heap in the whole process (page caches of every connection, statements, schema).
# Page caches fill as the database grows and each pooled connection has its own, so without
# this the ceiling was cache_size x pooled connections (640 MiB at pool_size 10). Past the
# soft limit every cache recycles its own pages instead of growing.
SOFT_HEAP_LIMIT = 2 * _CACHE_KIB * 1024
_log = logging.getLogger("keel.storage")


class _Checkpointer:
    """Moves committed WAL pages into the SQLite database file off the writer's path.

    SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, so a
    busy writer paid for copying and syncing pages in the middle of ingest (~30 % of its time
    at 2 KiB spans). Here a daemon thread with its own connection runs a PASSIVE checkpoint
    (never blocks readers or writers) a few times a second; its I/O runs without the GIL.
    Several processes on one file may each run one: SQLite lets one at a time proceed.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="keel-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        import sqlite3

        conn = None
        try:
            conn = sqlite3.connect(
                self._path, timeout=5, isolation_level=None, check_same_thread=False
            )
            while not self._stop.wait(_CHECKPOINT_EVERY_S):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    _log.debug("background checkpoint failed", exc_info=True)
        except sqlite3.Error:
            _log.warning("background WAL checkpointing is off", exc_info=True)
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _FileLock:
    """A cross-process write queue for one SQLite file (``flock`` on a side file).

    Several ``keel serve --workers`` processes share one database. Left to ``BEGIN IMMEDIATE``
    and the busy timeout, a writer that finds the file locked sleeps 1, 2, 5, 10, 15 ms... and
    polls again, so the lock could sit free while both processes waited. A blocking ``flock``
    wakes the waiter the moment the holder releases.
    Re-entrant per process (the caller holds the process's write RLock); if the side file
    cannot be opened, writers fall back to SQLite's own busy handling.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._fd: int | None = None
        self._depth = 0
        self._broken = False

    def __enter__(self) -> None:
        self.acquire(None)

    def acquire(self, while_waiting: Callable[[], bool] | None) -> None:
        """Take the lock; while another process holds it, call ``while_waiting`` until it
        returns False (then block)."""
        if self._broken:
            return
        import fcntl
        import os

        if self._depth == 0:
            try:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                while while_waiting is not None:
                    try:
                        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if not while_waiting():
                            while_waiting = None
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_EX)  # releases the GIL while it waits
            except OSError:
                _log.warning("write lock file %s unavailable; using SQLite's", self._path)
                self._broken = True
                return
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._broken or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            import os

            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class Database:
    """An engine plus the write discipline of its dialect."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._write_lock = threading.RLock() if self.is_sqlite else None
        self._file_lock: _FileLock | None = None
        if self.is_sqlite:
            self.engine: Engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size,
                max_overflow=20,
                # the most recently used connection first: the ingest writer keeps its warm
                # page cache instead of rotating through (and filling) every pooled one
                pool_use_lifo=True,
            )
            self._install_sqlite_hooks(self.engine)
            path = self.engine.url.database
            on_disk = bool(path) and path != ":memory:" and "mode=memory" not in url
            self._checkpointer = _Checkpointer(path) if on_disk and path else None
            self._file_lock = _FileLock(path + "-keel-write.lock") if on_disk and path else None
        else:
            self.engine = sa.create_engine(
                url, pool_size=pool_size, max_overflow=20, pool_pre_ping=True, pool_recycle=1800
            )

    @staticmethod
    def _install_sqlite_hooks(engine: Engine) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            cur.execute(f"PRAGMA soft_heap_limit={SOFT_HEAP_LIMIT}")
            # Checkpoints run on a background thread (see _Checkpointer), not inside the
            # writer's commit; this large threshold is only the backstop if it falls behind.
            cur.execute(f"PRAGMA wal_autocheckpoint={_BACKSTOP_PAGES}")
            cur.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            if conn.get_execution_options().get("keel_write"):
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN")

    @contextlib.contextmanager
    def write(self, *, while_waiting: Callable[[], bool] | None = None) -> Iterator[Connection]:
        """A write transaction; commits on success, rolls back on error.

        ``while_waiting``: see :meth:`keel.storage.spans.SpanStore.add_spans` (SQLite files
        shared by several processes only)."""
        lock = self._write_lock or contextlib.nullcontext()
        flock = self._file_lock
        with lock, translate_errors():
            if flock is not None:
                flock.acquire(while_waiting)
            try:
                conn = self.engine.connect().execution_options(keel_write=True)
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.close()
            finally:
                if flock is not None:
                    flock.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (a consistent snapshot for its transaction)."""
        with translate_errors(), self.engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        """Close every pooled connection (and stop the SQLite checkpoint thread)."""
        cp = getattr(self, "_checkpointer", None)
        if cp is not None:
            cp.stop()
            self._checkpointer = None
        if self._file_lock is not None:
            self._file_lock.close()
        self.engine.dispose()


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Map database driver errors into Keel's error tree."""
    try:
        yield
    except IntegrityError as e:
        raise ConflictError(f"conflicts with stored data: {str(e.orig).splitlines()[0]}")
    except OverflowError:
        raise InvalidInputError(
            "a number in the request is out of range", hint="integers must fit in 64 bits"
        )
    except DataError as e:
        raise InvalidInputError(
            f"a value in the request is out of range or malformed: {str(e.orig).splitlines()[0]}"
        )
    except OperationalError as e:
        raise StoreError(
            f"the store is unavailable: {str(e.orig).splitlines()[0] if e.orig else e}",
            hint="check that the database is running and reachable, then retry",
        )
    except DBAPIError as e:
        if e.connection_invalidated:
            raise StoreError("lost the connection to the store", hint="retry; check the database")
        raise StoreError(f"store error: {str(e.orig).splitlines()[0] if e.orig else e}")
