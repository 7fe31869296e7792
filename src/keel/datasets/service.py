"""Dataset operations above the store: push rows (streamed, deduplicated), versions, export.

Pushing streams rows into the store in batches: only row ids (not rows) are kept while a file
is imported, so a 100,000-row file imports in bounded memory. Identical rows — within the
file, or already stored — are stored once; within one version a row appears once (first
occurrence wins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.core.datasets import Dataset, DatasetVersion, Row
from keel.datasets import formats
from keel.errors import InvalidInputError, NotFoundError

BATCH = 1000


@dataclass(frozen=True)
class PushResult:
    """What a push did."""

    dataset: Dataset
    version: DatasetVersion
    created: bool
    rows_read: int
    duplicates: int
    removed: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "dataset": self.dataset.name,
            "version": self.version.version,
            "created": self.created,
            "row_count": self.version.row_count,
            "rows_read": self.rows_read,
            "duplicates": self.duplicates,
            "removed": self.removed,
            "content_hash": self.version.content_hash,
        }


def ensure_dataset(
    store: Any, project_id: str, name: str, *, description: str | None = None, create: bool = True
) -> Dataset:
    """The dataset called ``name`` (created when missing and ``create``)."""
    d = store.datasets.find_dataset(project_id, name)
    if d is not None:
        return d  # type: ignore[no-any-return]
    if not create:
        raise NotFoundError(f"dataset {name!r} not found")
    from keel.errors import ConflictError

    try:
        return store.datasets.add_dataset(project_id, name, description=description)  # type: ignore[no-any-return]
    except ConflictError:
        return store.datasets.get_dataset(project_id, name)  # type: ignore[no-any-return]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@N`` (``@latest`` also means the latest)."""
    name, _, tail = ref.partition("@")
    if not tail or tail == "latest":
        return name, None
    if not tail.isdigit():
        raise InvalidInputError(f"invalid dataset reference {ref!r}", hint="write name or name@3")
    return name, int(tail)


def resolve_version(store: Any, project_id: str, ref: str) -> tuple[Dataset, DatasetVersion]:
    """The dataset and version a reference names (``name`` is the latest version)."""
    name, version = parse_ref(ref)
    d = store.datasets.get_dataset(project_id, name)
    if version is None:
        if d.latest_version == 0:
            raise NotFoundError(f"dataset {name!r} has no versions yet")
        version = d.latest_version
    return d, store.datasets.get_version(d.id, version)


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for r in rows:
        batch.append(r)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def push_rows(
    store: Any,
    dataset: Dataset,
    rows: Iterable[Row],
    *,
    append: bool = False,
    remove: Iterable[str] = (),
    message: str | None = None,
    author: str | None = None,
    batch_size: int = BATCH,
    on_batch: Callable[[int], None] | None = None,
) -> PushResult:
    """Store ``rows`` and snapshot them as a new version.

    ``append`` starts from the latest version's rows; ``remove`` drops row ids from that
    starting point (editing a row = removing its id and pushing the new content).
    """
    ids: list[str] = []
    seen: set[str] = set()
    drop = set(remove)
    removed = 0
    if (append or drop) and dataset.latest_version:
        for rid in store.datasets.iter_row_ids(dataset.id, dataset.latest_version):
            if rid in drop:
                removed += 1
                continue
            if rid not in seen:
                seen.add(rid)
                ids.append(rid)
    elif drop:
        raise InvalidInputError("nothing to remove from: the dataset has no version yet")
    read = dup = 0
    for batch in _batches(rows, batch_size):
        for rid in store.datasets.add_rows(dataset.id, batch):
            read += 1
            if rid in seen:
                dup += 1
                continue
            seen.add(rid)
            ids.append(rid)
        if on_batch is not None:
            on_batch(len(batch))
    if drop and removed != len(drop):
        raise InvalidInputError("some row ids to remove are not in the latest version")
    version, created = store.datasets.add_version(dataset.id, ids, message=message, author=author)
    fresh = store.datasets.get_dataset(dataset.project_id, dataset.name)
    return PushResult(fresh, version, created, read, dup, removed)


def push_file(
    store: Any,
    project_id: str,
    name: str,
    path: str | Path,
    *,
    fmt: str | None = None,
    append: bool = False,
    message: str | None = None,
    author: str | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
) -> PushResult:
    """Import a JSONL, CSV or Parquet file as the next version of dataset ``name``."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file")
    kind = formats.detect_format(path, fmt)
    ds = ensure_dataset(store, project_id, name)
    return push_rows(
        store,
        ds,
        formats.read_rows(path, kind),
        append=append,
        message=message or f"import {path.name}",
        author=author,
        batch_size=batch_size,
        on_batch=progress,
    )


def export(
    store: Any, project_id: str, ref: str, path: str | Path, *, fmt: str | None = None
) -> tuple[DatasetVersion, int]:
    """Write a version to a file (streamed); the same version always gives the same bytes."""
    d, v = resolve_version(store, project_id, ref)
    n = formats.write_rows(store.datasets.iter_rows(d.id, v.version), path, fmt)
    return v, n
