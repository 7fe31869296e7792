"""Contract for datasets: immutable rows and versions that are snapshots.

Rows are content-addressed inside a dataset: a row's id derives from its content hash, so the
same content pushed twice is stored once and keeps its id. A version is an ordered list of row
ids; adding, editing or removing rows makes a new version and old versions stay readable. No
method updates a stored row or version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from keel.core.datasets import Dataset, DatasetVersion, Row


class DatasetStore(Protocol):
    """Datasets, their rows (append-only) and their versions (snapshots)."""

    def add_dataset(self, project_id: str, name: str, *, description: str | None = None) -> Dataset:
        """Create a dataset; :class:`ConflictError` if the name is taken in the project."""
        ...

    def get_dataset(self, project_id: str, name: str) -> Dataset:
        """By name (with ``latest_version`` filled in); :class:`NotFoundError` if absent."""
        ...

    def find_dataset(self, project_id: str, name: str) -> Dataset | None:
        """By name, or None."""
        ...

    def list_datasets(self, project_id: str) -> list[Dataset]:
        """Every dataset of the project, by name."""
        ...

    def add_rows(self, dataset_id: str, rows: Iterable[Row]) -> list[str]:
        """Store rows (one transaction); return their ids in input order.

        A row's id is :func:`keel.core.datasets.row_id` of its content; content already stored
        is not stored again (its existing id is returned).
        """
        ...

    def get_row(self, dataset_id: str, row_id: str) -> Row:
        """One stored row; :class:`NotFoundError` if absent."""
        ...

    def add_version(
        self,
        dataset_id: str,
        row_ids: Iterable[str],
        *,
        message: str | None = None,
        author: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Snapshot the given rows (in order, which must all be stored) as the next version.

        When the snapshot equals the latest version's, that version is returned instead.
        Returns ``(version, created)``. Numbering is race-free under concurrent callers.
        """
        ...

    def get_version(self, dataset_id: str, version: int) -> DatasetVersion:
        """One version; :class:`NotFoundError` if absent."""
        ...

    def list_versions(self, dataset_id: str) -> list[DatasetVersion]:
        """Every version, oldest first."""
        ...

    def iter_row_ids(self, dataset_id: str, version: int) -> Iterator[str]:
        """The row ids of a version in order, streamed."""
        ...

    def iter_rows(self, dataset_id: str, version: int, *, batch_size: int = 1000) -> Iterator[Row]:
        """The rows of a version in order, streamed in batches (bounded memory)."""
        ...
