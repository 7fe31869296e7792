"""Migrations: from an empty database, idempotent, concurrent starts."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from keel.storage.sql import SqlStore
from keel.storage.sql.migrate import current_versions, registered


def test_migrate_from_empty_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    s = SqlStore(url)
    versions = current_versions(s.db)
    assert versions == {c: len(m) for c, m in registered().items()}
    with s.db.read() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"
    s.close()
    s2 = SqlStore(url)  # second start applies nothing new
    assert current_versions(s2.db) == versions
    s2.close()


def test_migrate_concurrently_on_postgres(pg_database):
    eng = sa.create_engine(pg_database)
    with eng.begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")
    eng.dispose()
    errors: list[BaseException] = []

    def start() -> None:
        try:
            SqlStore(pg_database).close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    s = SqlStore(pg_database)
    assert current_versions(s.db) == {c: len(m) for c, m in registered().items()}
    s.close()
