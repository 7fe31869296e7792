"""SQL datasets: insert-only rows, versions as ordered lists of row ids.

Row content is stored as canonical JSON text (not JSONB) so it reads back byte for byte, which
keeps exports of one version identical however often they run. Rows are inserted with
"on conflict do nothing" on (dataset, row id): the id derives from the content, so a duplicate
is simply not stored twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from keel.core.clock import Clock
from keel.core.datasets import Dataset, DatasetVersion, Row, row_identity, snapshot_hash
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.errors import ConflictError, InvalidInputError, NotFoundError
from keel.storage.sql.engine import Database, metadata
from keel.storage.sql.prompts import lock_key
from keel.storage.sql.types import UtcDateTime

COMPONENT = "datasets"

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("project_id", sa.String(40), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("project_id", "name", name="uq_datasets_name"),
)

dataset_rows = sa.Table(
    "dataset_rows",
    metadata,
    sa.Column("dataset_id", sa.String(40), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("row_id", sa.String(40), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("dataset_id", sa.String(40), sa.ForeignKey("datasets.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("row_count", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(80), nullable=False),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("author", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
)

dataset_version_rows = sa.Table(
    "dataset_version_rows",
    metadata,
    sa.Column("dataset_id", sa.String(40), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("row_id", sa.String(40), nullable=False),
    sa.ForeignKeyConstraint(
        ["dataset_id", "version"], ["dataset_versions.dataset_id", "dataset_versions.version"]
    ),
    sa.ForeignKeyConstraint(
        ["dataset_id", "row_id"], ["dataset_rows.dataset_id", "dataset_rows.row_id"]
    ),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(
        conn, tables=[datasets, dataset_rows, dataset_versions, dataset_version_rows]
    )


MIGRATIONS = [_v1]

_CHUNK = 2000


def _row_from(rid: str, data: str) -> Row:
    return Row.model_validate({**orjson.loads(data), "id": rid})


def _version_from_row(r: Any) -> DatasetVersion:
    return DatasetVersion.model_validate(r._asdict())


class SqlDatasetStore:
    """Implements :class:`keel.storage.datasets.DatasetStore` on SQL."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def add_dataset(self, project_id: str, name: str, *, description: str | None = None) -> Dataset:
        validate_name(name, "dataset name")
        d = Dataset(
            id=new_id("ds"),
            project_id=project_id,
            name=name,
            description=description,
            created_at=self._clock.now(),
        )
        try:
            with self._db.write() as conn:
                conn.execute(datasets.insert().values(**d.model_dump(exclude={"latest_version"})))
        except ConflictError:
            raise ConflictError(f"dataset {name!r} already exists")
        return d

    def _select_datasets(self) -> Any:
        latest = (
            sa.select(sa.func.coalesce(sa.func.max(dataset_versions.c.version), 0))
            .where(dataset_versions.c.dataset_id == datasets.c.id)
            .scalar_subquery()
        )
        return sa.select(datasets, latest.label("latest_version"))

    def find_dataset(self, project_id: str, name: str) -> Dataset | None:
        with self._db.read() as conn:
            r = conn.execute(
                self._select_datasets().where(
                    datasets.c.project_id == project_id, datasets.c.name == name
                )
            ).first()
        return Dataset.model_validate(r._asdict()) if r else None

    def get_dataset(self, project_id: str, name: str) -> Dataset:
        d = self.find_dataset(project_id, name)
        if d is None:
            raise NotFoundError(f"dataset {name!r} not found")
        return d

    def list_datasets(self, project_id: str) -> list[Dataset]:
        with self._db.read() as conn:
            rows = conn.execute(
                self._select_datasets()
                .where(datasets.c.project_id == project_id)
                .order_by(datasets.c.name)
            ).all()
        return [Dataset.model_validate(r._asdict()) for r in rows]

    def _check(self, conn: Connection, dataset_id: str) -> None:
        if (
            conn.execute(sa.select(datasets.c.id).where(datasets.c.id == dataset_id)).first()
            is None
        ):
            raise NotFoundError(f"dataset {dataset_id!r} not found")

    def _insert_ignore(self) -> Any:
        if self._db.is_sqlite:
            return sqlite.insert(dataset_rows).on_conflict_do_nothing()
        return postgresql.insert(dataset_rows).on_conflict_do_nothing()

    def add_rows(self, dataset_id: str, rows: Iterable[Row]) -> list[str]:
        now = self._clock.now()
        ids: list[str] = []
        values: dict[str, dict[str, Any]] = {}
        for r in rows:
            try:
                rid, data = row_identity(r)
            except (ValueError, TypeError) as e:
                raise InvalidInputError(f"row cannot be stored: {e}")
            ids.append(rid)
            if rid not in values:
                values[rid] = {
                    "dataset_id": dataset_id,
                    "row_id": rid,
                    "data": data.decode("utf-8"),
                    "created_at": now,
                }
        with self._db.write() as conn:
            self._check(conn, dataset_id)
            batch = list(values.values())
            for i in range(0, len(batch), _CHUNK):
                conn.execute(self._insert_ignore(), batch[i : i + _CHUNK])
        return ids

    def get_row(self, dataset_id: str, row_id: str) -> Row:
        with self._db.read() as conn:
            r = conn.execute(
                dataset_rows.select().where(
                    dataset_rows.c.dataset_id == dataset_id, dataset_rows.c.row_id == row_id
                )
            ).first()
        if r is None:
            raise NotFoundError(f"row {row_id!r} not found")
        return _row_from(r.row_id, r.data)

    def add_version(
        self,
        dataset_id: str,
        row_ids: Iterable[str],
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        ids = list(row_ids)
        h, n = snapshot_hash(ids)
        with self._db.write() as conn:
            self._check(conn, dataset_id)
            lock_key(conn, self._db, "dataset", dataset_id)
            for i in range(0, len(ids), _CHUNK):
                chunk = set(ids[i : i + _CHUNK])
                found = {
                    r[0]
                    for r in conn.execute(
                        sa.select(dataset_rows.c.row_id).where(
                            dataset_rows.c.dataset_id == dataset_id,
                            dataset_rows.c.row_id.in_(chunk),
                        )
                    )
                }
                if len(found) != len(chunk):
                    missing = sorted(chunk - found)
                    raise InvalidInputError(f"unknown row ids: {', '.join(missing[:5])}")
            latest = conn.execute(
                dataset_versions.select()
                .where(dataset_versions.c.dataset_id == dataset_id)
                .order_by(dataset_versions.c.version.desc())
                .limit(1)
            ).first()
            if latest is not None and latest.content_hash == h:
                return _version_from_row(latest), False
            v = DatasetVersion(
                dataset_id=dataset_id,
                version=(latest.version if latest else 0) + 1,
                row_count=n,
                content_hash=h,
                message=message,
                author=author,
                created_at=self._clock.now(),
            )
            conn.execute(dataset_versions.insert().values(**v.model_dump()))
            for i in range(0, len(ids), _CHUNK):
                conn.execute(
                    dataset_version_rows.insert(),
                    [
                        {
                            "dataset_id": dataset_id,
                            "version": v.version,
                            "position": i + j,
                            "row_id": rid,
                        }
                        for j, rid in enumerate(ids[i : i + _CHUNK])
                    ],
                )
        return v, True

    def get_version(self, dataset_id: str, version: int) -> DatasetVersion:
        with self._db.read() as conn:
            r = conn.execute(
                dataset_versions.select().where(
                    dataset_versions.c.dataset_id == dataset_id,
                    dataset_versions.c.version == version,
                )
            ).first()
        if r is None:
            raise NotFoundError(f"dataset version {version} not found")
        return _version_from_row(r)

    def list_versions(self, dataset_id: str) -> list[DatasetVersion]:
        with self._db.read() as conn:
            rows = conn.execute(
                dataset_versions.select()
                .where(dataset_versions.c.dataset_id == dataset_id)
                .order_by(dataset_versions.c.version)
            ).all()
        return [_version_from_row(r) for r in rows]

    def _pages(
        self, dataset_id: str, version: int, batch_size: int, with_data: bool
    ) -> Iterator[Sequence[Any]]:
        self.get_version(dataset_id, version)
        pos = -1
        vr = dataset_version_rows
        cols: list[Any] = [vr.c.position, vr.c.row_id]
        if with_data:
            cols.append(dataset_rows.c.data)
        while True:
            q = sa.select(*cols)
            if with_data:
                q = q.select_from(
                    vr.join(
                        dataset_rows,
                        sa.and_(
                            dataset_rows.c.dataset_id == vr.c.dataset_id,
                            dataset_rows.c.row_id == vr.c.row_id,
                        ),
                    )
                )
            q = (
                q.where(vr.c.dataset_id == dataset_id, vr.c.version == version, vr.c.position > pos)
                .order_by(vr.c.position)
                .limit(batch_size)
            )
            with self._db.read() as conn:
                page = conn.execute(q).all()
            if not page:
                return
            yield page
            pos = page[-1].position

    def iter_row_ids(self, dataset_id: str, version: int) -> Iterator[str]:
        for page in self._pages(dataset_id, version, 5000, with_data=False):
            for r in page:
                yield r.row_id

    def iter_rows(self, dataset_id: str, version: int, *, batch_size: int = 1000) -> Iterator[Row]:
        for page in self._pages(dataset_id, version, batch_size, with_data=True):
            for r in page:
                yield _row_from(r.row_id, r.data)
