"""OpenAI SDK → keel.instrument() → OTLP → a real Keel server → the stored trace."""

from __future__ import annotations

import json

import pytest

import keel
from conftest import KeelServer, llm_calls, trace_id_of

openai = pytest.importorskip("openai")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_openai_chat_tools_and_stream(instrumented: KeelServer, fake_llm) -> None:
    status = keel.instrument("openai")
    assert status == {"openai": "on"}
    client = openai.OpenAI(base_url=fake_llm.url, api_key="sk-fake", max_retries=0)
    with keel.span("weather-agent", kind="agent") as root:
        msgs = [{"role": "user", "content": "What is the weather in Paris today?"}]
        r = client.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=TOOLS)
        call = r.choices[0].message.tool_calls[0]
        with keel.span("get_weather", kind="tool", input=json.loads(call.function.arguments)) as t:
            t.set_output("sunny, 24C")
        msgs += [
            r.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "sunny, 24C"},
        ]
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=msgs,
            tools=TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "It is sunny in Paris."

    trace = instrumented.wait_trace(trace_id_of(root), min_spans=4)
    calls = llm_calls(trace)
    assert len(calls) == 2
    (s1, first), (_, second) = calls
    assert first.dialect == "openinference"
    assert first.request_model == "gpt-4o-mini"
    assert first.response_model == "gpt-4o-mini-2024-07-18"
    assert (first.input_tokens, first.output_tokens) == (15, 12)
    assert [(t.name, t.arguments) for t in first.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert second.output_messages[-1].content == "It is sunny in Paris."
    assert second.input_messages[-1].role == "tool"
    assert second.ttft_ms is not None
    # the user's own steps: an agent span and a numbered tool step under it
    by_name = {s.name: s for s in trace.spans}
    agent = by_name["invoke_agent weather-agent"]
    tool = by_name["execute_tool get_weather"]
    assert tool.parent_span_id == agent.span_id
    assert tool.attributes["agent.trajectory.step"] == 1  # first keel step in the agent
    assert s1.parent_span_id == agent.span_id
    summary = instrumented.store.spans.get_trace_summary(instrumented.project_id, trace.trace_id)
    assert summary.input_tokens == first.input_tokens + second.input_tokens
    assert summary.cost_usd is not None and summary.cost_usd > 0
    assert summary.span_count == len(trace.spans)


def test_openai_error_is_recorded(instrumented: KeelServer, fake_llm) -> None:
    keel.instrument("openai")
    client = openai.OpenAI(base_url=fake_llm.url, api_key="sk-fake", max_retries=0)
    with keel.span("failing-step", kind="chain") as root, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[error] please"}]
        )
    trace = instrumented.wait_trace(trace_id_of(root), min_spans=2)
    [(span, call)] = llm_calls(trace)
    assert span.status == "error"
    assert call.error_type and "InternalServerError" in call.error_type
