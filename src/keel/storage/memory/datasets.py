"""In-memory datasets, rows and versions."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from keel.core.clock import Clock
from keel.core.datasets import Dataset, DatasetVersion, Row, row_id, snapshot_hash
from keel.core.ids import new_id
from keel.core.names import validate_name
from keel.errors import ConflictError, InvalidInputError, NotFoundError


def _checked_id(r: Row) -> str:
    try:
        return row_id(r)
    except (ValueError, TypeError) as e:
        raise InvalidInputError(f"row cannot be stored: {e}")


class MemoryDatasetStore:
    """Implements :class:`keel.storage.datasets.DatasetStore` in memory."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._datasets: dict[str, Dataset] = {}
        self._rows: dict[str, dict[str, Row]] = {}
        self._versions: dict[str, list[tuple[DatasetVersion, list[str]]]] = {}

    def add_dataset(self, project_id: str, name: str, *, description: str | None = None) -> Dataset:
        validate_name(name, "dataset name")
        with self._lock:
            if any(d.project_id == project_id and d.name == name for d in self._datasets.values()):
                raise ConflictError(f"dataset {name!r} already exists")
            d = Dataset(
                id=new_id("ds"),
                project_id=project_id,
                name=name,
                description=description,
                created_at=self._clock.now(),
            )
            self._datasets[d.id] = d
            self._rows[d.id] = {}
            self._versions[d.id] = []
            return d

    def _with_latest(self, d: Dataset) -> Dataset:
        return d.model_copy(update={"latest_version": len(self._versions[d.id])})

    def find_dataset(self, project_id: str, name: str) -> Dataset | None:
        d = next(
            (d for d in self._datasets.values() if d.project_id == project_id and d.name == name),
            None,
        )
        return self._with_latest(d) if d else None

    def get_dataset(self, project_id: str, name: str) -> Dataset:
        d = self.find_dataset(project_id, name)
        if d is None:
            raise NotFoundError(f"dataset {name!r} not found")
        return d

    def list_datasets(self, project_id: str) -> list[Dataset]:
        ds = [self._with_latest(d) for d in self._datasets.values() if d.project_id == project_id]
        return sorted(ds, key=lambda d: d.name)

    def _check(self, dataset_id: str) -> None:
        if dataset_id not in self._datasets:
            raise NotFoundError(f"dataset {dataset_id!r} not found")

    def add_rows(self, dataset_id: str, rows: Iterable[Row]) -> list[str]:
        self._check(dataset_id)
        ids = []
        with self._lock:
            store = self._rows[dataset_id]
            for r in rows:
                rid = _checked_id(r)
                if rid not in store:
                    store[rid] = r.model_copy(update={"id": rid})
                ids.append(rid)
        return ids

    def get_row(self, dataset_id: str, row_id: str) -> Row:
        self._check(dataset_id)
        try:
            return self._rows[dataset_id][row_id]
        except KeyError:
            raise NotFoundError(f"row {row_id!r} not found")

    def add_version(
        self,
        dataset_id: str,
        row_ids: Iterable[str],
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        self._check(dataset_id)
        ids = list(row_ids)
        with self._lock:
            stored = self._rows[dataset_id]
            missing = [i for i in ids if i not in stored]
            if missing:
                raise InvalidInputError(f"unknown row ids: {', '.join(missing[:5])}")
            h, n = snapshot_hash(ids)
            versions = self._versions[dataset_id]
            if versions and versions[-1][0].content_hash == h:
                return versions[-1][0], False
            v = DatasetVersion(
                dataset_id=dataset_id,
                version=len(versions) + 1,
                row_count=n,
                content_hash=h,
                message=message,
                author=author,
                created_at=self._clock.now(),
            )
            versions.append((v, ids))
            return v, True

    def _version(self, dataset_id: str, version: int) -> tuple[DatasetVersion, list[str]]:
        self._check(dataset_id)
        vs = self._versions[dataset_id]
        if not 1 <= version <= len(vs):
            raise NotFoundError(f"dataset version {version} not found")
        return vs[version - 1]

    def get_version(self, dataset_id: str, version: int) -> DatasetVersion:
        return self._version(dataset_id, version)[0]

    def list_versions(self, dataset_id: str) -> list[DatasetVersion]:
        self._check(dataset_id)
        return [v for v, _ in self._versions[dataset_id]]

    def iter_row_ids(self, dataset_id: str, version: int) -> Iterator[str]:
        yield from self._version(dataset_id, version)[1]

    def iter_rows(self, dataset_id: str, version: int, *, batch_size: int = 1000) -> Iterator[Row]:
        ids = self._version(dataset_id, version)[1]
        rows = self._rows[dataset_id]
        for rid in ids:
            yield rows[rid]
