"""Span ⇄ SQL row conversion on the ingest and read paths (compiled twin: ``_rows_c``).

Plain functions over plain data and no tables, so that ``tools/build_ext.py`` can compile this
module as-is (see :mod:`keel._accel`); :mod:`keel.storage.sql.spans` owns the schema and the
queries. The column order of :func:`span_row` is ``spans``' column order.
"""

from __future__ import annotations

from typing import Any

import orjson

from keel._accel import use_compiled
from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus, construct_trusted
from keel.storage.spans import IndexRow, SpanRecord

_KINDS = {k.value: k for k in SpanKind}
_STATUSES = {s.value: s for s in SpanStatus}
_dumps = orjson.dumps
_loads = orjson.loads


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def blob(value: Any) -> bytes:
    try:
        return _dumps(value, default=_json_default)
    except TypeError:  # ints beyond 64 bits and similar oddities from in-process callers
        return _dumps(_sanitize(value), default=_json_default)


def _sanitize(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _sanitize(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_sanitize(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        return str(v)
    return v


def text(v: Any) -> Any:
    """Text for a TEXT column: Postgres refuses NUL characters, so they are dropped everywhere."""
    if isinstance(v, str) and "\x00" in v:
        return v.replace("\x00", "")
    return v


# kind/status as stored: the enum members (StrEnum, so their text hashes alike) → their value
_KIND_TEXT = {k: k.value for k in SpanKind}
_STATUS_TEXT = {st: st.value for st in SpanStatus}
_NO_LLM: tuple[Any, ...] = (0, None, None, None, None, None, None, None, None, None, None, None)


def span_row(
    rec: SpanRecord, resources: dict[int, tuple[Any, bytes]] | None = None
) -> tuple[Any, ...]:
    """The ``spans`` row of a record. ``resources`` memoizes the resource blob per resource
    object: every span of one OTLP ResourceSpans shares one dict, encoded once per batch."""
    s = rec.span
    llm = rec.llm
    res = s.resource
    if not res:
        res_blob = b"{}"
        svc = None
    else:
        if resources is None:
            res_blob = blob(res)
        else:
            hit = resources.get(id(res))
            if hit is None or hit[0] is not res:
                # keep the object alive with its blob so its id cannot be reused within the batch
                hit = resources[id(res)] = (res, blob(res))
            res_blob = hit[1]
        svc = res.get("service.name")
        svc = text(svc) if isinstance(svc, str) else None
    ev = s.events
    events = (
        blob([{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in ev])
        if ev
        else b"[]"
    )
    if llm is None:
        llm_part = _NO_LLM
    else:
        d = llm.__dict__  # plain reads of the model's fields (hot path)
        llm_part = (
            1,
            text(d["operation"]),
            text(d["provider"]),
            text(d["request_model"]),
            text(d["response_model"]),
            d["input_tokens"],
            d["output_tokens"],
            d["cost_usd"],
            text(d["cost_source"]),
            text(d["route"]),
            text(d["prompt_name"]),
            d["prompt_version"],
        )
    kind = _KIND_TEXT.get(s.kind)
    if kind is None:
        kind = str(s.kind.value if isinstance(s.kind, SpanKind) else s.kind)
    status = _STATUS_TEXT.get(s.status)
    if status is None:
        status = str(s.status.value if isinstance(s.status, SpanStatus) else s.status)
    return (
        s.project_id,
        s.trace_id,
        s.span_id,
        s.parent_span_id,
        text(s.name),
        kind,
        status,
        s.start_time_ns,
        s.end_time_ns,
        svc,
        *llm_part,
        text(s.scope),
        text(s.status_message),
        blob(s.attributes),
        events,
        res_blob,
    )


def span_from_row(r: Any) -> Span:
    return construct_trusted(
        Span,
        dict(
            trace_id=r.trace_id,
            span_id=r.span_id,
            parent_span_id=r.parent_span_id,
            name=r.name,
            kind=_KINDS.get(r.kind, SpanKind.UNSPECIFIED),
            start_time_ns=int(r.start_ns),
            end_time_ns=int(r.end_ns),
            status=_STATUSES.get(r.status, SpanStatus.UNSET),
            status_message=r.status_message,
            attributes=_loads(r.attributes),
            events=[construct_trusted(SpanEvent, e) for e in _loads(r.events)],
            resource=_loads(r.resource),
            scope=r.scope,
            project_id=r.project_id,
        ),
    )


def batch_index(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, IndexRow]]:
    """The index rows of a batch's span rows, per (project, trace); the first copy of a span
    wins, as in the insert."""
    batch: dict[tuple[str, str], dict[str, IndexRow]] = {}
    for r in rows:
        spans = batch.get((r[0], r[1]))
        if spans is None:
            spans = batch[(r[0], r[1])] = {}
        if r[2] not in spans:
            spans[r[2]] = IndexRow(
                r[2],
                r[3],
                r[4],
                r[7],
                r[8],
                r[6],
                r[9],
                r[15],
                r[16],
                r[17],
                r[13],
                r[14],
                r[12],
                r[19],
                r[20],
                r[21],
                bool(r[10]),
                r[11],
            )
    return batch


use_compiled(globals(), ("span_row", "batch_index", "span_from_row"))
