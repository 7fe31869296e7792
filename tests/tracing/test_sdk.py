"""The tracing SDK: decorator and span shapes, error recording, and never breaking the host."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import keel
from keel.core.spans import Span
from keel.otlp.dialects import to_llm_call


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = otel_trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        otel_trace.set_tracer_provider(TracerProvider())
        provider = otel_trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def _keel_spans(exporter: InMemorySpanExporter) -> dict[str, Span]:
    out = {}
    for s in exporter.get_finished_spans():
        if s.instrumentation_scope is None or s.instrumentation_scope.name != "keel.sdk":
            continue
        ctx = s.get_span_context()
        out[s.name] = Span(
            trace_id=format(ctx.trace_id, "032x"),
            span_id=format(ctx.span_id, "016x"),
            parent_span_id=format(s.parent.span_id, "016x") if s.parent else None,
            name=s.name,
            start_time_ns=s.start_time or 0,
            end_time_ns=s.end_time or 0,
            status="error" if s.status.status_code.name == "ERROR" else "unset",
            attributes=dict(s.attributes or {}),
            events=[
                {"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                for e in s.events
            ],
            scope="keel.sdk",
        )
    return out


def test_decorator_kinds_and_agent_steps(spans: InMemorySpanExporter) -> None:
    @keel.trace(kind="tool")
    def get_weather(city: str) -> dict[str, str]:
        return {"city": city, "sky": "sunny"}

    @keel.trace(kind="retriever", name="search")
    def search(query: str) -> list[dict[str, object]]:
        return [{"id": "d1", "content": "Paris is sunny", "score": 0.8}]

    @keel.trace(kind="agent")
    def planner(question: str) -> str:
        docs = search(question)
        return get_weather("Paris")["sky"] + f" ({len(docs)} doc)"

    assert planner("weather in Paris?") == "sunny (1 doc)"
    got = _keel_spans(spans)
    agent = got["invoke_agent planner"]
    tool = got["execute_tool get_weather"]
    retr = got["search"]
    assert tool.parent_span_id == agent.span_id == retr.parent_span_id
    assert (retr.attributes["agent.trajectory.step"], tool.attributes["agent.trajectory.step"]) == (
        1,
        2,
    )
    a, t, r = to_llm_call(agent), to_llm_call(tool), to_llm_call(retr)
    assert a and a.operation == "invoke_agent" and a.agent_name == "planner"
    assert t and t.operation == "execute_tool" and t.tool_name == "get_weather"
    assert t.tool_calls[0].arguments == {"city": "Paris"}
    assert t.tool_calls[0].result == {"city": "Paris", "sky": "sunny"}
    assert r and r.operation == "retrieval"
    assert [(d.id, d.content, d.score) for d in r.documents] == [("d1", "Paris is sunny", 0.8)]
    assert agent.attributes["input.value"] == "weather in Paris?"
    assert agent.attributes["output.value"] == "sunny (1 doc)"


def test_async_and_generators(spans: InMemorySpanExporter) -> None:
    @keel.trace
    async def fetch(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    @keel.trace(kind="llm")
    def tokens(prompt: str):  # type: ignore[no-untyped-def]
        yield "Hel"
        yield "lo"

    @keel.trace
    async def atokens(prompt: str):  # type: ignore[no-untyped-def]
        for t in ("a", "b"):
            yield t

    async def collect() -> list[str]:
        return [t async for t in atokens("p")]

    assert asyncio.run(fetch(3)) == 6
    assert "".join(tokens("hi")) == "Hello"
    assert asyncio.run(collect()) == ["a", "b"]
    got = _keel_spans(spans)
    assert got["fetch"].attributes["output.value"] == "6"
    assert got["tokens"].attributes["output.value"] == "Hello"
    assert got["tokens"].attributes["gen_ai.operation.name"] == "chat"
    assert got["atokens"].attributes["output.value"] == "ab"


def test_errors_are_recorded_and_reraised(spans: InMemorySpanExporter) -> None:
    @keel.trace(kind="tool")
    def broken() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        broken()
    s = _keel_spans(spans)["execute_tool broken"]
    assert s.status == "error"
    assert s.attributes["error.type"] == "KeyError"
    call = to_llm_call(s)
    assert call is not None and call.error_type == "KeyError"


def test_span_context_manager_and_llm_facts(spans: InMemorySpanExporter) -> None:
    with keel.span("answer", kind="llm", attributes={"keel.route": "support"}) as s:
        s.set_llm(
            model="gpt-4o-mini",
            provider="openai",
            input_tokens=10,
            output_tokens=3,
            input_messages=[{"role": "user", "content": "hi"}],
            output_messages=[{"role": "assistant", "content": "hello"}],
        )
    call = to_llm_call(_keel_spans(spans)["answer"])
    assert call is not None
    assert (call.request_model, call.input_tokens, call.route) == ("gpt-4o-mini", 10, "support")
    assert call.output_text == "hello" and call.input_text == "hi"
    with pytest.raises(ValueError), keel.span("x", kind="nope"):  # type: ignore[arg-type]
        pass


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sdk_import_is_light() -> None:
    r = _run(
        """
        import sys, keel
        keel.init(endpoint="http://127.0.0.1:9")
        with keel.span("x"):
            pass
        heavy = [m for m in ("fastapi", "sqlalchemy", "uvicorn", "keel.server", "keel.storage")
                 if m in sys.modules]
        print(heavy)
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_init_is_idempotent_and_unreachable_server_never_breaks_the_app() -> None:
    r = _run(
        """
        import json, keel, logging
        logging.basicConfig(level=logging.WARNING)
        p1 = keel.init(endpoint="http://127.0.0.1:9", service_name="svc", export_timeout_seconds=0.5)
        p2 = keel.init(endpoint="http://127.0.0.1:9", service_name="svc")
        @keel.trace
        def work(x):
            return x + 1
        results = [work(i) for i in range(50)]
        ok = keel.sdk.tracing.flush(5000)
        keel.shutdown()
        print(json.dumps({"same": p1 is p2, "sum": sum(results),
                          "service": p1.resource.attributes["service.name"]}))
        """
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out == {"same": True, "sum": sum(range(1, 51)), "service": "svc"}
    assert "could not export spans" in r.stderr


def test_strict_mode_raises_export_errors() -> None:
    r = _run(
        """
        import keel
        from opentelemetry.sdk.trace.export import SpanExporter
        class Boom(SpanExporter):
            def export(self, spans):
                raise OSError("disk on fire")
        keel.init(exporter=Boom(), strict=True)
        with keel.span("x"):
            pass
        try:
            keel.flush()
        except RuntimeError as e:
            print("raised", type(e.__cause__).__name__)
        """
    )
    assert r.returncode == 0, r.stderr
    assert "raised OSError" in r.stdout
