"""The compiled OTLP fast path gives exactly what the Python decoder gives, or steps aside.

``keel.otlp._fastpb`` may only return spans equal to the pure-Python decoder's result (same
fields, same types, same order) or ``None``, and then ``decode_protobuf`` decodes in Python.
Checked on the real-library fixture corpus, on random batches of spans, and on random bytes
and mutations of real bodies.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from _ingest_helpers import agent_trace
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from test_otlp_decode import spans

from keel.core.spans import Span, SpanEvent
from keel.errors import InvalidInputError
from keel.otlp import decode as D
from keel.otlp.encode import encode_protobuf

try:
    from keel.otlp import _fastpb as fast  # type: ignore[attr-defined]
except ImportError:
    # CI builds it (`make install`); elsewhere a missing C compiler only skips these tests
    if os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1":
        raise
    pytest.skip("compiled fast path not built (tools/build_ext.py)", allow_module_level=True)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "otlp"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fast(body: bytes) -> list[Span] | None:
    limits = (D.MAX_STRING_BYTES, D.MAX_ATTRIBUTES, D.MAX_EVENTS, D.MAX_NAME_CHARS)
    return fast.decode_spans(
        body, "p1", D.construct_trusted, Span, SpanEvent, D._KINDS, D._STATUSES, limits
    )


def _same_value(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b  # type: ignore[arg-type]
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same_value(a[k], b[k]) for k in a)  # type: ignore[index]
    if isinstance(a, list):
        return len(a) == len(b) and all(map(_same_value, a, b))  # type: ignore[arg-type]
    return a == b


def _check(body: bytes) -> list[Span] | None:
    """Assert the fast result (if any) equals the Python decoder's, with exact types."""
    got = _fast(body)
    if got is None:
        return None
    want = D.decode_protobuf(body, "p1", fast=False)
    assert want.rejected == 0, "the fast path accepted a body the Python decoder rejects spans of"
    assert len(got) == len(want.spans)
    for g, w in zip(got, want.spans, strict=True):
        assert _same_value(g.__dict__["attributes"], w.attributes)
        assert _same_value(g.resource, w.resource)
        assert g.model_dump() == w.model_dump()
        assert [type(v) for v in g.__dict__.values()] == [type(w.__dict__[k]) for k in g.__dict__]
    return got


def test_fixture_corpus_of_every_dialect_takes_the_fast_path():
    bodies = sorted(FIXTURES.glob("*/*.pb"))
    assert len(bodies) >= 10
    for p in bodies:
        assert _check(p.read_bytes()) is not None, p


def test_decode_protobuf_uses_the_fast_path_and_falls_back():
    body = encode_protobuf(agent_trace("fp"))
    assert D.FAST_PATH
    assert _check(body)
    # a link is outside the fast path's shape: the Python decoder takes the whole body
    req = ExportTraceServiceRequest.FromString(body)
    link = req.resource_spans[0].scope_spans[0].spans[0].links.add()
    link.trace_id = b"\x01" * 16
    link.span_id = b"\x02" * 8
    linked = req.SerializeToString()
    assert _fast(linked) is None
    assert len(D.decode_protobuf(linked).spans) == len(D.decode_protobuf(body).spans)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: setattr(s, "trace_id", b"\x00" * 16),  # invalid id → a rejection
        lambda s: setattr(s, "span_id", b"\x01" * 7),
        lambda s: setattr(s, "parent_span_id", b"\x01" * 3),
        lambda s: setattr(s, "name", "n" * 5000),
        lambda s: s.attributes.add(key="b").value.__setattr__("bytes_value", b"\x00\x01"),
        lambda s: s.attributes.add(key="kv").value.kvlist_value.values.add(key="x"),
        lambda s: (
            s.attributes.add(key="deep").value.array_value.values.add().array_value.values.add()
        ),
    ],
)
def test_anything_unusual_is_left_to_the_python_decoder(mutate):
    req = ExportTraceServiceRequest.FromString(encode_protobuf(agent_trace("u")))
    mutate(req.resource_spans[0].scope_spans[0].spans[0])
    body = req.SerializeToString()
    assert _fast(body) is None
    D.decode_protobuf(body)  # the Python decoder decides (rejects or accepts), never crashes


def test_scalar_arrays_empty_values_and_enum_edges_match():
    req = ExportTraceServiceRequest.FromString(encode_protobuf(agent_trace("e")))
    sp = req.resource_spans[0].scope_spans[0].spans[0]
    arr = sp.attributes.add(key="gen_ai.response.finish_reasons").value.array_value
    arr.values.add().string_value = "stop"
    arr.values.add().int_value = -5
    arr.values.add().double_value = 2.5
    arr.values.add().bool_value = False
    arr.values.add()  # an empty AnyValue → None
    sp.attributes.add(key="empty")  # no value at all → None
    sp.attributes.add(key="neg").value.int_value = -(2**63)
    sp.attributes.add(key="dup").value.int_value = 1
    sp.attributes.add(key="dup").value.string_value = "last wins"
    sp.kind = 99  # unknown enum values read as unspecified, as in Python
    sp.status.code = 7
    sp.status.message = ""
    sp.trace_state = "k=v"
    got = _check(req.SerializeToString())
    assert got is not None
    a = got[0].attributes
    assert a["gen_ai.response.finish_reasons"] == ["stop", -5, 2.5, False, None]
    assert a["empty"] is None and a["neg"] == -(2**63) and a["dup"] == "last wins"


@SETTINGS
@given(st.lists(spans(), min_size=1, max_size=6))
def test_random_batches_match_the_python_decoder(batch):
    _check(encode_protobuf(batch))


@SETTINGS
@given(st.binary(max_size=500), st.integers(min_value=0, max_value=4000))
def test_mutated_bodies_match_or_step_aside(noise, at):
    body = bytearray(encode_protobuf(agent_trace("mut")))
    at = at % len(body)
    body[at : at + len(noise)] = noise
    try:
        got = _fast(bytes(body))
    except Exception as e:  # the fast path must never raise
        raise AssertionError(f"fast path raised {e!r}") from e
    if got is None:
        return
    try:
        want = D.decode_protobuf(bytes(body), "p1", fast=False)
    except InvalidInputError as e:
        raise AssertionError(f"fast path accepted a body upb refuses: {e}") from e
    assert [s.model_dump() for s in got] == [s.model_dump() for s in want.spans]


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_match_or_step_aside(data):
    got = _fast(data)
    if got is not None:
        assert [s.model_dump() for s in got] == [
            s.model_dump() for s in D.decode_protobuf(data, "p1", fast=False).spans
        ]


def test_limits_come_from_the_python_decoder(monkeypatch):
    req = ExportTraceServiceRequest.FromString(encode_protobuf(agent_trace("lim")))
    req.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="s").value.string_value = (
        "x" * 200_000
    )
    body = req.SerializeToString()
    assert _fast(body) is not None
    monkeypatch.setattr(D, "MAX_STRING_BYTES", 100_000)
    assert _fast(body) is None
    assert D.decode_protobuf(body).rejected == 1


def test_truncated_bodies_step_aside():
    body = encode_protobuf(agent_trace("t"))
    for cut in range(1, len(body), max(1, len(body) // 200)):
        got = _fast(body[:cut])
        if got is not None:  # a cut at a message boundary is a valid, shorter body
            _check(body[:cut])
