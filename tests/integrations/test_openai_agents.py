"""OpenAI Agents SDK → keel.instrument() → OTLP → Keel server → the stored agent trace."""

from __future__ import annotations

import pytest

import keel
from conftest import KeelServer, llm_calls
from keel.otlp.dialects import to_llm_call

agents = pytest.importorskip("agents")


@pytest.mark.slow
def test_agent_with_tool(instrumented: KeelServer, fake_llm) -> None:
    assert keel.instrument("openai_agents") == {"openai_agents": "on"}
    from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool
    from openai import AsyncOpenAI

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "sunny, 24C"

    client = AsyncOpenAI(base_url=fake_llm.url, api_key="sk-fake", max_retries=0)
    agent = Agent(
        name="weather-agent",
        instructions="Answer weather questions.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client),
    )
    result = Runner.run_sync(agent, "What is the weather in Paris today?")
    assert result.final_output == "It is sunny in Paris."

    keel.flush()
    page = instrumented.store.spans.list_traces(instrumented.project_id, limit=20)
    trace = None
    for summary in page.items:
        t = instrumented.store.spans.get_trace(instrumented.project_id, summary.trace_id)
        if any(s.name == "weather-agent" for s in t.spans):
            trace = t
            break
    assert trace is not None, "agent trace not stored"
    views = {s.name: to_llm_call(s) for s in trace.spans}
    agent_view = views["weather-agent"]
    assert agent_view is not None and agent_view.operation == "invoke_agent"
    assert agent_view.agent_name == "weather-agent"
    tool_view = views["get_weather"]
    assert tool_view is not None and tool_view.operation == "execute_tool"
    assert tool_view.tool_calls[0].name == "get_weather"
    calls = llm_calls(trace)
    assert len(calls) == 2
    assert [(t.name, t.arguments) for t in calls[0][1].tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
    assert calls[1][1].output_messages[-1].content == "It is sunny in Paris."
