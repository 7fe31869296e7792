"""Decode OTLP/HTTP trace payloads (protobuf or JSON, optionally gzip) into Keel ``Span`` objects.

The receiver must survive anything a client (or an attacker) sends, so decoding has three
outcomes and no fourth:

* the body cannot be read at all (bad gzip, not protobuf, not JSON, wrong top-level shape) →
  :class:`keel.errors.InvalidInputError` (HTTP 400, never retried by clients);
* the body inflates past the cap (a gzip bomb included) → :class:`PayloadTooLargeError` (413),
  detected while inflating in bounded chunks, never after;
* otherwise a :class:`DecodedBatch`: the good spans plus a count of rejected ones (bad ids,
  wrong types, attribute values nested too deep or too large) and a few reasons, which the
  receiver reports in OTLP ``partial_success``.

Protobuf decoding uses the upb backend of ``protobuf``; per-span work is plain attribute access
and dict building, with pydantic validation skipped (``model_construct``) because every field is
checked here. Ids become lowercase hex; ``bytesValue`` becomes base64 text; kvlists become dicts.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus, construct_trusted
from keel.errors import InvalidInputError, PayloadTooLargeError

# Limits on hostile input. A span breaking one is rejected (counted in partial_success).
MAX_ANY_VALUE_DEPTH = 32
MAX_STRING_BYTES = 4 * 1024 * 1024
MAX_ATTRIBUTES = 4096
MAX_EVENTS = 1024
MAX_NAME_CHARS = 4096
MAX_REJECT_MESSAGES = 5
MAX_TIME_NS = 2**63 - 1  # stored as signed 64-bit

_KINDS = (
    SpanKind.UNSPECIFIED,
    SpanKind.INTERNAL,
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
)
_KIND_NAMES = {f"SPAN_KIND_{k.name}": k for k in _KINDS}
_STATUSES = (SpanStatus.UNSET, SpanStatus.OK, SpanStatus.ERROR)
_STATUS_NAMES = {f"STATUS_CODE_{s.name}": s for s in _STATUSES}
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _construct_span(**values: Any) -> Span:
    return construct_trusted(Span, values)


def _construct_event(**values: Any) -> SpanEvent:
    return construct_trusted(SpanEvent, values)


class SpanRejected(ValueError):
    """One span (not the whole request) is invalid."""


@dataclass
class DecodedBatch:
    """What a payload decoded to: good spans, and how many were rejected and why."""

    spans: list[Span] = field(default_factory=list)
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rejected spans, keeping the first few reasons."""
        self.rejected += count
        if len(self.errors) < MAX_REJECT_MESSAGES:
            self.errors.append(reason)

    @property
    def error_message(self) -> str:
        """The reasons, joined, for ``partial_success.error_message``."""
        more = self.rejected - len(self.errors)
        msg = "; ".join(self.errors)
        return msg + (f" (and {more} more)" if more > 0 and self.errors else "")


# ----------------------------------------------------------------------------- transport


def inflate(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (identity, gzip, deflate), refusing output over ``max_bytes``.

    Inflates in bounded chunks so a bomb costs at most ``max_bytes`` of memory; handles
    concatenated gzip members. Raises :class:`PayloadTooLargeError` or
    :class:`InvalidInputError`.
    """
    enc = (encoding or "identity").strip().lower()
    if enc in ("", "identity"):
        if len(body) > max_bytes:
            raise PayloadTooLargeError(f"request body is over the {max_bytes}-byte limit")
        return body
    if enc == "gzip" or enc == "x-gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS  # zlib-wrapped; raw deflate is retried below
    else:
        raise InvalidInputError(
            f"unsupported Content-Encoding {encoding!r}", hint="send gzip, deflate or identity"
        )
    try:
        return _inflate(body, wbits, max_bytes)
    except zlib.error as e:
        if enc == "deflate":
            try:
                return _inflate(body, -zlib.MAX_WBITS, max_bytes)
            except zlib.error:
                pass
        raise InvalidInputError(f"body is not valid {enc} data: {e}")


def _inflate(data: bytes, wbits: int, max_bytes: int) -> bytes:
    out: list[bytes] = []
    total = 0
    chunk = 1 << 20
    while True:
        d = zlib.decompressobj(wbits)
        buf = data
        while True:
            piece = d.decompress(buf, min(chunk, max_bytes - total + 1))
            total += len(piece)
            if total > max_bytes:
                raise PayloadTooLargeError(
                    f"request body inflates to over the {max_bytes}-byte limit"
                )
            out.append(piece)
            buf = d.unconsumed_tail
            if d.eof or (not buf and not piece):
                break
        if not d.eof:
            raise zlib.error("truncated compressed data")
        data = d.unused_data
        if not data or wbits < 0 or not data.strip(b"\x00"):
            break
    return b"".join(out)


# ----------------------------------------------------------------------------- values


def _check_str(s: str) -> str:
    if (
        len(s) > MAX_STRING_BYTES // 4
        and len(s.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES
    ):
        raise SpanRejected(f"attribute value over {MAX_STRING_BYTES} bytes")
    return s


def _pb_value(v: Any, depth: int = 0) -> Any:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return _check_str(v.string_value)
    if kind == "int_value":
        return v.int_value
    if kind == "double_value":
        return v.double_value
    if kind == "bool_value":
        return v.bool_value
    if kind is None:
        return None
    if depth >= MAX_ANY_VALUE_DEPTH:
        raise SpanRejected(f"attribute value nested deeper than {MAX_ANY_VALUE_DEPTH}")
    if kind == "array_value":
        return [_pb_value(x, depth + 1) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        if len(v.bytes_value) > MAX_STRING_BYTES:
            raise SpanRejected(f"attribute value over {MAX_STRING_BYTES} bytes")
        return base64.b64encode(v.bytes_value).decode("ascii")
    raise SpanRejected(f"unsupported AnyValue field {kind} (string tables are not accepted here)")


def _pb_attrs(kvs: Any) -> dict[str, Any]:
    if len(kvs) > MAX_ATTRIBUTES:
        raise SpanRejected(f"more than {MAX_ATTRIBUTES} attributes")
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        kind = v.WhichOneof("value")
        # The scalar cases are inlined: they are nearly every attribute on the hot path.
        if kind == "string_value":
            s = v.string_value
            out[kv.key] = _check_str(s) if len(s) > 65536 else s
        elif kind == "int_value":
            out[kv.key] = v.int_value
        else:
            out[kv.key] = _pb_value(v)
    return out


def _json_value(v: Any, depth: int = 0) -> Any:
    if not isinstance(v, dict):
        if v is None:
            return None
        raise SpanRejected("attribute value is not an AnyValue object")
    for key, val in v.items():
        if key == "stringValue" or key == "string_value":
            if not isinstance(val, str):
                raise SpanRejected("stringValue is not a string")
            return _check_str(val)
        if key == "intValue" or key == "int_value":
            n = _json_int(val, "intValue")
            if not -(2**63) <= n < 2**63:
                raise SpanRejected("intValue is outside int64")
            return n
        if key == "doubleValue" or key == "double_value":
            return _json_float(val)
        if key == "boolValue" or key == "bool_value":
            if not isinstance(val, bool):
                raise SpanRejected("boolValue is not a boolean")
            return val
        if depth >= MAX_ANY_VALUE_DEPTH:
            raise SpanRejected(f"attribute value nested deeper than {MAX_ANY_VALUE_DEPTH}")
        if key == "arrayValue" or key == "array_value":
            vals = _json_list(_json_obj(val, "arrayValue").get("values"), "arrayValue.values")
            return [_json_value(x, depth + 1) for x in vals]
        if key == "kvlistValue" or key == "kvlist_value":
            vals = _json_list(_json_obj(val, "kvlistValue").get("values"), "kvlistValue.values")
            return _json_kvs(vals, depth + 1)
        if key == "bytesValue" or key == "bytes_value":
            if not isinstance(val, str):
                raise SpanRejected("bytesValue is not a base64 string")
            try:
                raw = base64.b64decode(val, validate=True)
            except (binascii.Error, ValueError):
                raise SpanRejected("bytesValue is not valid base64")
            return base64.b64encode(raw).decode("ascii")
        if key in ("stringValueStrindex", "string_value_strindex"):
            raise SpanRejected("string table references are not accepted here")
        # unknown fields are ignored, as the OTLP JSON mapping requires
    return None


def _json_kvs(kvs: Iterable[Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kv in enumerate(kvs):
        if i >= MAX_ATTRIBUTES:
            raise SpanRejected(f"more than {MAX_ATTRIBUTES} attributes")
        if not isinstance(kv, dict):
            raise SpanRejected("attribute is not a {key, value} object")
        key = kv.get("key")
        if not isinstance(key, str):
            raise SpanRejected("attribute key is not a string")
        out[key] = _json_value(kv.get("value"), depth)
    return out


def _json_obj(v: Any, what: str) -> dict[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise SpanRejected(f"{what} is not an object")
    return v


def _json_list(v: Any, what: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise SpanRejected(f"{what} is not a list")
    return v


def _json_int(v: Any, what: str) -> int:
    if isinstance(v, bool):
        raise SpanRejected(f"{what} is not an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            pass
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise SpanRejected(f"{what} is not an integer")


def _json_float(v: Any) -> float:
    if isinstance(v, bool):
        raise SpanRejected("doubleValue is not a number")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):
        return float(v.replace("Infinity", "inf"))
    raise SpanRejected("doubleValue is not a number")


def _json_id(v: Any, nbytes: int, what: str, *, optional: bool = False) -> str | None:
    if v is None or v == "":
        if optional:
            return None
        raise SpanRejected(f"{what} is missing")
    if not isinstance(v, str):
        raise SpanRejected(f"{what} is not a string")
    if len(v) == nbytes * 2:
        try:
            bytes.fromhex(v)
        except ValueError:
            raise SpanRejected(f"{what} is not hex")
        out = v.lower()
    else:
        # Tolerate the proto3 canonical JSON form (base64) that some producers send.
        try:
            raw = base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != nbytes:
            raise SpanRejected(f"{what} must be {nbytes * 2} hex characters")
        out = raw.hex()
    if out == "0" * (nbytes * 2):
        if optional:
            return None
        raise SpanRejected(f"{what} is all zeros")
    return out


def _g(d: dict[str, Any], camel: str, snake: str) -> Any:
    v = d.get(camel)
    return d.get(snake) if v is None else v


# ----------------------------------------------------------------------------- protobuf


try:  # the compiled fast path, when built (tools/build_ext.py; `make install` builds it)
    from keel.otlp import _fastpb as _fast  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the install
    _fast = None

FAST_PATH = _fast is not None


def estimate_spans(body: bytes, content_type: str | None, encoding: str | None) -> int:
    """How many spans a request body probably holds, before decoding it (queue accounting).

    Exact for plain protobuf bodies when the compiled fast path is built; otherwise one span
    per 512 bytes, which overestimates realistic LLM spans (the safe side for a queue bound).
    """
    if (
        _fast is not None
        and media_type(content_type) == PROTOBUF
        and (encoding or "identity").strip().lower() in ("", "identity")
    ):
        n = _fast.count_spans(body)
        if n >= 0:
            return max(1, int(n))
    return len(body) // 512 + 1


def decode_protobuf(body: bytes, project_id: str = "default", *, fast: bool = True) -> DecodedBatch:
    """Decode an ``ExportTraceServiceRequest`` in protobuf form.

    With the compiled fast path built, the common payload shape is read straight from the
    wire; anything else (including every error and rejection) is decoded here in Python,
    so both give the same result. ``fast=False`` forces the Python decoder.
    """
    if fast and _fast is not None:
        limits = (MAX_STRING_BYTES, MAX_ATTRIBUTES, MAX_EVENTS, MAX_NAME_CHARS)
        spans = _fast.decode_spans(
            body, project_id, construct_trusted, Span, SpanEvent, _KINDS, _STATUSES, limits
        )
        if spans is not None:
            return DecodedBatch(spans=spans)
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        req = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RecursionError, ValueError) as e:
        raise InvalidInputError(f"body is not a valid OTLP protobuf ExportTraceServiceRequest: {e}")
    out = DecodedBatch()
    spans = out.spans
    for rs in req.resource_spans:
        try:
            resource = _pb_attrs(rs.resource.attributes)
        except SpanRejected as e:
            out.reject(f"resource: {e}", sum(len(ss.spans) for ss in rs.scope_spans))
            continue
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for sp in ss.spans:
                try:
                    spans.append(_pb_span(sp, resource, scope, project_id))
                except SpanRejected as e:
                    out.reject(f"span {sp.span_id.hex() or '?'}: {e}")
    return out


def _pb_span(sp: Any, resource: dict[str, Any], scope: str | None, project_id: str) -> Span:
    tid = sp.trace_id
    sid = sp.span_id
    if len(tid) != 16 or tid == b"\x00" * 16:
        raise SpanRejected("trace_id must be 16 non-zero bytes")
    if len(sid) != 8 or sid == b"\x00" * 8:
        raise SpanRejected("span_id must be 8 non-zero bytes")
    pid = sp.parent_span_id
    if pid and (len(pid) != 8):
        raise SpanRejected("parent_span_id must be 8 bytes")
    name = sp.name
    if len(name) > MAX_NAME_CHARS:
        raise SpanRejected(f"span name over {MAX_NAME_CHARS} characters")
    kind = sp.kind
    st = sp.status
    code = st.code
    events = sp.events
    if len(events) > MAX_EVENTS:
        raise SpanRejected(f"more than {MAX_EVENTS} events")
    start = sp.start_time_unix_nano
    end = sp.end_time_unix_nano
    if start > MAX_TIME_NS or end > MAX_TIME_NS:
        raise SpanRejected("timestamp beyond the year 2262")
    return _construct_span(
        trace_id=tid.hex(),
        span_id=sid.hex(),
        parent_span_id=pid.hex() if pid and pid != b"\x00" * 8 else None,
        name=name,
        kind=_KINDS[kind] if 0 <= kind < 6 else SpanKind.UNSPECIFIED,
        start_time_ns=start,
        end_time_ns=end,
        status=_STATUSES[code] if 0 <= code < 3 else SpanStatus.UNSET,
        status_message=st.message or None,
        attributes=_pb_attrs(sp.attributes),
        events=[
            _construct_event(
                name=ev.name, time_ns=ev.time_unix_nano, attributes=_pb_attrs(ev.attributes)
            )
            for ev in events
        ],
        resource=resource,
        scope=scope,
        project_id=project_id,
    )


# ----------------------------------------------------------------------------- JSON


def decode_json(body: bytes, project_id: str = "default") -> DecodedBatch:
    """Decode an ``ExportTraceServiceRequest`` in the OTLP JSON mapping."""
    try:
        doc = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError) as e:
        raise InvalidInputError(f"body is not valid JSON (or not UTF-8): {e}")
    if not isinstance(doc, dict):
        raise InvalidInputError("OTLP JSON body must be an object with resourceSpans")
    rss = _g(doc, "resourceSpans", "resource_spans")
    if rss is None:
        return DecodedBatch()
    if not isinstance(rss, list):
        raise InvalidInputError("resourceSpans must be a list")
    out = DecodedBatch()
    for rs in rss:
        if not isinstance(rs, dict):
            raise InvalidInputError("each resourceSpans entry must be an object")
        scope_spans = _g(rs, "scopeSpans", "scope_spans") or []
        if not isinstance(scope_spans, list) or not all(isinstance(x, dict) for x in scope_spans):
            raise InvalidInputError("scopeSpans must be a list of objects")
        try:
            res_obj = _json_obj(rs.get("resource"), "resource")
            resource = _json_kvs(_json_list(res_obj.get("attributes"), "resource.attributes"))
        except SpanRejected as e:
            out.reject(f"resource: {e}", sum(_count(ss) for ss in scope_spans))
            continue
        for ss in scope_spans:
            spans = _g(ss, "spans", "spans") or []
            if not isinstance(spans, list):
                raise InvalidInputError("spans must be a list")
            scope_obj = ss.get("scope")
            scope = scope_obj.get("name") if isinstance(scope_obj, dict) else None
            if not isinstance(scope, str) or not scope:
                scope = None
            for sp in spans:
                try:
                    out.spans.append(_json_span(sp, resource, scope, project_id))
                except SpanRejected as e:
                    sid = sp.get("spanId") if isinstance(sp, dict) else None
                    out.reject(f"span {sid if isinstance(sid, str) else '?'}: {e}")
    return out


def _count(ss: dict[str, Any]) -> int:
    spans = ss.get("spans")
    return len(spans) if isinstance(spans, list) else 0


def _enum(v: Any, table: tuple[Any, ...], names: dict[str, Any], default: Any) -> Any:
    if v is None:
        return table[0]
    if isinstance(v, str) and v in names:
        return names[v]
    n = _json_int(v, "enum")
    return table[n] if 0 <= n < len(table) else default


def _json_span(sp: Any, resource: dict[str, Any], scope: str | None, project_id: str) -> Span:
    if not isinstance(sp, dict):
        raise SpanRejected("span is not an object")
    name = sp.get("name", "")
    if not isinstance(name, str):
        raise SpanRejected("name is not a string")
    if len(name) > MAX_NAME_CHARS:
        raise SpanRejected(f"span name over {MAX_NAME_CHARS} characters")
    status = _json_obj(sp.get("status"), "status")
    smsg = status.get("message")
    if smsg is not None and not isinstance(smsg, str):
        raise SpanRejected("status.message is not a string")
    events_in = _json_list(sp.get("events"), "events")
    if len(events_in) > MAX_EVENTS:
        raise SpanRejected(f"more than {MAX_EVENTS} events")
    events = []
    for ev in events_in:
        ev = _json_obj(ev, "event")
        ev_name = ev.get("name", "")
        if not isinstance(ev_name, str):
            raise SpanRejected("event name is not a string")
        events.append(
            _construct_event(
                name=ev_name,
                time_ns=_json_int(_g(ev, "timeUnixNano", "time_unix_nano") or 0, "timeUnixNano"),
                attributes=_json_kvs(_json_list(ev.get("attributes"), "event.attributes")),
            )
        )
    start = _json_int(_g(sp, "startTimeUnixNano", "start_time_unix_nano") or 0, "startTimeUnixNano")
    end = _json_int(_g(sp, "endTimeUnixNano", "end_time_unix_nano") or 0, "endTimeUnixNano")
    if not (0 <= start <= MAX_TIME_NS and 0 <= end <= MAX_TIME_NS):
        raise SpanRejected("timestamps must be nanoseconds between 1970 and 2262")
    return _construct_span(
        trace_id=_json_id(_g(sp, "traceId", "trace_id"), 16, "traceId") or "",
        span_id=_json_id(_g(sp, "spanId", "span_id"), 8, "spanId") or "",
        parent_span_id=_json_id(
            _g(sp, "parentSpanId", "parent_span_id"), 8, "parentSpanId", optional=True
        ),
        name=name,
        kind=_enum(sp.get("kind"), _KINDS, _KIND_NAMES, SpanKind.UNSPECIFIED),
        start_time_ns=start,
        end_time_ns=end,
        status=_enum(status.get("code"), _STATUSES, _STATUS_NAMES, SpanStatus.UNSET),
        status_message=smsg or None,
        attributes=_json_kvs(_json_list(sp.get("attributes"), "attributes")),
        events=events,
        resource=resource,
        scope=scope,
        project_id=project_id,
    )


# ----------------------------------------------------------------------------- entry point

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def media_type(content_type: str | None) -> str | None:
    """``PROTOBUF``, ``JSON`` or None (unsupported) for a ``Content-Type`` header."""
    mt = (content_type or "").split(";", 1)[0].strip().lower()
    if mt in (PROTOBUF, "application/protobuf", "application/vnd.google.protobuf"):
        return PROTOBUF
    if mt == JSON:
        return JSON
    return None


def decode_request(
    body: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_bytes: int = 64 * 1024 * 1024,
    project_id: str = "default",
) -> DecodedBatch:
    """Inflate and decode one OTLP/HTTP trace export body."""
    mt = media_type(content_type)
    if mt is None:
        raise InvalidInputError(
            f"unsupported Content-Type {content_type!r}",
            hint="send application/x-protobuf or application/json",
            status=415,
            code="unsupported_media_type",
        )
    raw = inflate(body, content_encoding, max_bytes)
    decoder: Callable[[bytes, str], DecodedBatch] = (
        decode_protobuf if mt == PROTOBUF else decode_json
    )
    return decoder(raw, project_id)
