"""SQL eval runs, per-row results and the runner's output cache."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from keel.core.clock import Clock
from keel.core.evals import EvalRowResult, EvalRun
from keel.errors import ConflictError, NotFoundError
from keel.storage.sql.engine import Database, metadata
from keel.storage.sql.types import Json, UtcDateTime

COMPONENT = "evals"

eval_runs = sa.Table(
    "eval_runs",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("project_id", sa.String(40), nullable=False),
    sa.Column("suite", sa.String(200), nullable=True),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("prompt_name", sa.String(200), nullable=True),
    sa.Column("prompt_version", sa.Integer, nullable=True),
    sa.Column("dataset_name", sa.String(200), nullable=True),
    sa.Column("dataset_version", sa.Integer, nullable=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Index("ix_eval_runs_project_created", "project_id", "created_at"),
    sa.Index("ix_eval_runs_prompt", "project_id", "prompt_name", "prompt_version"),
)

eval_results = sa.Table(
    "eval_results",
    metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("eval_runs.id"), primary_key=True),
    sa.Column("row_id", sa.String(200), primary_key=True),
    sa.Column("repeat", sa.Integer, primary_key=True),
    sa.Column("row_index", sa.Integer, nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

eval_output_cache = sa.Table(
    "eval_output_cache",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("data", Json, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(conn, tables=[eval_runs, eval_results, eval_output_cache])


MIGRATIONS = [_v1]


def _insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    conn.execute(stmt, rows)


def _run_cols(run: EvalRun) -> dict[str, Any]:
    return {
        "project_id": run.project_id,
        "suite": run.suite,
        "status": run.status,
        "prompt_name": run.prompt_name,
        "prompt_version": run.prompt_version,
        "dataset_name": run.dataset_name,
        "dataset_version": run.dataset_version,
        "data": run.model_dump(mode="json"),
        "created_at": run.created_at,
    }


class SqlEvalStore:
    """Implements :class:`keel.storage.evals.EvalStore` on SQL."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def add_run(self, run: EvalRun) -> EvalRun:
        try:
            with self._db.write() as conn:
                conn.execute(eval_runs.insert().values(id=run.id, **_run_cols(run)))
        except ConflictError:
            raise ConflictError(f"eval run {run.id!r} already exists")
        return run

    def put_run(self, run: EvalRun) -> EvalRun:
        with self._db.write() as conn:
            n = conn.execute(
                eval_runs.update().where(eval_runs.c.id == run.id).values(**_run_cols(run))
            ).rowcount
        if not n:
            raise NotFoundError(f"eval run {run.id!r} not found")
        return run

    def get_run(self, run_id: str) -> EvalRun:
        with self._db.read() as conn:
            r = conn.execute(sa.select(eval_runs.c.data).where(eval_runs.c.id == run_id)).first()
        if r is None:
            raise NotFoundError(f"eval run {run_id!r} not found")
        return EvalRun.model_validate(r.data)

    def list_runs(
        self,
        project_id: str,
        *,
        suite: str | None = None,
        prompt_name: str | None = None,
        prompt_version: int | None = None,
        dataset_name: str | None = None,
        dataset_version: int | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[EvalRun]:
        q = sa.select(eval_runs.c.data).where(eval_runs.c.project_id == project_id)
        for col, val in (
            (eval_runs.c.suite, suite),
            (eval_runs.c.prompt_name, prompt_name),
            (eval_runs.c.prompt_version, prompt_version),
            (eval_runs.c.dataset_name, dataset_name),
            (eval_runs.c.dataset_version, dataset_version),
            (eval_runs.c.status, status),
        ):
            if val is not None:
                q = q.where(col == val)
        q = q.order_by(eval_runs.c.created_at.desc(), eval_runs.c.id.desc()).limit(limit)
        with self._db.read() as conn:
            return [EvalRun.model_validate(r.data) for r in conn.execute(q).all()]

    def add_results(self, results: list[EvalRowResult]) -> None:
        if not results:
            return
        now = self._clock.now()
        rows = []
        for res in results:
            created = res.created_at or now
            data = res.model_dump(mode="json")
            data["created_at"] = data["created_at"] or created.isoformat()
            rows.append(
                {
                    "run_id": res.run_id,
                    "row_id": res.row_id,
                    "repeat": res.repeat,
                    "row_index": res.row_index,
                    "data": data,
                    "created_at": created,
                }
            )
        with self._db.write() as conn:
            run_ids = {r["run_id"] for r in rows}
            found = {
                r[0]
                for r in conn.execute(
                    sa.select(eval_runs.c.id).where(eval_runs.c.id.in_(run_ids))
                ).all()
            }
            missing = run_ids - found
            if missing:
                raise NotFoundError(f"eval run {sorted(str(m) for m in missing)[0]!r} not found")
            _insert_ignore(conn, eval_results, rows)

    def list_results(self, run_id: str) -> list[EvalRowResult]:
        self.get_run(run_id)
        q = (
            sa.select(eval_results.c.data)
            .where(eval_results.c.run_id == run_id)
            .order_by(eval_results.c.row_index, eval_results.c.repeat, eval_results.c.row_id)
        )
        with self._db.read() as conn:
            return [EvalRowResult.model_validate(r.data) for r in conn.execute(q).all()]

    def completed_keys(self, run_id: str) -> set[tuple[str, int]]:
        q = sa.select(eval_results.c.row_id, eval_results.c.repeat).where(
            eval_results.c.run_id == run_id
        )
        with self._db.read() as conn:
            return {(r[0], int(r[1])) for r in conn.execute(q).all()}

    def get_cached_outputs(self, keys: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not keys:
            return out
        with self._db.read() as conn:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                for r in conn.execute(
                    sa.select(eval_output_cache.c.key, eval_output_cache.c.data).where(
                        eval_output_cache.c.key.in_(chunk)
                    )
                ).all():
                    out[r.key] = r.data
        return out

    def put_cached_outputs(self, items: dict[str, Any]) -> None:
        if not items:
            return
        now = self._clock.now()
        rows = [{"key": k, "data": v, "created_at": now} for k, v in items.items()]
        with self._db.write() as conn:
            _insert_ignore(conn, eval_output_cache, rows)
