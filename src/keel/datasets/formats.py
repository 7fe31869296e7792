"""Row codecs for JSONL, CSV and Parquet, streamed in both directions.

Readers yield :class:`~keel.core.datasets.Row` one at a time from a file they read
incrementally; writers take an iterator of rows and write as they go, so neither side holds a
dataset in memory.

Mapping of a row to a flat record (every format): the columns are the row's fields
(``id, input, expected_output, context, agent_steps, metadata, tags, split, source``). Keys a
record has beyond those go into ``metadata``. ``id`` is informational on import: a stored
row's id derives from its content.

- JSONL: one canonical JSON object per line (keys sorted), so equal rows give equal bytes.
- CSV: ``id`` and ``split`` as text; every other column holds a string as-is, or JSON when the
  value is not a string or when the string itself would read as JSON (``"42"``, ``"true"``,
  ``"[1]"``) — and on import a cell that parses as JSON is JSON, anything else a string. An
  empty cell is "absent". Round trips are exact.
- Parquet: structured columns as JSON text, marked in the schema metadata
  (``keel.format = row-json-v1``); files written by other tools are read with their native
  column types.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from keel.core.datasets import Row
from keel.core.hashing import canonical_json
from keel.errors import InvalidInputError

FORMATS = ("jsonl", "csv", "parquet")
COLUMNS = (
    "id",
    "input",
    "expected_output",
    "context",
    "agent_steps",
    "metadata",
    "tags",
    "split",
    "source",
)
_TEXT_COLUMNS = ("id", "split")
_LIST_DEFAULT = ("context", "agent_steps", "tags")
PARQUET_MARK = b"row-json-v1"
MAX_LINE_BYTES = 16 * 1024 * 1024


def detect_format(path: str | Path, fmt: str | None = None) -> str:
    """The format named, or the one the file's extension implies."""
    if fmt:
        if fmt not in FORMATS:
            raise InvalidInputError(f"unknown format {fmt!r}", hint="use jsonl, csv or parquet")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "jsonl"
    if suffix in ("csv", "parquet"):
        return suffix
    if suffix == "pq":
        return "parquet"
    raise InvalidInputError(
        f"cannot tell the format of {path}", hint="name it .jsonl/.csv/.parquet or pass --format"
    )


def record_to_row(rec: dict[str, Any], where: str) -> Row:
    """A row from a flat record; unknown keys go into metadata."""
    if not isinstance(rec, dict):
        raise InvalidInputError(f"{where}: expected an object, got {type(rec).__name__}")
    known = {k: v for k, v in rec.items() if k in COLUMNS and v is not None}
    extra = {k: v for k, v in rec.items() if k not in COLUMNS}
    if extra:
        meta = known.get("metadata") or {}
        if not isinstance(meta, dict):
            raise InvalidInputError(f"{where}: metadata must be an object")
        known["metadata"] = {**extra, **meta}
    if "id" in known and not isinstance(known["id"], str):
        known["id"] = str(known["id"])
    try:
        return Row.model_validate(known)
    except ValueError as e:
        raise InvalidInputError(f"{where}: {str(e).splitlines()[0]}: {e}")


def row_to_record(row: Row) -> dict[str, Any]:
    """A flat record (every column present; JSON-safe values)."""
    d = row.model_dump(mode="json")
    return {c: d.get(c) for c in COLUMNS}


# -- JSONL -----------------------------------------------------------------------------------


def read_jsonl(fp: IO[bytes], *, where: str = "input") -> Iterator[Row]:
    """Rows from a JSONL byte stream (blank lines skipped)."""
    for n, line in enumerate(fp, start=1):
        if len(line) > MAX_LINE_BYTES:
            raise InvalidInputError(f"{where}:{n}: line longer than 16 MiB")
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise InvalidInputError(f"{where}:{n}: invalid JSON: {e}")
        yield record_to_row(rec, f"{where}:{n}")


def write_jsonl(rows: Iterable[Row], fp: IO[bytes]) -> int:
    """Write canonical JSON lines; return the row count."""
    n = 0
    for r in rows:
        fp.write(canonical_json(row_to_record(r)) + b"\n")
        n += 1
    return n


# -- CSV -------------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_JSON_START = frozenset('{["-0123456789tfn')


def _json_cell(cell: str) -> Any:
    # Most cells are plain text: decide from the first character before trying to parse.
    if cell.lstrip(" \t\n\r")[:1] not in _JSON_START:
        raise ValueError("not JSON")
    return json.loads(cell, parse_constant=_reject_constant)


def _cell_out(value: Any, column: str) -> str:
    if value is None:
        return ""
    if column in _TEXT_COLUMNS:
        return str(value)
    if isinstance(value, str):
        if value == "":
            return '""'
        try:
            _json_cell(value)
        except ValueError:
            return value
        return json.dumps(value, ensure_ascii=False)
    return canonical_json(value).decode("utf-8")


def _cell_in(cell: str, column: str) -> Any:
    if cell == "":
        return None
    if column in _TEXT_COLUMNS:
        return cell
    try:
        return _json_cell(cell)
    except ValueError:
        return cell


def read_csv(fp: IO[str], *, where: str = "input") -> Iterator[Row]:
    """Rows from a CSV text stream with a header line."""
    reader = csv.DictReader(fp)
    if reader.fieldnames is None:
        return
    csv.field_size_limit(MAX_LINE_BYTES)
    for n, rec in enumerate(reader, start=2):
        if None in rec:
            raise InvalidInputError(f"{where}:{n}: more cells than header columns")
        yield record_to_row(
            {k: _cell_in(v or "", k) for k, v in rec.items() if k is not None}, f"{where}:{n}"
        )


def write_csv(rows: Iterable[Row], fp: IO[str]) -> int:
    """Write CSV with a header; return the row count."""
    # RFC 4180 line ends: with "\r\n" as the terminator the writer quotes every cell holding a
    # bare "\r" too (with "\n" alone it did not, and the reader split the row there).
    w = csv.writer(fp, lineterminator="\r\n")
    w.writerow(COLUMNS)
    n = 0
    for r in rows:
        rec = row_to_record(r)
        w.writerow([_cell_out(rec[c], c) for c in COLUMNS])
        n += 1
    return n


# -- Parquet ---------------------------------------------------------------------------------


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [pa.field(c, pa.string()) for c in COLUMNS], metadata={b"keel.format": PARQUET_MARK}
    )


def read_parquet(path: str | Path, *, batch_size: int = 1000) -> Iterator[Row]:
    """Rows from a Parquet file, read batch by batch."""
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(str(path))
    except Exception as e:
        raise InvalidInputError(f"{path}: not a readable Parquet file: {e}")
    meta = f.schema_arrow.metadata or {}
    ours = meta.get(b"keel.format") == PARQUET_MARK
    n = 0
    for batch in f.iter_batches(batch_size=batch_size):
        for rec in batch.to_pylist():
            n += 1
            if ours:
                rec = {
                    k: (v if v is None or k in _TEXT_COLUMNS else orjson.loads(v))
                    for k, v in rec.items()
                }
            yield record_to_row(rec, f"{path}: row {n}")


def write_parquet(rows: Iterable[Row], path: str | Path, *, batch_size: int = 1000) -> int:
    """Write rows as Parquet in row groups of ``batch_size``; return the row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    n = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as w:
        cols: dict[str, list[str | None]] = {c: [] for c in COLUMNS}

        def flush() -> None:
            if cols["id"]:
                w.write_table(pa.table(cols, schema=schema))
                for v in cols.values():
                    v.clear()

        for r in rows:
            rec = row_to_record(r)
            for c in COLUMNS:
                v = rec[c]
                if v is None:
                    cols[c].append(None)
                elif c in _TEXT_COLUMNS:
                    cols[c].append(str(v))
                else:
                    cols[c].append(canonical_json(v).decode("utf-8"))
            n += 1
            if len(cols["id"]) >= batch_size:
                flush()
        flush()
    return n


# -- by path ---------------------------------------------------------------------------------


def read_rows(path: str | Path, fmt: str | None = None) -> Iterator[Row]:
    """Rows of a file, streamed (format from ``fmt`` or the extension)."""
    kind = detect_format(path, fmt)
    if kind == "parquet":
        yield from read_parquet(path)
        return
    if kind == "jsonl":
        with open(path, "rb") as fb:
            yield from read_jsonl(fb, where=str(path))
        return
    with open(path, encoding="utf-8", newline="") as ft:
        yield from read_csv(ft, where=str(path))


def write_rows(rows: Iterable[Row], path: str | Path, fmt: str | None = None) -> int:
    """Write rows to a file, streamed; return the count."""
    kind = detect_format(path, fmt)
    if kind == "parquet":
        return write_parquet(rows, path)
    if kind == "jsonl":
        with open(path, "wb") as fb:
            return write_jsonl(rows, fb)
    with open(path, "w", encoding="utf-8", newline="") as ft:
        return write_csv(rows, ft)


def dumps(rows: Iterable[Row], fmt: str) -> bytes:
    """Rows encoded in memory (small exports over the API)."""
    if fmt == "jsonl":
        b = io.BytesIO()
        write_jsonl(rows, b)
        return b.getvalue()
    if fmt == "csv":
        s = io.StringIO()
        write_csv(rows, s)
        return s.getvalue().encode("utf-8")
    raise InvalidInputError(f"{fmt} cannot be encoded in memory here")
