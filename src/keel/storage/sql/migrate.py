"""Versioned migrations, per area, applied on start.

Each area module (``keel.storage.sql.<area>``) declares ``COMPONENT`` and ``MIGRATIONS``: an
ordered list of functions ``(conn, dialect) -> None``. Version numbers are per component, so
areas evolve independently without a single global revision chain. Applied versions are
recorded in ``keel_schema``; applying is idempotent and safe when several processes start at
once (Postgres advisory lock, SQLite ``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keel.storage.sql.engine import Database

Migration = Callable[[Connection, str], None]

# Areas whose modules carry migrations, in apply order.
AREAS = ["keel.storage.sql.projects", "keel.storage.sql.spans", "keel.storage.sql.prompts", "keel.storage.sql.datasets", "keel.storage.sql.evals", "keel.storage.sql.gateway"]

_SCHEMA_DDL = (
    "CREATE TABLE IF NOT EXISTS keel_schema ("
    " component VARCHAR(64) NOT NULL,"
    " version INTEGER NOT NULL,"
    " applied_at VARCHAR(40) NOT NULL,"
    " PRIMARY KEY (component, version))"
)


def registered() -> dict[str, list[Migration]]:
    """Every component's migrations."""
    out: dict[str, list[Migration]] = {}
    for mod_name in AREAS:
        mod = importlib.import_module(mod_name)
        out[mod.COMPONENT] = list(mod.MIGRATIONS)
    return out


def current_versions(db: Database) -> dict[str, int]:
    """Highest applied version per component."""
    with db.read() as conn:
        insp = sa.inspect(conn)
        if not insp.has_table("keel_schema"):
            return {}
        rows = conn.exec_driver_sql(
            "SELECT component, MAX(version) FROM keel_schema GROUP BY component"
        ).all()
        return {r[0]: int(r[1]) for r in rows}


def migrate(db: Database) -> list[tuple[str, int]]:
    """Apply every pending migration; return what was applied."""
    applied: list[tuple[str, int]] = []
    dialect = db.engine.dialect.name
    with db.write() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74007400)")
        conn.exec_driver_sql(_SCHEMA_DDL)
        done = {
            (r[0], int(r[1]))
            for r in conn.exec_driver_sql("SELECT component, version FROM keel_schema").all()
        }
        for component, steps in registered().items():
            for i, step in enumerate(steps, start=1):
                if (component, i) in done:
                    continue
                step(conn, dialect)
                conn.execute(
                    sa.text(
                        "INSERT INTO keel_schema (component, version, applied_at) VALUES (:c, :v, :t)"
                    ),
                    {"c": component, "v": i, "t": datetime.now(UTC).isoformat()},
                )
                applied.append((component, i))
    return applied
