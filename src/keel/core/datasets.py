"""Datasets: immutable rows, versions as snapshots, back-links to the traces rows came from."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keel.core.hashing import canonical_json, content_hash


class RowSource(BaseModel):
    """Where a row came from: the trace/span, prompt version, route and model that produced it."""

    model_config = ConfigDict(frozen=True)

    trace_id: str | None = None
    span_id: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    route: str | None = None
    model: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)


class Row(BaseModel):
    """One immutable dataset row."""

    model_config = ConfigDict(frozen=True)

    id: str = ""
    input: Any = None
    expected_output: Any = None
    context: list[str] = Field(default_factory=list)
    agent_steps: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    split: str | None = None
    source: RowSource | None = None

    def content_hash(self) -> str:
        """Hash of the row's content (not its id): duplicates share it."""
        return content_hash(self.model_dump(mode="json", exclude={"id"}))


class Dataset(BaseModel):
    """A named dataset."""

    id: str
    project_id: str
    name: str
    description: str | None = None
    created_at: datetime
    latest_version: int = 0


class DatasetVersion(BaseModel):
    """A snapshot: an ordered list of row ids."""

    model_config = ConfigDict(frozen=True)

    dataset_id: str
    version: int
    row_count: int
    content_hash: str
    message: str | None = None
    author: str | None = None
    created_at: datetime


def row_identity(row: Row) -> tuple[str, bytes]:
    """``(row id, canonical JSON of the content)``, computed with one encoding pass."""
    data = canonical_json(row.model_dump(mode="json", exclude={"id"}))
    return "row_" + hashlib.sha256(data).hexdigest()[:32], data


def row_id(row: Row) -> str:
    """The id a row gets in a dataset: derived from its content, so duplicates share it."""
    return row_identity(row)[0]


def snapshot_hash(row_ids: Iterable[str]) -> tuple[str, int]:
    """``(content hash, row count)`` of an ordered list of row ids (a version's identity)."""
    h = hashlib.sha256()
    n = 0
    for rid in row_ids:
        h.update(rid.encode("utf-8"))
        h.update(b"\n")
        n += 1
    return "sha256:" + h.hexdigest(), n
