"""Shared fixtures: a store per backend (memory, SQLite, Postgres), an app, a client."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "KEEL_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1"


def _start_keel_serve(
    db: Path, port: int, *, workers: int = 1, new_session: bool = False, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    args = ["--store", f"sqlite:///{db}", "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "keel", *args, "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=new_session,  # one process group: a kill reaches every worker
        env={**os.environ, "KEEL_CONFIG": str(db.parent / "none.toml")},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            if ok:
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.fixture
def keel_serve() -> Callable[..., subprocess.Popen[bytes]]:
    """``keel_serve(db_path, port, workers=1, new_session=False)``: a real ``keel serve``
    process on a SQLite file, returned once ``/healthz`` answers (the caller stops it)."""
    return _start_keel_serve


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(
            PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
        ):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh Postgres database for this test session (dropped at the end)."""
    if not _pg_available():
        if REQUIRE_SERVICES:
            pytest.fail(f"Postgres is required but not reachable at {PG_ADMIN_URL}")
        pytest.skip("Postgres not reachable")
    import psycopg

    name = f"keel_test_{uuid.uuid4().hex[:10]}"
    admin = PG_ADMIN_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _truncate_pg(url: str) -> None:
    import sqlalchemy as sa

    eng = sa.create_engine(url)
    with eng.begin() as conn:
        names = [
            r[0]
            for r in conn.exec_driver_sql(
                "SELECT tablename FROM pg_tables WHERE schemaname='public' AND tablename <> 'keel_schema'"
            )
        ]
        if names:
            conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{n}"' for n in names) + " CASCADE")
    eng.dispose()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A store URL per backend; each test starts empty."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keel.db"
    url = request.getfixturevalue("pg_database")
    from keel.storage import open_store

    open_store(url).close()  # migrate
    _truncate_pg(url)
    return url


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    """An open store on each backend."""
    from keel.storage import open_store

    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def sql_store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A SQLite URL (for tests that need a file store but not every backend)."""
    return f"sqlite:///{tmp_path}/keel.db"


# Property tests are deterministic here (CONVENTIONS: tests stay deterministic): the same
# examples every run, so CI cannot fail on a new random draw. Explore with
# `HYPOTHESIS_PROFILE=explore pytest ...` to hunt for new counterexamples.
from hypothesis import settings as _hyp_settings  # noqa: E402

_hyp_settings.register_profile("ci", derandomize=True, database=None, deadline=None)
_hyp_settings.register_profile("explore", deadline=None)
_hyp_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
