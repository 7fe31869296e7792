"""``POST /v1/traces``: encodings, compression, size caps, bad input, auth, saturation."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib

import pytest
from _ingest_helpers import agent_trace, free_port, hexid, llm_span
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.testclient import TestClient

from keel.otlp.encode import encode_json, encode_protobuf
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store

PB = {"content-type": "application/x-protobuf"}
JS = {"content-type": "application/json"}


@pytest.fixture
def app_env(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/otlp.db")
    project = store.projects.add_project("demo")
    _, secret = create_api_key(store, project, "ci")
    settings = Settings()
    settings.tracing.max_body_bytes = 2 * 1024 * 1024
    app = create_app(settings, store)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {secret}"}, project, store


def _pb_response(r) -> ExportTraceServiceResponse:
    assert r.headers["content-type"] == "application/x-protobuf"
    return ExportTraceServiceResponse.FromString(r.content)


def test_protobuf_and_json_are_stored_identically(app_env):
    c, h, p, store = app_env
    a = agent_trace("pb")
    b = agent_trace("js")
    r = c.post("/v1/traces", content=encode_protobuf(a), headers={**h, **PB})
    assert r.status_code == 200
    assert not _pb_response(r).HasField("partial_success")
    r = c.post("/v1/traces", content=encode_json(b), headers={**h, **JS})
    assert r.status_code == 200 and r.json() == {}
    got_a = store.spans.get_trace(p.id, a[0].trace_id).spans
    got_b = store.spans.get_trace(p.id, b[0].trace_id).spans
    assert [s.model_copy(update={"project_id": "default"}) for s in got_a] == a
    assert [s.model_copy(update={"project_id": "default"}) for s in got_b] == b
    assert all(s.project_id == p.id for s in got_a + got_b)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies(app_env, encoding):
    c, h, p, store = app_env
    spans = agent_trace(f"z-{encoding}")
    raw = encode_protobuf(spans)
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    r = c.post("/v1/traces", content=body, headers={**h, **PB, "content-encoding": encoding})
    assert r.status_code == 200, r.content
    assert store.spans.get_trace_summary(p.id, spans[0].trace_id).span_count == 4


def test_concatenated_gzip_members(app_env):
    c, h, _p, _store = app_env
    raw = encode_json(agent_trace("members"))
    body = gzip.compress(raw[:100]) + gzip.compress(raw[100:])
    r = c.post("/v1/traces", content=body, headers={**h, **JS, "content-encoding": "gzip"})
    assert r.status_code == 200


def test_gzip_bomb_is_refused_while_inflating(app_env):
    c, h, _, _ = app_env
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)  # ~64 KiB on the wire
    assert len(bomb) < 100_000
    t = time.perf_counter()
    r = c.post("/v1/traces", content=bomb, headers={**h, **PB, "content-encoding": "gzip"})
    assert r.status_code == 413
    assert time.perf_counter() - t < 5
    # many small members adding up over the cap are a bomb too
    members = gzip.compress(b"\0" * (1024 * 1024)) * 3
    r = c.post("/v1/traces", content=members, headers={**h, **JS, "content-encoding": "gzip"})
    assert r.status_code == 413


def test_body_over_cap_is_413(app_env):
    c, h, _, _ = app_env
    r = c.post("/v1/traces", content=b"\0" * (3 * 1024 * 1024), headers={**h, **PB})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"content-type": "text/plain"}, 415),
        ({"content-type": "application/xml"}, 415),
        ({}, 415),
        ({**PB, "content-encoding": "br"}, 415),
        ({**PB, "content-encoding": "gzip"}, 400),  # claims gzip, is not
        ({**JS, "content-encoding": "deflate"}, 400),
    ],
)
def test_wrong_content_type_or_encoding(app_env, headers, status):
    c, h, _, _ = app_env
    r = c.post("/v1/traces", content=encode_protobuf(agent_trace("x")), headers={**h, **headers})
    assert r.status_code == status, r.content


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\xff\xff\xff\xff\x0f",  # length prefix far past the end
        b"\xff" * 64,
        encode_protobuf(agent_trace("trunc"))[:-7],
        b"\x0a\x02\x0a",
    ],
)
def test_undecodable_protobuf_is_400_status(app_env, body):
    c, h, _, _ = app_env
    r = c.post("/v1/traces", content=body, headers={**h, **PB})
    assert r.status_code == 400
    st = status_pb2.Status.FromString(r.content)
    assert st.code == 3 and "protobuf" in st.message


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'"x"',
        b'{"resourceSpans": 5}',
        b'{"resourceSpans": [1]}',
        b'{"resourceSpans": [{"scopeSpans": {"spans": []}}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": 7}]}]}',
        b'{"a": "\\ud800"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"resourceSpans": [], "x": NaN}',
    ],
)
def test_undecodable_json_is_400(app_env, body):
    c, h, _, _ = app_env
    r = c.post("/v1/traces", content=body, headers={**h, **JS})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_empty_requests_succeed(app_env):
    c, h, _, _ = app_env
    assert c.post("/v1/traces", content=b"", headers={**h, **PB}).status_code == 200
    assert c.post("/v1/traces", content=b"{}", headers={**h, **JS}).json() == {}


def _json_span(**over: object) -> dict[str, object]:
    span: dict[str, object] = {
        "traceId": hexid("hostile", 16).upper(),
        "spanId": hexid("hostile-ok", 8),
        "name": "ok",
        "kind": 3,
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": 1767225600100000000,
        "attributes": [{"key": "k", "value": {"stringValue": "v"}}],
    }
    span.update(over)
    return span


def _deep(n: int) -> dict[str, object]:
    v: dict[str, object] = {"stringValue": "leaf"}
    for _ in range(n):
        v = {"arrayValue": {"values": [v]}}
    return v


def test_bad_spans_are_rejected_one_by_one(app_env):
    c, h, p, store = app_env
    bad = [
        _json_span(spanId="zz"),
        _json_span(traceId="00000000000000000000000000000000"),
        _json_span(spanId="0102"),
        _json_span(attributes=[{"key": "deep", "value": _deep(100)}]),
        _json_span(attributes=[{"key": 5, "value": {"stringValue": "x"}}]),
        _json_span(attributes=[{"key": "t", "value": {"intValue": "nope"}}]),
        _json_span(attributes=[{"key": "t", "value": {"intValue": str(2**70)}}]),
        _json_span(attributes=[{"key": "t", "value": {"boolValue": "yes"}}]),
        _json_span(attributes=[{"key": "b", "value": {"bytesValue": "***"}}]),
        _json_span(attributes="nope"),
        _json_span(name=["x"]),
        _json_span(startTimeUnixNano="-5"),
        _json_span(endTimeUnixNano=str(2**64)),
        _json_span(status={"code": "x"}),
        "not a span",
    ]
    good = _json_span(
        spanId=hexid("good", 8),
        kind="SPAN_KIND_SERVER",
        unknownField={"ignored": True},
        attributes=[
            {
                "key": "arr",
                "value": {"arrayValue": {"values": [{"intValue": 1}, {"doubleValue": "NaN"}]}},
            },
            {
                "key": "kv",
                "value": {"kvlistValue": {"values": [{"key": "a", "value": {"boolValue": True}}]}},
            },
            {"key": "bytes", "value": {"bytesValue": "AAEC"}},
            {"key": "deep_ok", "value": _deep(20)},
            {"key": "empty", "value": {}},
        ],
    )
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [*bad, good]}]}]}
    r = c.post("/v1/traces", content=json.dumps(body).encode(), headers={**h, **JS})
    assert r.status_code == 200, r.text
    ps = r.json()["partialSuccess"]
    assert ps["rejectedSpans"] == str(len(bad)) and "spanId" in ps["errorMessage"]
    stored = store.spans.get_trace(p.id, hexid("hostile", 16)).spans
    assert [s.span_id for s in stored] == [hexid("good", 8)]
    a = stored[0].attributes
    assert a["arr"] == [1, None]  # NaN is accepted and stored as null (JSON has no NaN)
    assert a["kv"] == {"a": True} and a["bytes"] == "AAEC" and a["empty"] is None
    assert stored[0].kind == "server"


def test_protobuf_partial_success_and_hostile_values(app_env):
    c, h, _p, _store = app_env
    req = ExportTraceServiceRequest.FromString(encode_protobuf(agent_trace("pbbad")))
    spans = req.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x01" * 15  # wrong length
    spans[1].span_id = b""  # missing
    kv = spans[2].attributes.add()
    kv.key = "deep"
    v = kv.value
    for _ in range(40):
        v = v.array_value.values.add()
    v.string_value = "leaf"
    kv = spans[3].attributes.add()
    kv.key = "strindex"
    kv.value.string_value_strindex = 3
    r = c.post("/v1/traces", content=req.SerializeToString(), headers={**h, **PB})
    assert r.status_code == 200
    ps = _pb_response(r).partial_success
    assert ps.rejected_spans == 4 and ps.error_message


def test_invalid_utf8_in_protobuf_string_is_400(app_env):
    c, h, _, _ = app_env
    good = encode_protobuf([llm_span("utf", "NAMEX", model=None)])
    bad = good.replace(b"NAMEX", b"NAM\xff\xfe")
    r = c.post("/v1/traces", content=bad, headers={**h, **PB})
    assert r.status_code == 400


def test_huge_attribute_value_rejects_the_span(app_env, monkeypatch):
    import keel.otlp.decode as d

    monkeypatch.setattr(d, "MAX_STRING_BYTES", 100_000)
    c, h, p, store = app_env
    big = llm_span("huge", "big", extra={"blob": "x" * 200_000})
    small = llm_span("huge", "small")
    r = c.post("/v1/traces", content=encode_protobuf([big, small]), headers={**h, **PB})
    assert _pb_response(r).partial_success.rejected_spans == 1
    assert [s.name for s in store.spans.get_trace(p.id, big.trace_id).spans] == ["small"]


def test_resend_is_idempotent(app_env):
    c, h, p, store = app_env
    body = encode_protobuf(agent_trace("again"))
    for _ in range(3):
        assert c.post("/v1/traces", content=body, headers={**h, **PB}).status_code == 200
    assert store.spans.count_spans(p.id) == 4
    assert store.spans.list_traces(p.id).items[0].span_count == 4


def test_auth_and_scopes(app_env):
    c, _, p, store = app_env
    body = encode_protobuf(agent_trace("auth"))
    assert c.post("/v1/traces", content=body, headers=PB).status_code == 401
    bad = {"Authorization": "Bearer ' OR '1'='1"}
    assert c.post("/v1/traces", content=body, headers={**bad, **PB}).status_code == 401
    _, read_only = create_api_key(store, p, "ro", scopes=["traces:read"])
    ro = {"Authorization": f"Bearer {read_only}"}
    r = c.post("/v1/traces", content=body, headers={**ro, **PB})
    assert r.status_code == 403
    assert c.get("/api/traces", headers=ro).status_code == 200
    assert store.spans.count_spans() == 0


def test_saturated_writer_answers_503_with_retry_after(app_env):
    c, h, p, store = app_env
    writer = c.app.state.keel.extras["ingest"]
    gate = threading.Event()
    original = store.spans.add_spans

    def slow_add(records, **kw):
        gate.wait(10)
        return original(records, **kw)

    store.spans.add_spans = slow_add
    writer.queue_max_spans = 8
    results: list[int] = []

    def post(name: str) -> None:
        r = c.post("/v1/traces", content=encode_protobuf(agent_trace(name)), headers={**h, **PB})
        results.append(r.status_code)

    threads = [threading.Thread(target=post, args=(f"sat{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while writer.pending_spans < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    r = c.post("/v1/traces", content=encode_protobuf(agent_trace("over")), headers={**h, **PB})
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    assert status_pb2.Status.FromString(r.content).code == 14
    gate.set()
    for t in threads:
        t.join(10)
    assert sorted(results) == [200, 200]
    assert store.spans.count_spans(p.id) == 8


def test_store_down_is_503_not_500(app_env):
    c, h, _, store = app_env
    from keel.errors import StoreError

    def broken(records, **kw):
        raise StoreError("the store is unavailable: disk I/O error")

    store.spans.add_spans = broken
    r = c.post("/v1/traces", content=encode_json(agent_trace("down")), headers={**h, **JS})
    assert r.status_code == 503 and "retry-after" in r.headers


def test_real_otel_sdk_exporter_against_live_server(tmp_path):
    """The OpenTelemetry SDK's own OTLP/HTTP exporter, gzip on, against uvicorn."""
    import uvicorn
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    store = open_store(f"sqlite:///{tmp_path}/live.db")
    project = store.projects.add_project("live")
    _, secret = create_api_key(store, project, "sdk")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Settings(), store), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        exporter = OTLPSpanExporter(
            endpoint=f"http://127.0.0.1:{port}/v1/traces",
            headers={"Authorization": f"Bearer {secret}"},
            compression=Compression.Gzip,
        )
        provider = TracerProvider(resource=Resource.create({"service.name": "sdk-test"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("tests")
        with (
            tracer.start_as_current_span("invoke_agent helper") as root,
            tracer.start_as_current_span("chat gpt-4o-mini") as sp,
        ):
            sp.set_attribute("gen_ai.operation.name", "chat")
            sp.set_attribute("gen_ai.provider.name", "openai")
            sp.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            sp.set_attribute("gen_ai.usage.input_tokens", 12)
            sp.set_attribute("gen_ai.usage.output_tokens", 3)
        provider.shutdown()
        tid = format(root.get_span_context().trace_id, "032x")
        s = store.spans.get_trace_summary(project.id, tid)
        assert s.span_count == 2 and s.root_name == "invoke_agent helper"
        assert s.service == "sdk-test" and s.models == ["gpt-4o-mini"]
        assert (s.input_tokens, s.output_tokens) == (12, 3)
    finally:
        server.should_exit = True
        th.join(10)
