"""LangChain (langchain-openai) → keel.instrument() → OTLP → Keel server → the stored trace."""

from __future__ import annotations

import pytest

import keel
from conftest import KeelServer, llm_calls, trace_id_of

pytest.importorskip("langchain_core")
lc_openai = pytest.importorskip("langchain_openai")


@pytest.mark.slow
def test_langchain_chat_model_with_tools(instrumented: KeelServer, fake_llm) -> None:
    assert keel.instrument("langchain") == {"langchain": "on"}
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return "sunny, 24C"

    llm = lc_openai.ChatOpenAI(
        model="gpt-4o-mini", base_url=fake_llm.url, api_key="sk-fake", max_retries=0
    ).bind_tools([get_weather])
    with keel.span("langchain-run", kind="chain") as root:
        ai = llm.invoke("What is the weather in Paris today?")
        result = get_weather.invoke(ai.tool_calls[0]["args"])
    assert result == "sunny, 24C"

    trace = instrumented.wait_trace(trace_id_of(root), min_spans=3)
    calls = llm_calls(trace, scope_prefix="openinference.instrumentation.langchain")
    assert len(calls) == 1
    _, call = calls[0]
    assert call.dialect == "openinference"
    assert call.request_model == "gpt-4o-mini"
    assert call.input_tokens == 15 and call.output_tokens == 12
    assert call.input_messages[-1].content == "What is the weather in Paris today?"
    assert [(t.name, t.arguments) for t in call.tool_calls] == [("get_weather", {"city": "Paris"})]
    tools = [s for s in trace.spans if s.attributes.get("openinference.span.kind") == "TOOL"]
    assert tools and tools[0].attributes.get("tool.name") == "get_weather"
