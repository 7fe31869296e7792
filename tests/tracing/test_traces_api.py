"""``GET /api/traces`` and ``GET /api/traces/{id}``, trace-completed events, forwarding."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from _ingest_helpers import T0, agent_trace, free_port, hexid, llm_span
from starlette.testclient import TestClient

from keel.core.spans import Message, SpanStatus
from keel.otlp.encode import encode_json, encode_protobuf
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.server.ingest import IngestWriter, TraceCompleted, TraceEvents
from keel.settings import Settings
from keel.storage import open_store

PB = {"content-type": "application/x-protobuf"}


@pytest.fixture
def env(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/api.db")
    project = store.projects.add_project("demo")
    _, secret = create_api_key(store, project, "ci")
    app = create_app(Settings(), store)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {secret}"}, project, store


def _send(c, h, spans) -> None:
    r = c.post("/v1/traces", content=encode_protobuf(spans), headers={**h, **PB})
    assert r.status_code == 200, r.content


def test_list_filter_sort_paginate(env):
    c, h, _, _ = env
    for i in range(6):
        spans = agent_trace(
            f"api{i}",
            start_ms=i * 1000,
            model="gpt-4o" if i % 2 else "claude-x",
            provider="openai" if i % 2 else "anthropic",
            service="a" if i < 3 else "b",
        )
        if i == 4:
            spans[1] = spans[1].model_copy(update={"status": SpanStatus.ERROR})
        _send(c, h, spans)
    r = c.get("/api/traces", headers=h)
    assert r.status_code == 200
    data = r.json()["data"]
    assert [t["trace_id"] for t in data] == [hexid(f"api{i}", 16) for i in range(5, -1, -1)]
    t = data[0]
    for key in (
        "trace_id",
        "root_name",
        "start_time",
        "duration_ms",
        "span_count",
        "status",
        "input_tokens",
        "output_tokens",
        "cost_usd",
    ):
        assert key in t
    assert t["root_name"] == "agent" and t["span_count"] == 4 and t["input_tokens"] == 20
    assert t["start_time"].startswith("2026-01-01T00:00:05")

    def ids(**params) -> list[str]:
        r = c.get("/api/traces", params=params, headers=h)
        assert r.status_code == 200, r.text
        return [x["trace_id"] for x in r.json()["data"]]

    assert len(ids(model="gpt-4o")) == 3
    assert len(ids(provider="anthropic", service="b")) == 1
    assert ids(status="error") == [hexid("api4", 16)]
    assert len(ids(q="tool")) == 6
    assert ids(start_from="2026-01-01T00:00:02Z", start_to="2026-01-01T00:00:04Z") == [
        hexid("api3", 16),
        hexid("api2", 16),
    ]
    assert ids(min_duration_ms=5000) == []
    asc = ids(order="asc")
    assert asc == [hexid(f"api{i}", 16) for i in range(6)]
    page1 = c.get("/api/traces", params={"limit": 4}, headers=h).json()
    page2 = c.get(
        "/api/traces", params={"limit": 4, "cursor": page1["next_cursor"]}, headers=h
    ).json()
    assert len(page1["data"]) == 4 and len(page2["data"]) == 2 and page2["next_cursor"] is None
    assert {x["trace_id"] for x in page1["data"] + page2["data"]} == set(asc)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"sort": "name"},
        {"order": "up"},
        {"status": "bad"},
        {"cursor": "garbage!"},
        {"min_cost_usd": -1},
        {"start_from": "yesterday"},
        {"prompt_version": 2},
    ],
)
def test_list_rejects_bad_parameters(env, params):
    c, h, _, _ = env
    r = c.get("/api/traces", params=params, headers=h)
    assert r.status_code == 400, r.text
    assert set(r.json()) == {"error"}


def test_trace_detail_is_a_tree_with_llm_views(env):
    c, h, _, _ = env
    msgs = '[{"role":"user","parts":[{"type":"text","content":"Weather in Paris?"}]}]'
    spans = agent_trace("tree", extra={"gen_ai.input.messages": msgs})
    _send(c, h, spans)
    r = c.get(f"/api/traces/{hexid('tree', 16).upper()}", headers=h)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["summary"]["span_count"] == 4
    (root,) = d["spans"]
    assert root["name"] == "agent" and root["llm"] is None
    assert [ch["name"] for ch in root["children"]] == ["chat 1", "tool", "chat 2"]
    llm = root["children"][0]["llm"]
    assert llm["request_model"] == "gpt-4o-mini" and llm["provider"] == "openai"
    assert llm["input_tokens"] == 10 and llm["output_tokens"] == 5
    for key in (
        "response_model",
        "cost_usd",
        "ttft_ms",
        "input_messages",
        "output_messages",
        "tool_calls",
        "documents",
        "prompt_name",
        "prompt_version",
        "route",
    ):
        assert key in llm
    assert Message(**llm["input_messages"][0]).content == "Weather in Paris?"
    assert root["children"][0]["attributes"]["gen_ai.input.messages"] == msgs


def test_trace_detail_errors_and_isolation(env):
    c, h, _p, store = env
    _send(c, h, agent_trace("mine"))
    assert c.get(f"/api/traces/{'0' * 32}", headers=h).status_code == 404
    assert c.get("/api/traces/not-hex", headers=h).status_code == 400
    assert c.get(f"/api/traces/{hexid('mine', 16)}").status_code == 401
    other = store.projects.add_project("other")
    _, secret = create_api_key(store, other, "o")
    oh = {"Authorization": f"Bearer {secret}"}
    assert c.get(f"/api/traces/{hexid('mine', 16)}", headers=oh).status_code == 404
    assert c.get("/api/traces", headers=oh).json()["data"] == []


def test_trace_completed_on_root_and_on_idle(tmp_path):
    store = open_store("memory://")
    events = TraceEvents(idle_s=0.3)
    events.start()
    got: list[TraceCompleted] = []
    unsubscribe = events.subscribe(got.append)
    writer = IngestWriter(store, events=events, pricer=None)
    writer.start()
    try:
        full = agent_trace("done")
        writer.write("default", full[1:])  # children first: not complete yet
        time.sleep(0.1)
        assert got == []
        writer.write("default", full[:1])  # the root arrives
        orphan = [llm_span("orphan", "chat", parent="missing-root")]
        writer.write("default", orphan)
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [(e.trace_id, e.reason) for e in got] == [
            (hexid("done", 16), "root_ended"),
            (hexid("orphan", 16), "idle"),
        ]
        assert got[0].spans_seen == 4
        writer.write("default", full)  # re-sent or late spans do not announce twice
        time.sleep(0.5)
        assert len(got) == 2
        unsubscribe()
        writer.write("default", agent_trace("after"))
        time.sleep(0.2)
        assert len(got) == 2
    finally:
        writer.stop()
        events.stop()


def test_async_subscriber_and_failing_subscriber(tmp_path):
    store = open_store("memory://")
    events = TraceEvents(idle_s=5)
    events.start()
    writer = IngestWriter(store, events=events, pricer=None)
    writer.start()

    async def main() -> TraceCompleted:
        fut: asyncio.Future[TraceCompleted] = asyncio.get_running_loop().create_future()

        async def on_done(e: TraceCompleted) -> None:
            fut.set_result(e)

        def broken(e: TraceCompleted) -> None:
            raise RuntimeError("subscriber bug")

        events.subscribe(broken)
        events.subscribe(on_done)
        await asyncio.wrap_future(writer.submit("default", agent_trace("async")))
        return await asyncio.wait_for(fut, 5)

    try:
        e = asyncio.run(main())
        assert e.trace_id == hexid("async", 16) and e.reason == "root_ended"
    finally:
        writer.stop()
        events.stop()


def test_in_process_submit_sets_project_and_stops_cleanly():
    store = open_store("memory://")
    writer = IngestWriter(store, pricer=None)
    writer.start()
    fut = writer.submit("prj_x", agent_trace("inproc"))
    assert fut.result(5) == 4
    assert store.spans.count_spans("prj_x") == 4
    writer.stop()
    from keel.errors import UnavailableError

    with pytest.raises(UnavailableError):
        writer.submit("prj_x", agent_trace("late"))


def test_forwarding_to_another_collector(tmp_path, monkeypatch):
    """Everything accepted is passed on, byte for byte, to a second OTLP receiver."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    received: list[tuple[bytes, str, str | None]] = []

    async def _sink(request):  # type: ignore[no-untyped-def]
        received.append(
            (await request.body(), request.headers["content-type"], request.headers.get("x-token"))
        )
        return Response(b"", media_type="application/x-protobuf")

    sink = Starlette(routes=[Route("/v1/traces", _sink, methods=["POST"])])

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(sink, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        settings = Settings()
        settings.tracing.forward_endpoint = f"http://127.0.0.1:{port}/v1/traces"
        settings.tracing.forward_headers = {"x-token": "env:KEEL_TEST_FWD_TOKEN"}
        monkeypatch.setenv("KEEL_TEST_FWD_TOKEN", "abc")
        store = open_store(f"sqlite:///{tmp_path}/fwd.db")
        with TestClient(create_app(settings, store)) as c:
            pb = encode_protobuf(agent_trace("fwd1"))
            js = encode_json(agent_trace("fwd2"))
            assert c.post("/v1/traces", content=pb, headers=PB).status_code == 200
            assert (
                c.post(
                    "/v1/traces", content=js, headers={"content-type": "application/json"}
                ).status_code
                == 200
            )
            assert c.post("/v1/traces", content=b"junk", headers=PB).status_code == 400
            deadline = time.monotonic() + 10
            while len(received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            fwd = c.app.state.keel.extras["otlp_forwarder"]
            assert fwd.sent == 2 and fwd.dropped == 0
            # spans written in-process (the gateway's) are forwarded too, as protobuf
            local = agent_trace("fwd-local")
            c.app.state.keel.extras["ingest"].write("default", local)
            deadline = time.monotonic() + 10
            while len(received) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
        assert received[:2] == [
            (pb, "application/x-protobuf", "abc"),
            (js, "application/json", "abc"),
        ]
        assert len(received) == 3 and received[2][1] == "application/x-protobuf"
        from keel.otlp.decode import decode_protobuf

        assert {s.span_id for s in decode_protobuf(received[2][0]).spans} == {
            s.span_id for s in local
        }
    finally:
        server.should_exit = True
        th.join(10)


def test_forwarding_never_blocks_when_target_is_down(tmp_path):
    settings = Settings()
    settings.tracing.forward_endpoint = f"http://127.0.0.1:{free_port()}/v1/traces"
    store = open_store(f"sqlite:///{tmp_path}/fwd.db")
    with TestClient(create_app(settings, store)) as c:
        t = time.perf_counter()
        for i in range(5):
            body = encode_protobuf(agent_trace(f"down{i}"))
            assert c.post("/v1/traces", content=body, headers=PB).status_code == 200
        assert time.perf_counter() - t < 5
    assert store.spans.count_spans() == 20


def test_start_time_in_list_matches_span(env):
    c, h, _, _ = env
    _send(c, h, agent_trace("time", start_ms=1500))
    t = c.get("/api/traces", headers=h).json()["data"][0]
    assert t["start_time_ns"] == T0 + 1_500_000_000


def test_cyclic_and_very_deep_span_chains_are_served(env):
    c, h, _, _ = env
    chain = [llm_span("deep", "s0", model=None)]
    chain += [
        llm_span("deep", f"s{i}", parent=f"s{i - 1}", model=None, start_ms=i) for i in range(1, 400)
    ]
    cyc = [
        llm_span("cyc", "a", parent="b", model=None),
        llm_span("cyc", "b", parent="a", model=None),
    ]
    _send(c, h, chain + cyc)
    r = c.get(f"/api/traces/{hexid('deep', 16)}", headers=h)
    assert r.status_code == 200

    def count(nodes: list[dict]) -> int:
        return sum(1 + count(n["children"]) for n in nodes)

    assert count(r.json()["spans"]) == 400
    r = c.get(f"/api/traces/{hexid('cyc', 16)}", headers=h)
    assert r.status_code == 200 and count(r.json()["spans"]) >= 1


def test_a_poison_request_fails_alone_in_a_group_commit():
    """When a batch fails for a reason other than an outage, items are retried one by one."""
    from keel.errors import ConflictError, StoreError

    store = open_store("memory://")
    original = store.spans.add_spans
    blocked = threading.Event()
    release = threading.Event()

    def add(records, **kw):
        if any(r.span.name == "poison" for r in records):
            raise ConflictError("bad row")
        if any(r.span.name == "first" for r in records):
            blocked.set()
            release.wait(5)
        return original(records, **kw)

    store.spans.add_spans = add
    writer = IngestWriter(store, pricer=None)
    writer.start()
    try:
        first = writer.submit("default", [llm_span("p0", "first")])
        assert blocked.wait(5)  # the writer is busy: the next three queue into one batch
        good1 = writer.submit("default", agent_trace("p1"))
        bad = writer.submit("default", [llm_span("p2", "poison")])
        good2 = writer.submit("default", agent_trace("p3"))
        release.set()
        assert first.result(5) == 1 and good1.result(5) == 4 and good2.result(5) == 4
        with pytest.raises(StoreError):
            bad.result(5)
        assert store.spans.count_spans() == 9
    finally:
        writer.stop()


def test_huge_numeric_filters_are_rejected_not_crashing() -> None:
    from starlette.testclient import TestClient

    from keel.server import create_app
    from keel.settings import Settings
    from keel.storage import open_store

    with TestClient(
        create_app(Settings(), open_store("memory://")), raise_server_exceptions=False
    ) as c:
        for q in ("min_duration_ms=1e308", "min_cost_usd=1e300", "min_duration_ms=inf"):
            r = c.get(f"/api/traces?{q}")
            assert r.status_code == 400, (q, r.text)
