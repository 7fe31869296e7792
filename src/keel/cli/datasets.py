"""``keel datasets``: import/export JSONL, CSV and Parquet, versions, curation from traces."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

from keel.cli.common import (
    PROJECT_OPTION,
    cli_actor,
    emit_json,
    err_console,
    handle_errors,
    open_project,
    state,
    table,
)
from keel.errors import InvalidInputError

datasets_app = typer.Typer(
    help="Push, export, list and show datasets; curate rows from traces.", no_args_is_help=True
)

PROJECT = PROJECT_OPTION
_actor = cli_actor


_open = open_project


def _emit_push(ctx: typer.Context, res: Any) -> None:
    data = res.to_json()
    if state(ctx).json:
        emit_json(data)
        return
    status = "new version" if data["created"] else "unchanged (same rows as the latest version)"
    typer.echo(
        f"{data['dataset']}@{data['version']}: {status}; {data['row_count']} rows "
        f"({data['rows_read']} read, {data['duplicates']} duplicates skipped)"
    )


@datasets_app.command("push")
@handle_errors
def push(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="a .jsonl, .csv or .parquet file"),
    name: str = typer.Option(..., "--name", "-n", help="dataset name (created if missing)"),
    fmt: str | None = typer.Option(None, "--format", "-f", help="jsonl, csv or parquet"),
    append: bool = typer.Option(
        False, "--append", help="add to the latest version instead of replacing it"
    ),
    message: str | None = typer.Option(None, "--message", "-m"),
    project: str = PROJECT,
) -> None:
    """Import a file as the next version (streamed; duplicates stored once)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from keel.datasets import formats, service

    store, pid = _open(ctx, project)
    kind = formats.detect_format(file, fmt)
    total = None
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            total = pq.ParquetFile(str(file)).metadata.num_rows
        except Exception:
            total = None
    show = not state(ctx).json and err_console.is_terminal
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=err_console,
        disable=not show,
        transient=True,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=total)
        res = service.push_file(
            store,
            pid,
            name,
            file,
            fmt=kind,
            append=append,
            message=message,
            author=_actor(),
            progress=lambda n: progress.advance(task, n),
        )
    _emit_push(ctx, res)


@datasets_app.command("export")
@handle_errors
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="name or name@version"),
    out: Path = typer.Option(..., "--out", "-o", help="file to write (.jsonl, .csv or .parquet)"),
    fmt: str | None = typer.Option(None, "--format", "-f"),
    project: str = PROJECT,
) -> None:
    """Write a version to a file; the same version always gives the same bytes."""
    from keel.datasets import service

    store, pid = _open(ctx, project)
    v, n = service.export(store, pid, ref, out, fmt=fmt)
    if state(ctx).json:
        emit_json(
            {"version": v.version, "rows": n, "path": str(out), "content_hash": v.content_hash}
        )
    else:
        typer.echo(f"wrote {n} rows of version {v.version} to {out}")


@datasets_app.command("list")
@handle_errors
def list_datasets(ctx: typer.Context, project: str = PROJECT) -> None:
    """Datasets with their latest version."""
    store, pid = _open(ctx, project)
    ds = store.datasets.list_datasets(pid)
    if state(ctx).json:
        emit_json([d.model_dump(mode="json") for d in ds])
        return
    table(
        "Datasets",
        ["name", "latest", "created", "description"],
        [
            (d.name, d.latest_version, d.created_at.strftime("%Y-%m-%d %H:%M"), d.description)
            for d in ds
        ],
    )


@datasets_app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="name or name@version"),
    rows: int = typer.Option(5, "--rows", help="how many rows to preview"),
    project: str = PROJECT,
) -> None:
    """Versions of a dataset and the first rows of one version."""
    from keel.datasets import service

    store, pid = _open(ctx, project)
    name, _ = service.parse_ref(ref)
    d = store.datasets.get_dataset(pid, name)
    versions = store.datasets.list_versions(d.id)
    preview: list[Any] = []
    if versions:
        _, v = service.resolve_version(store, pid, ref)
        for i, r in enumerate(store.datasets.iter_rows(d.id, v.version, batch_size=max(rows, 1))):
            if i >= rows:
                break
            preview.append(r)
    if state(ctx).json:
        emit_json(
            {
                "dataset": d.model_dump(mode="json"),
                "versions": [v.model_dump(mode="json") for v in versions],
                "rows": [r.model_dump(mode="json") for r in preview],
            }
        )
        return
    table(
        f"{d.name}: versions",
        ["version", "rows", "hash", "message", "author", "created"],
        [
            (
                v.version,
                v.row_count,
                v.content_hash[:19] + "…",
                v.message,
                v.author,
                v.created_at.strftime("%Y-%m-%d %H:%M"),
            )
            for v in versions
        ],
    )
    if preview:
        table(
            "rows",
            ["id", "input", "expected", "source"],
            [
                (
                    r.id,
                    _short(r.input),
                    _short(r.expected_output),
                    f"{r.source.trace_id}/{r.source.span_id}"
                    if r.source and r.source.trace_id
                    else "",
                )
                for r in preview
            ],
        )


def _short(v: Any, n: int = 60) -> str:
    s = v if isinstance(v, str) else ("" if v is None else str(v))
    return s if len(s) <= n else s[: n - 1] + "…"


_DURATION = re.compile(r"^(\d+)([smhd])$")


def _since_ns(text: str) -> int:
    m = _DURATION.match(text)
    if m:
        secs = int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return time.time_ns() - secs * 1_000_000_000
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1e9)
    except ValueError:
        raise InvalidInputError(
            f"invalid time {text!r}", hint="use 30m, 24h, 7d or an ISO timestamp"
        )


def build_filter(
    filters: list[str], score_below: list[str], limit: int, split: str | None, tags: list[str]
) -> Any:
    """A :class:`CurationFilter` from ``key=value`` options."""
    from keel.datasets.curation import CurationFilter
    from keel.storage.spans import TraceFilter

    tf = TraceFilter()
    for f in filters:
        k, sep, v = f.partition("=")
        k = k.strip().replace("-", "_")
        if not sep or not v:
            raise InvalidInputError(f"--filter expects key=value, got {f!r}")
        if k == "prompt":
            name, _, ver = v.partition("@")
            tf.prompt_name = name
            if ver:
                if not ver.isdigit():
                    raise InvalidInputError("filter prompt=name@N takes a version number")
                tf.prompt_version = int(ver)
        elif k == "prompt_version":
            tf.prompt_version = int(v)
        elif k in ("since", "from"):
            tf.start_from_ns = _since_ns(v)
        elif k in ("until", "to"):
            tf.start_to_ns = _since_ns(v)
        elif k in ("model", "route", "status", "service", "provider", "text", "prompt_name"):
            setattr(tf, k, v)
        else:
            raise InvalidInputError(
                f"unknown filter {k!r}",
                hint="filters: since, until, model, route, prompt (name or name@N), status, service, provider, text",
            )
    below: dict[str, float] = {}
    for s in score_below:
        k, sep, v = s.partition("=")
        try:
            below[k] = float(v)
        except ValueError:
            raise InvalidInputError(f"--score-below expects evaluator=threshold, got {s!r}")
        if not sep or not k:
            raise InvalidInputError(f"--score-below expects evaluator=threshold, got {s!r}")
    return CurationFilter(traces=tf, scores_below=below, limit=limit, split=split, tags=list(tags))


@datasets_app.command("add-from-traces")
@handle_errors
def add_from_traces(
    ctx: typer.Context,
    dataset: str = typer.Option(..., "--dataset", "-d", help="dataset name (created if missing)"),
    filter_: list[str] = typer.Option(
        [], "--filter", help="key=value: since=24h, model=…, route=…, prompt=name@N, status=error …"
    ),
    score_below: list[str] = typer.Option(
        [], "--score-below", help="evaluator=threshold (scores recorded on the span)"
    ),
    limit: int = typer.Option(1000, "--limit", help="at most this many rows"),
    split: str | None = typer.Option(None, "--split"),
    tag: list[str] = typer.Option([], "--tag"),
    message: str | None = typer.Option(None, "--message", "-m"),
    project: str = PROJECT,
) -> None:
    """Add the LLM spans of matching traces as rows (with back-links) in a new version."""
    from keel.datasets.curation import add_from_traces as curate

    store, pid = _open(ctx, project)
    f = build_filter(filter_, score_below, limit, split, tag)
    res = curate(store, pid, dataset, f, message=message, author=_actor())
    _emit_push(ctx, res)
