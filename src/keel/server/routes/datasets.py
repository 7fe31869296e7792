"""Datasets over REST (``/api/datasets``): create, push rows, versions, rows, export, curation.

Rows and versions are append-only: pushing rows (or removing some) creates a new version and
the old ones stay readable; no route edits a stored row or version.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from keel.core.datasets import Dataset, DatasetVersion, Row
from keel.datasets import formats, service
from keel.datasets.curation import CurationFilter, add_from_traces
from keel.errors import InvalidInputError
from keel.server.auth import AuthContext
from keel.server.deps import AppContext, get_context, require_auth
from keel.storage.spans import TraceFilter

router = APIRouter(prefix="/api/datasets", tags=["datasets"])

MAX_ROWS_PER_REQUEST = 10_000
MAX_INT = 2_147_483_647
MAX_NS = 2**63 - 1


class DatasetIn(BaseModel):
    """Create a dataset."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    description: str | None = Field(None, max_length=10_000)


class VersionOut(BaseModel):
    """A dataset version."""

    version: int
    row_count: int
    content_hash: str
    message: str | None
    author: str | None
    created_at: datetime


class DatasetOut(BaseModel):
    """A dataset, with its versions when asked for one."""

    id: str
    name: str
    description: str | None
    created_at: datetime
    latest_version: int
    versions: list[VersionOut] | None = None


class RowsIn(BaseModel):
    """Rows for a new version (records as in a JSONL file)."""

    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_ROWS_PER_REQUEST)
    append: bool = Field(True, description="start from the latest version's rows")
    remove: list[str] = Field(default_factory=list, max_length=MAX_ROWS_PER_REQUEST)
    message: str | None = Field(None, max_length=10_000)


class PushOut(BaseModel):
    """What a push did."""

    dataset: str
    version: int
    created: bool
    row_count: int
    rows_read: int
    duplicates: int
    removed: int
    content_hash: str


class RowsPage(BaseModel):
    """Rows of a version."""

    version: int
    offset: int
    items: list[Row]
    next_offset: int | None


class FromTracesIn(BaseModel):
    """Curate rows from stored traces (filters as for the trace list)."""

    model_config = ConfigDict(extra="forbid")

    start_from_ns: int | None = Field(None, ge=0, le=MAX_NS)
    start_to_ns: int | None = Field(None, ge=0, le=MAX_NS)
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    route: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = Field(None, ge=1, le=MAX_INT)
    status: Literal["ok", "error", "unset"] | None = None
    text: str | None = Field(None, max_length=500)
    scores_below: dict[str, float] = Field(default_factory=dict, max_length=20)
    limit: int = Field(1000, ge=1, le=100_000)
    split: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=50)
    message: str | None = Field(None, max_length=10_000)


def _version_out(v: DatasetVersion) -> VersionOut:
    return VersionOut.model_validate(v.model_dump())


def _dataset_out(d: Dataset, versions: list[DatasetVersion] | None = None) -> DatasetOut:
    return DatasetOut(
        id=d.id,
        name=d.name,
        description=d.description,
        created_at=d.created_at,
        latest_version=d.latest_version,
        versions=[_version_out(v) for v in versions] if versions is not None else None,
    )


@router.get("", response_model=list[DatasetOut], summary="Datasets of the project")
def list_datasets(
    auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> list[DatasetOut]:
    """By name."""
    return [_dataset_out(d) for d in ctx.store.datasets.list_datasets(auth.project_id)]


@router.post("", response_model=DatasetOut, status_code=201, summary="Create a dataset")
def create_dataset(
    body: DatasetIn,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> DatasetOut:
    """409 if the name is taken."""
    auth.require_scope("datasets")
    d = ctx.store.datasets.add_dataset(auth.project_id, body.name, description=body.description)
    return _dataset_out(d, [])


@router.get("/{name}", response_model=DatasetOut, summary="A dataset and its versions")
def get_dataset(
    name: str, auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> DatasetOut:
    """With every version."""
    d = ctx.store.datasets.get_dataset(auth.project_id, name)
    return _dataset_out(d, ctx.store.datasets.list_versions(d.id))


@router.get("/{name}/versions", response_model=list[VersionOut], summary="Versions")
def list_versions(
    name: str, auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> list[VersionOut]:
    """Oldest first."""
    d = ctx.store.datasets.get_dataset(auth.project_id, name)
    return [_version_out(v) for v in ctx.store.datasets.list_versions(d.id)]


@router.post("/{name}/rows", response_model=PushOut, summary="Push rows as a new version")
def push_rows(
    name: str,
    body: RowsIn,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> PushOut:
    """Rows are deduplicated by content; the dataset is created when missing."""
    auth.require_scope("datasets")
    try:
        json.dumps(body.rows, allow_nan=False)
    except ValueError:
        raise InvalidInputError("rows may not contain NaN or infinite numbers")
    rows = [formats.record_to_row(r, f"rows[{i}]") for i, r in enumerate(body.rows)]
    d = service.ensure_dataset(ctx.store, auth.project_id, name)
    res = service.push_rows(
        ctx.store,
        d,
        rows,
        append=body.append,
        remove=body.remove,
        message=body.message,
        author=auth.actor,
    )
    return PushOut.model_validate(res.to_json())


@router.get("/{name}/versions/{version}/rows", response_model=RowsPage, summary="Rows")
def list_rows(
    name: str,
    version: int = Path(ge=1, le=MAX_INT),
    offset: int = Query(0, ge=0, le=MAX_INT),
    limit: int = Query(100, ge=1, le=1000),
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> RowsPage:
    """A page of a version's rows, in order."""
    d = ctx.store.datasets.get_dataset(auth.project_id, name)
    v = ctx.store.datasets.get_version(d.id, version)
    items: list[Row] = []
    for i, r in enumerate(ctx.store.datasets.iter_rows(d.id, version)):
        if i < offset:
            continue
        if len(items) >= limit:
            break
        items.append(r)
    nxt = offset + len(items)
    return RowsPage(
        version=version,
        offset=offset,
        items=items,
        next_offset=nxt if nxt < v.row_count else None,
    )


def _stream(rows: Iterator[Row], fmt: str) -> Iterator[bytes]:
    if fmt == "jsonl":
        for r in rows:
            buf = io.BytesIO()
            formats.write_jsonl([r], buf)
            yield buf.getvalue()
        return
    header = True
    for r in rows:
        s = io.StringIO()
        formats.write_csv([r], s)
        text = s.getvalue()
        if not header:
            text = text.split("\n", 1)[1]
        header = False
        yield text.encode("utf-8")
    if header:
        s = io.StringIO()
        formats.write_csv([], s)
        yield s.getvalue().encode("utf-8")


@router.get("/{name}/export", summary="Export a version (JSONL, CSV or Parquet)")
def export(
    name: str,
    version: int | None = Query(None, ge=1, le=MAX_INT, description="default: the latest"),
    format: Literal["jsonl", "csv", "parquet"] = Query("jsonl"),
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> Any:
    """Streamed; the same version always exports the same bytes."""
    ref = f"{name}@{version}" if version else name
    d, v = service.resolve_version(ctx.store, auth.project_id, ref)
    filename = f"{d.name}-v{v.version}.{format}"
    headers = {
        "content-disposition": f'attachment; filename="{filename}"',
        "x-keel-dataset-version": str(v.version),
        "x-keel-content-hash": v.content_hash,
    }
    rows = ctx.store.datasets.iter_rows(d.id, v.version)
    if format == "parquet":
        fd, path = tempfile.mkstemp(suffix=".parquet")
        os.close(fd)
        try:
            formats.write_parquet(rows, path)
        except BaseException:
            os.unlink(path)
            raise
        return FileResponse(
            path,
            media_type="application/vnd.apache.parquet",
            headers=headers,
            background=BackgroundTask(os.unlink, path),
        )
    media = "application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8"
    return StreamingResponse(_stream(rows, format), media_type=media, headers=headers)


@router.post("/{name}/from-traces", response_model=PushOut, summary="Add rows from traces")
def from_traces(
    name: str,
    body: FromTracesIn,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> PushOut:
    """Each matching LLM span becomes a row with a back-link to its trace (a new version)."""
    auth.require_scope("datasets")
    if getattr(ctx.store, "spans", None) is None:
        raise InvalidInputError("this store has no span store")
    tf = TraceFilter(
        **body.model_dump(
            include={
                "start_from_ns",
                "start_to_ns",
                "service",
                "model",
                "provider",
                "route",
                "prompt_name",
                "prompt_version",
                "status",
                "text",
            }
        )
    )
    res = add_from_traces(
        ctx.store,
        auth.project_id,
        name,
        CurationFilter(
            traces=tf,
            scores_below=body.scores_below,
            limit=body.limit,
            split=body.split,
            tags=body.tags,
        ),
        message=body.message,
        author=auth.actor,
    )
    return PushOut.model_validate(res.to_json())
