"""Encode Keel spans as OTLP/HTTP trace export bodies (protobuf or the OTLP JSON mapping).

The inverse of :mod:`keel.otlp.decode`, used to forward spans written in-process (the gateway's)
to another collector, and by tests and benchmarks to build realistic payloads. Spans sharing a
resource and scope are grouped as OTLP does.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from keel.core.spans import Span, SpanKind, SpanStatus

_KIND_NUM = {k: i for i, k in enumerate(SpanKind)}
_STATUS_NUM = {s: i for i, s in enumerate(SpanStatus)}


def _groups(
    spans: Iterable[Span],
) -> list[tuple[dict[str, Any], list[tuple[str | None, list[Span]]]]]:
    by_res: dict[bytes, tuple[dict[str, Any], dict[str | None, list[Span]]]] = {}
    for s in spans:
        key = orjson.dumps(s.resource, option=orjson.OPT_SORT_KEYS, default=str)
        entry = by_res.setdefault(key, (s.resource, {}))
        entry[1].setdefault(s.scope, []).append(s)
    return [(res, list(scopes.items())) for res, scopes in by_res.values()]


def _pb_set_value(target: Any, v: Any) -> None:
    if isinstance(v, bool):
        target.bool_value = v
    elif isinstance(v, int):
        target.int_value = v
    elif isinstance(v, float):
        target.double_value = v
    elif isinstance(v, str):
        target.string_value = v
    elif isinstance(v, bytes):
        target.bytes_value = v
    elif isinstance(v, list | tuple):
        arr = target.array_value
        arr.SetInParent()
        for x in v:
            _pb_set_value(arr.values.add(), x)
    elif isinstance(v, dict):
        kvl = target.kvlist_value
        kvl.SetInParent()
        for k, x in v.items():
            kv = kvl.values.add()
            kv.key = str(k)
            _pb_set_value(kv.value, x)
    elif v is not None:
        target.string_value = str(v)


def _pb_attrs(target: Any, attrs: dict[str, Any]) -> None:
    for k, v in attrs.items():
        kv = target.add()
        kv.key = k
        _pb_set_value(kv.value, v)


def encode_protobuf(spans: Sequence[Span]) -> bytes:
    """An ``ExportTraceServiceRequest`` holding ``spans``, serialized."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    req = ExportTraceServiceRequest()
    for resource, scopes in _groups(spans):
        rs = req.resource_spans.add()
        _pb_attrs(rs.resource.attributes, resource)
        for scope, group in scopes:
            ss = rs.scope_spans.add()
            if scope:
                ss.scope.name = scope
            for s in group:
                p = ss.spans.add()
                p.trace_id = bytes.fromhex(s.trace_id)
                p.span_id = bytes.fromhex(s.span_id)
                if s.parent_span_id:
                    p.parent_span_id = bytes.fromhex(s.parent_span_id)
                p.name = s.name
                p.kind = _KIND_NUM.get(SpanKind(s.kind), 0)  # type: ignore[assignment]
                p.start_time_unix_nano = s.start_time_ns
                p.end_time_unix_nano = s.end_time_ns
                p.status.code = _STATUS_NUM.get(SpanStatus(s.status), 0)  # type: ignore[assignment]
                if s.status_message:
                    p.status.message = s.status_message
                _pb_attrs(p.attributes, s.attributes)
                for e in s.events:
                    pe = p.events.add()
                    pe.name = e.name
                    pe.time_unix_nano = e.time_ns
                    _pb_attrs(pe.attributes, e.attributes)
    return req.SerializeToString()


def _json_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, bytes):
        return {"bytesValue": base64.b64encode(v).decode("ascii")}
    if isinstance(v, list | tuple):
        return {"arrayValue": {"values": [_json_value(x) for x in v]}}
    if isinstance(v, dict):
        return {"kvlistValue": {"values": _json_attrs(v)}}
    if v is None:
        return {}
    return {"stringValue": str(v)}


def _json_attrs(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": str(k), "value": _json_value(v)} for k, v in attrs.items()]


def to_json_dict(spans: Sequence[Span]) -> dict[str, Any]:
    """The OTLP JSON form of an export request holding ``spans`` (hex ids, int enums)."""
    out = []
    for resource, scopes in _groups(spans):
        scope_spans = []
        for scope, group in scopes:
            items = []
            for s in group:
                d: dict[str, Any] = {
                    "traceId": s.trace_id,
                    "spanId": s.span_id,
                    "name": s.name,
                    "kind": _KIND_NUM.get(SpanKind(s.kind), 0),
                    "startTimeUnixNano": str(s.start_time_ns),
                    "endTimeUnixNano": str(s.end_time_ns),
                    "attributes": _json_attrs(s.attributes),
                    "status": {"code": _STATUS_NUM.get(SpanStatus(s.status), 0)},
                }
                if s.parent_span_id:
                    d["parentSpanId"] = s.parent_span_id
                if s.status_message:
                    d["status"]["message"] = s.status_message
                if s.events:
                    d["events"] = [
                        {
                            "name": e.name,
                            "timeUnixNano": str(e.time_ns),
                            "attributes": _json_attrs(e.attributes),
                        }
                        for e in s.events
                    ]
                items.append(d)
            entry: dict[str, Any] = {"spans": items}
            if scope:
                entry["scope"] = {"name": scope}
            scope_spans.append(entry)
        out.append({"resource": {"attributes": _json_attrs(resource)}, "scopeSpans": scope_spans})
    return {"resourceSpans": out}


def encode_json(spans: Sequence[Span]) -> bytes:
    """The OTLP JSON body for ``spans``."""
    return orjson.dumps(to_json_dict(spans))
