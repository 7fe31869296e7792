"""Anthropic SDK → keel.instrument() → OTLP → a real Keel server → the stored trace."""

from __future__ import annotations

import pytest

import keel
from conftest import KeelServer, llm_calls, trace_id_of

anthropic = pytest.importorskip("anthropic")

TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]
MODEL = "claude-3-5-haiku-20241022"


def test_anthropic_tool_use_and_stream(instrumented: KeelServer, fake_llm) -> None:
    status = keel.instrument("anthropic")["anthropic"]
    assert status in ("on", "native")
    client = anthropic.Anthropic(base_url=fake_llm.base_url, api_key="sk-ant-fake", max_retries=0)
    with keel.span("claude-agent", kind="agent") as root:
        msgs = [{"role": "user", "content": "What is the weather in Paris today?"}]
        r = client.messages.create(model=MODEL, max_tokens=200, messages=msgs, tools=TOOLS)
        use = next(b for b in r.content if b.type == "tool_use")
        msgs += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ]
        with client.messages.stream(model=MODEL, max_tokens=200, messages=msgs, tools=TOOLS) as s:
            text = s.get_final_text()
    assert text == "It is sunny in Paris."

    trace = instrumented.wait_trace(trace_id_of(root), min_spans=3)
    calls = llm_calls(trace)
    assert len(calls) == 2
    (_, first), (_, second) = calls
    assert first.provider == "anthropic"
    assert first.request_model == MODEL
    assert first.input_tokens == 15 and first.output_tokens == 12
    assert [(t.name, t.arguments) for t in first.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert second.output_messages and second.output_messages[-1].content == "It is sunny in Paris."
    summary = instrumented.store.spans.get_trace_summary(instrumented.project_id, trace.trace_id)
    assert summary.cost_usd is not None and summary.cost_usd > 0
