"""SQL spend ledger: one row per (API key, UTC day), incremented with an atomic upsert."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from keel.storage.gateway import SpendDelta, SpendTotals
from keel.storage.sql.engine import Database, metadata

COMPONENT = "gateway"

gateway_spend = sa.Table(
    "gateway_spend",
    metadata,
    sa.Column("key_id", sa.String(40), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),  # ISO date, sorts as text
    sa.Column("project_id", sa.String(40), nullable=False),
    sa.Column("cost_micro_usd", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("tokens", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("requests", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Index("ix_gateway_spend_project_day", "project_id", "day"),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(conn, tables=[gateway_spend])


MIGRATIONS = [_v1]


class SqlGatewayStore:
    """Implements :class:`keel.storage.gateway.GatewayStore` on SQLite and Postgres."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._insert = sqlite.insert if db.is_sqlite else postgresql.insert

    def add_spend(self, deltas: list[SpendDelta]) -> None:
        if not deltas:
            return
        merged: dict[tuple[str, str], list[int | str]] = {}
        for d in deltas:
            row = merged.setdefault((d.key_id, d.day.isoformat()), [d.project_id, 0, 0, 0])
            row[1] = int(row[1]) + d.cost_micro_usd
            row[2] = int(row[2]) + d.tokens
            row[3] = int(row[3]) + d.requests
        t = gateway_spend
        with self._db.write() as conn:
            # Sorted keys: concurrent writers on Postgres lock rows in one order (no deadlock).
            for (key_id, day), (project_id, cost, tokens, requests) in sorted(merged.items()):
                ins = self._insert(t).values(
                    key_id=key_id,
                    day=day,
                    project_id=project_id,
                    cost_micro_usd=cost,
                    tokens=tokens,
                    requests=requests,
                )
                conn.execute(
                    ins.on_conflict_do_update(
                        index_elements=[t.c.key_id, t.c.day],
                        set_={
                            "cost_micro_usd": t.c.cost_micro_usd + ins.excluded.cost_micro_usd,
                            "tokens": t.c.tokens + ins.excluded.tokens,
                            "requests": t.c.requests + ins.excluded.requests,
                        },
                    )
                )

    def get_spend(self, key_id: str, start: date, end: date) -> SpendTotals:
        t = gateway_spend
        q = sa.select(
            sa.func.coalesce(sa.func.sum(t.c.cost_micro_usd), 0),
            sa.func.coalesce(sa.func.sum(t.c.tokens), 0),
            sa.func.coalesce(sa.func.sum(t.c.requests), 0),
        ).where(t.c.key_id == key_id, t.c.day >= start.isoformat(), t.c.day <= end.isoformat())
        with self._db.read() as conn:
            r = conn.execute(q).one()
        return SpendTotals(int(r[0]), int(r[1]), int(r[2]))

    def list_spend(
        self, project_id: str, start: date, end: date
    ) -> list[tuple[str, date, SpendTotals]]:
        t = gateway_spend
        q = (
            sa.select(t)
            .where(
                t.c.project_id == project_id,
                t.c.day >= start.isoformat(),
                t.c.day <= end.isoformat(),
            )
            .order_by(t.c.day, t.c.key_id)
        )
        with self._db.read() as conn:
            rows = conn.execute(q).all()
        return [
            (
                r.key_id,
                date.fromisoformat(r.day),
                SpendTotals(int(r.cost_micro_usd), int(r.tokens), int(r.requests)),
            )
            for r in rows
        ]
