"""The OTLP decoder: round trips and property tests (hostile bytes never escape as a crash)."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from _ingest_helpers import agent_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core.spans import Span
from keel.errors import InvalidInputError, PayloadTooLargeError
from keel.otlp.decode import DecodedBatch, decode_json, decode_protobuf, decode_request, inflate
from keel.otlp.encode import encode_json, encode_protobuf, to_json_dict

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.text(max_size=30)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
attrs = st.dictionaries(st.text(min_size=1, max_size=20), values, max_size=6)
hex16 = st.binary(min_size=16, max_size=16).filter(any).map(bytes.hex)
hex8 = st.binary(min_size=8, max_size=8).filter(any).map(bytes.hex)


@st.composite
def spans(draw: st.DrawFn) -> Span:
    start = draw(st.integers(min_value=0, max_value=2**62))
    return Span(
        trace_id=draw(hex16),
        span_id=draw(hex8),
        parent_span_id=draw(st.none() | hex8),
        name=draw(st.text(max_size=40)),
        kind=draw(
            st.sampled_from(["unspecified", "internal", "server", "client", "producer", "consumer"])
        ),
        start_time_ns=start,
        end_time_ns=start + draw(st.integers(min_value=0, max_value=10**12)),
        status=draw(st.sampled_from(["unset", "ok", "error"])),
        status_message=draw(st.none() | st.text(min_size=1, max_size=20)),
        attributes=draw(attrs),
        resource=draw(attrs),
        scope=draw(st.none() | st.text(min_size=1, max_size=10)),
    )


def _norm(v):  # type: ignore[no-untyped-def]
    """Protobuf and JSON keep ints and floats apart; -0.0 == 0.0 is fine."""
    return orjson.loads(orjson.dumps(v))


@FAST
@given(st.lists(spans(), min_size=1, max_size=5))
def test_protobuf_and_json_round_trip(batch):
    for decoded in (decode_protobuf(encode_protobuf(batch)), decode_json(encode_json(batch))):
        assert decoded.rejected == 0
        got = sorted(decoded.spans, key=lambda s: s.span_id + s.trace_id)
        want = sorted(batch, key=lambda s: s.span_id + s.trace_id)
        assert [_norm(s.model_dump()) for s in got] == [_norm(s.model_dump()) for s in want]


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash_the_protobuf_decoder(data):
    try:
        out = decode_protobuf(data)
    except InvalidInputError:
        return
    assert isinstance(out, DecodedBatch)
    for s in out.spans:
        orjson.dumps(s.attributes)  # whatever was accepted can be stored


@FAST
@given(st.binary(max_size=500), st.integers(min_value=0, max_value=4000))
def test_mutated_protobuf_never_crashes(noise, at):
    body = bytearray(encode_protobuf(agent_trace("mut")))
    at = at % len(body)
    body[at : at + len(noise)] = noise
    try:
        out = decode_protobuf(bytes(body))
    except InvalidInputError:
        return
    assert out.rejected + len(out.spans) >= 0


json_junk = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda ch: (
        st.lists(ch, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "arrayValue",
                    "kvlistValue",
                    "values",
                    "name",
                    "status",
                    "code",
                    "kind",
                    "events",
                    "resource",
                    "startTimeUnixNano",
                    "bytesValue",
                ]
            ),
            ch,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@FAST
@given(json_junk)
def test_structurally_wrong_json_is_400_or_partial(doc):
    try:
        out = decode_json(orjson.dumps(doc))
    except InvalidInputError:
        return
    for s in out.spans:
        orjson.dumps(s.attributes)


@FAST
@given(st.lists(spans(), min_size=1, max_size=3), st.data())
def test_json_with_one_corrupted_span_rejects_only_that_span(batch, data):
    doc = to_json_dict(batch)
    first = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    field = data.draw(
        st.sampled_from(["traceId", "spanId", "attributes", "name", "startTimeUnixNano"])
    )
    first[field] = data.draw(st.sampled_from([{"x": 1}, 12.5, [1, 2]]))
    out = decode_json(orjson.dumps(doc))
    assert out.rejected == 1 and len(out.spans) == len(batch) - 1


def test_json_accepts_snake_case_base64_ids_and_enum_names():
    doc = {
        "resource_spans": [
            {
                "scope_spans": [
                    {
                        "spans": [
                            {
                                "trace_id": "AQIDBAUGBwgJCgsMDQ4PEA==",
                                "span_id": "AQIDBAUGBwg=",
                                "name": "x",
                                "kind": "SPAN_KIND_CLIENT",
                                "status": {"code": "STATUS_CODE_ERROR"},
                                "start_time_unix_nano": 5,
                                "end_time_unix_nano": "6",
                            }
                        ]
                    }
                ]
            }
        ]
    }
    (s,) = decode_json(orjson.dumps(doc)).spans
    assert s.trace_id == "0102030405060708090a0b0c0d0e0f10" and s.span_id == "0102030405060708"
    assert (s.kind, s.status, s.start_time_ns, s.end_time_ns) == ("client", "error", 5, 6)


def test_inflate_bounds():
    raw = b"a" * 10_000
    assert inflate(gzip.compress(raw), "gzip", 10_000) == raw
    assert inflate(zlib.compress(raw), "deflate", 10_000) == raw
    raw_deflate = zlib.compressobj(wbits=-15)
    assert inflate(raw_deflate.compress(raw) + raw_deflate.flush(), "deflate", 10_000) == raw
    with pytest.raises(PayloadTooLargeError):
        inflate(gzip.compress(raw), "gzip", 9_999)
    with pytest.raises(InvalidInputError):
        inflate(gzip.compress(raw)[:-10], "gzip", 10_000)
    with pytest.raises(InvalidInputError):
        inflate(b"plain", "gzip", 10_000)
    with pytest.raises(InvalidInputError):
        inflate(b"x", "zstd", 10_000)
    with pytest.raises(PayloadTooLargeError):
        inflate(b"x" * 11, None, 10)


def test_decode_request_checks_content_type():
    with pytest.raises(InvalidInputError) as e:
        decode_request(b"", "text/plain")
    assert e.value.status == 415
    assert decode_request(b"", "application/x-protobuf; charset=binary").spans == []
    assert decode_request(b"{}", "Application/JSON").spans == []
