"""Hand-written spans for the dialect features the fixture corpus does not exercise."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core import semconv
from keel.core.spans import LlmCall, Span, SpanEvent, SpanStatus
from keel.otlp import dialects
from keel.otlp.dialects import detect_dialect, to_llm_call

T0 = 1_767_225_600_000_000_000


def _span(attrs: dict[str, Any], events: list[SpanEvent] | None = None, **kw: Any) -> Span:
    return Span(
        trace_id="0" * 31 + "1",
        span_id="0" * 15 + "1",
        name=kw.pop("name", "step"),
        start_time_ns=T0,
        end_time_ns=T0 + 5_000_000,
        attributes=attrs,
        events=events or [],
        **kw,
    )


def test_plain_spans_are_not_llm_calls() -> None:
    http = {"http.request.method": "GET", "url.path": "/x", "http.response.status_code": 200}
    assert to_llm_call(http) is None
    assert to_llm_call(_span(http)) is None
    assert detect_dialect(http) is None


def test_genai_2026_names_and_keel_stamps() -> None:
    call = to_llm_call(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "az.ai.openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 100,
            "gen_ai.usage.output_tokens": 20,
            "gen_ai.usage.cache_read.input_tokens": 40,
            "gen_ai.usage.cache_write.input_tokens": 10,
            "gen_ai.usage.reasoning.output_tokens": 5,
            "gen_ai.response.time_to_first_chunk": 0.25,
            "gen_ai.prompt.name": "support-answer",
            "gen_ai.prompt.version": "prod",
            semconv.ROUTE: "support",
            semconv.AGENT_STEP: 3,
            "gen_ai.system_instructions": '[{"type":"text","content":"Be brief."}]',
            "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
        }
    )
    assert call is not None
    assert call.provider == "azure.ai.openai"
    assert (call.cached_tokens, call.cache_write_tokens, call.reasoning_tokens) == (40, 10, 5)
    assert call.total_tokens == 120
    assert call.ttft_ms == 250.0
    assert (call.prompt_name, call.prompt_version, call.prompt_label) == (
        "support-answer",
        None,
        "prod",
    )
    assert call.route == "support" and call.agent_step == 3
    assert [m.role for m in call.input_messages] == ["system", "user"]


def test_keel_prompt_names_win() -> None:
    call = to_llm_call(
        {
            "gen_ai.operation.name": "chat",
            semconv.PROMPT_NAME: "p",
            semconv.PROMPT_VERSION: 4,
            semconv.PROMPT_LABEL: "canary",
            "langfuse.observation.prompt.name": "other",
        }
    )
    assert call is not None and (call.prompt_name, call.prompt_version, call.prompt_label) == (
        "p",
        4,
        "canary",
    )


def test_legacy_message_events() -> None:
    events = [
        SpanEvent(name="gen_ai.system.message", time_ns=T0, attributes={"content": "sys"}),
        SpanEvent(
            name="gen_ai.user.message",
            time_ns=T0,
            attributes={"gen_ai.event.content": json.dumps({"content": "question"})},
        ),
        SpanEvent(
            name="gen_ai.choice",
            time_ns=T0 + 1,
            attributes={
                "gen_ai.event.content": json.dumps(
                    {
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "id": "c1",
                                    "function": {"name": "f", "arguments": '{"a": 1}'},
                                }
                            ],
                        },
                    }
                )
            },
        ),
    ]
    call = to_llm_call(_span({"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o"}, events))
    assert call is not None and call.operation == "chat"
    assert [(m.role, m.content) for m in call.input_messages] == [
        ("system", "sys"),
        ("user", "question"),
    ]
    assert call.tool_calls[0].name == "f" and call.tool_calls[0].arguments == {"a": 1}
    assert call.finish_reasons == ["tool_calls"]


def test_inference_details_event() -> None:
    ev = SpanEvent(
        name="gen_ai.client.inference.operation.details",
        time_ns=T0,
        attributes={
            "gen_ai.input.messages": [
                {"role": "user", "parts": [{"type": "text", "content": "q"}]}
            ],
            "gen_ai.output.messages": [
                {"role": "assistant", "parts": [{"type": "text", "content": "a"}]}
            ],
        },
    )
    call = to_llm_call(_span({"gen_ai.operation.name": "chat"}, [ev]))
    assert call is not None and call.input_text == "q" and call.output_text == "a"


def test_retrieval_documents_both_dialects() -> None:
    oi = to_llm_call(
        {
            "openinference.span.kind": "RETRIEVER",
            "retrieval.documents.0.document.id": "a",
            "retrieval.documents.0.document.content": "alpha",
            "retrieval.documents.0.document.score": 0.5,
            "retrieval.documents.0.document.metadata": '{"src": "wiki"}',
            "retrieval.documents.1.document.content": "beta",
        }
    )
    assert oi is not None and oi.operation == "retrieval"
    assert [(d.id, d.content, d.score) for d in oi.documents] == [
        ("a", "alpha", 0.5),
        (None, "beta", None),
    ]
    assert oi.documents[0].metadata == {"src": "wiki"}
    g = to_llm_call(
        {
            "gen_ai.operation.name": "retrieval",
            "gen_ai.retrieval.documents": '[{"id": "doc_1", "score": 0.9}]',
        }
    )
    assert g is not None and g.documents[0].id == "doc_1" and g.documents[0].score == 0.9


def test_tool_spans() -> None:
    oi = to_llm_call(
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "search",
            "input.value": '{"q": "x"}',
            "output.value": "found",
        }
    )
    assert oi is not None and oi.operation == "execute_tool" and oi.tool_name == "search"
    assert (oi.tool_calls[0].arguments, oi.tool_calls[0].result) == ({"q": "x"}, "found")
    g = to_llm_call(
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "calc",
            "gen_ai.tool.call.id": "call_9",
            "gen_ai.tool.call.arguments": '{"x": 2}',
            "gen_ai.tool.call.result": "4",
        }
    )
    assert g is not None and g.tool_calls[0].id == "call_9" and g.tool_calls[0].result == "4"
    mcp = to_llm_call({"mcp.method.name": "tools/call", "gen_ai.tool.name": "weather"})
    assert mcp is not None and mcp.operation == "execute_tool" and mcp.tool_name == "weather"


def test_agent_spans() -> None:
    a = to_llm_call({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"})
    assert a is not None and a.agent_name == "planner"
    oi = to_llm_call(_span({"openinference.span.kind": "AGENT"}, name="Researcher"))
    assert oi is not None and oi.operation == "invoke_agent" and oi.agent_name == "Researcher"
    lf = to_llm_call({"langfuse.observation.type": "agent", "agent.trajectory.step": "2"})
    assert lf is not None and lf.operation == "invoke_agent" and lf.agent_step == 2


def test_error_types() -> None:
    c = to_llm_call({"gen_ai.operation.name": "chat", "error.type": "<class 'openai.APIError'>"})
    assert c is not None and c.error_type == "openai.APIError"
    s = _span(
        {"gen_ai.operation.name": "chat"},
        status=SpanStatus.ERROR,
        status_message="Error code: 429 - rate limited",
    )
    c2 = to_llm_call(s)
    assert c2 is not None and c2.error_type == "429"


def test_reported_cost_kept_and_zero_ignored() -> None:
    c = to_llm_call({"openinference.span.kind": "LLM", "llm.cost.total": 0.25})
    assert c is not None and (c.cost_usd, c.cost_source) == (0.25, "span:llm.cost.total")
    z = to_llm_call(
        {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5, "gen_ai.usage.cost": 0}
    )
    assert z is not None and z.cost_usd is None


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.sampled_from(["[", "{", '{"role": 1}', "[{}]", '[{"parts": 5}]', "Infinity", "1e999"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
_keys = st.sampled_from(
    [
        "gen_ai.operation.name",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.usage.input_tokens",
        "gen_ai.prompt",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.tool_calls.0.name",
        "llm.input_messages.0.message.role",
        "llm.output_messages.0.message.content",
        "llm.invocation_parameters",
        "langfuse.observation.type",
        "langfuse.observation.input",
        "langfuse.observation.usage_details",
        "retrieval.documents.0.document.content",
        "gen_ai.retrieval.documents",
        "gen_ai.tool.definitions",
        "error.type",
        "keel.prompt.version",
        "gen_ai.response.finish_reasons",
        "openinference.span.kind",
    ]
) | st.text(max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=12))
def test_never_raises_on_hostile_attributes(attrs: dict[str, Any]) -> None:
    # the reader itself, not only the guard in to_llm_call, copes with any shape
    if dialects._is_candidate(attrs):
        call = dialects._build(attrs, None)
        assert call is None or call.dialect is not None
        if call is not None:  # built without validation: every value must still be valid
            assert LlmCall.model_validate(call.model_dump()) == call
    assert to_llm_call(attrs) is None or dialects._is_candidate(attrs)
