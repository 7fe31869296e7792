"""SQLite writers in several processes queue on a side-file ``flock``, not on busy polling."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from keel.errors import StoreError
from keel.storage.sql.engine import Database


def _writer(url: str, tag: int, n: int, hold_s: float) -> None:
    db = Database(url)
    try:
        for i in range(n):
            with db.write() as conn:
                conn.exec_driver_sql("INSERT INTO t (tag, i) VALUES (?, ?)", (tag, i))
                time.sleep(hold_s)  # a long transaction: the other process must wait, not fail
    finally:
        db.dispose()


def _db(tmp_path: Path) -> tuple[str, Database]:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    db = Database(url)
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE t (tag INTEGER, i INTEGER)")
    return url, db


def test_two_processes_queue_and_lose_nothing(tmp_path: Path) -> None:
    url, db = _db(tmp_path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(url, tag, 40, 0.002)) for tag in (1, 2)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with db.read() as conn:
        counts = dict(conn.exec_driver_sql("SELECT tag, count(*) FROM t GROUP BY tag").all())
    assert counts == {1: 40, 2: 40}
    # 80 transactions holding the lock ~2 ms each: a queue, not busy-timeout back-off sleeps
    assert time.monotonic() - t0 < 20
    db.dispose()


def test_lock_is_held_across_the_transaction_and_released_after(tmp_path: Path) -> None:
    import fcntl
    import os

    _, db = _db(tmp_path)
    lock_path = str(tmp_path / "k.db") + "-keel-write.lock"
    probe = os.open(lock_path, os.O_RDWR)

    def free() -> bool:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(probe, fcntl.LOCK_UN)
        return True

    assert free()
    with db.write() as conn:
        assert not free()
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 1)")
        assert not free()
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 2)")
    assert free()
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1, 3)")
        raise RuntimeError("boom")
    assert free()  # released after a rollback too
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2
    os.close(probe)
    db.dispose()


def test_unopenable_lock_file_falls_back_to_sqlite_locking(tmp_path: Path) -> None:
    _, db = _db(tmp_path)
    assert db._file_lock is not None
    db._file_lock._path = str(tmp_path / "missing-dir" / "x.lock")
    db._file_lock.close()
    with db.write() as conn:  # still writes, with SQLite's own busy handling
        conn.exec_driver_sql("INSERT INTO t VALUES (3, 1)")
    assert db._file_lock._broken
    with db.read() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 1
    db.dispose()


def test_store_errors_still_translate(tmp_path: Path) -> None:
    _, db = _db(tmp_path)
    with pytest.raises(StoreError), db.write() as conn:
        conn.exec_driver_sql("INSERT INTO no_such_table VALUES (1)")
    db.dispose()
