"""``POST /v1/responses`` with the official ``openai`` SDK against a real Keel server: text,
message items, instructions, function tools and their outputs, usage, streaming events (sync,
async, the SDK's stream manager), errors before and during a stream, key limits, and the span
each request leaves (including the guardrail-verdicts attribute every span carries)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import openai
import pytest

from keel.gateway import responses_api as rapi
from keel.server.auth import create_api_key
from keel.storage.spans import SpanFilter

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def keel(keel_server):
    return keel_server(
        {
            "routes": {
                "chat": {"targets": [{"provider": "fake", "model": "fake:echo"}], "retries": 0},
                "failover": {
                    "targets": [{"provider": "fake", "model": "fake:error-500"}],
                    "retries": 0,
                    "fallback": ["fake:text"],
                },
            }
        }
    )


@pytest.fixture
def client(keel):
    return openai.OpenAI(base_url=keel.v1, api_key=keel.secret, max_retries=0)


def _traceparent() -> tuple[str, dict[str, str]]:
    tid = os.urandom(16).hex()
    return tid, {"traceparent": f"00-{tid}-{os.urandom(8).hex()}-01"}


def _span(k: Any, trace_id: str, timeout: float = 5.0) -> Any:
    proj = k.store.projects.find_project_by_name("gw-test")
    deadline = time.time() + timeout
    while time.time() < deadline:
        items = k.store.spans.list_spans(proj.id, SpanFilter(trace_id=trace_id)).items
        if items:
            (span,) = items
            return span
        time.sleep(0.05)
    raise AssertionError(f"no span for trace {trace_id}")


# -- non-streaming --------------------------------------------------------------------------


def test_string_input_with_instructions_and_usage(client, keel):
    tid, headers = _traceparent()
    r = client.responses.create(
        model="fake:echo",
        input="hello responses api",
        instructions="You are terse.",
        temperature=0.2,
        max_output_tokens=64,
        extra_headers=headers,
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status == "completed" and r.error is None
    assert r.output_text == "hello responses api"
    (item,) = r.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.content[0].type == "output_text"
    u = r.usage
    assert u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens
    assert u.input_tokens_details.cached_tokens == 0
    assert r.instructions == "You are terse." and r.temperature == 0.2
    assert r.max_output_tokens == 64
    # The span of the underlying chat call: instructions became the system message.
    span = _span(keel, tid)
    msgs = json.loads(span.attributes["gen_ai.input.messages"])
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert span.attributes["gen_ai.usage.input_tokens"] == u.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == u.output_tokens


def test_message_items_and_function_call_round_trip(client, keel):
    # 1st turn: the model calls the tool.
    first = client.responses.create(
        model="fake:tool",
        input=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
    )
    (call,) = first.output
    assert call.type == "function_call" and call.status == "completed"
    assert call.name == "get_weather" and call.call_id
    assert json.loads(call.arguments) == {"query": "weather in Paris?"}
    assert first.status == "completed" and first.output_text == ""
    # 2nd turn: the whole conversation as items, including the call and its output.
    tid, headers = _traceparent()
    second = client.responses.create(
        model="chat",
        input=[
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "weather in Paris?"}],
            },
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": '{"c": 21}'},
            {"role": "user", "content": "and tomorrow?"},
        ],
        tools=[WEATHER_TOOL],
        extra_headers=headers,
    )
    assert second.output_text == "and tomorrow?"
    msgs = json.loads(_span(keel, tid).attributes["gen_ai.input.messages"])
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "user"]
    assert msgs[1]["tool_calls"][0]["id"] == call.call_id
    assert msgs[1]["tool_calls"][0]["name"] == "get_weather"


def test_json_schema_text_format(client):
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "ok": {"type": "boolean"}},
        "required": ["answer", "ok"],
        "additionalProperties": False,
    }
    r = client.responses.create(
        model="fake:json",
        input="structured please",
        text={"format": {"type": "json_schema", "name": "ans", "schema": schema, "strict": True}},
    )
    assert json.loads(r.output_text) == {"answer": "structured please", "ok": True}
    assert r.text.format.type == "json_schema"


def test_routes_and_fallbacks_apply(client):
    r = client.responses.create(model="failover", input="anything")
    assert r.output_text.startswith("This is a fixed answer")


def test_async_concurrent(keel):
    async def go() -> list[str]:
        c = openai.AsyncOpenAI(base_url=keel.v1, api_key=keel.secret, max_retries=0)
        rs = await asyncio.gather(
            *[c.responses.create(model="chat", input=f"m{i}") for i in range(12)]
        )
        await c.close()
        return [r.output_text for r in rs]

    assert asyncio.run(go()) == [f"m{i}" for i in range(12)]


# -- streaming ------------------------------------------------------------------------------

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_END = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def _check_text_stream(events: list[Any], text: str) -> None:
    types = [e.type for e in events]
    n_delta = types.count("response.output_text.delta")
    assert n_delta >= 2
    assert types == TEXT_EVENTS + ["response.output_text.delta"] * n_delta + TEXT_END
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == text
    assert events[0].response.status == "in_progress"
    done = events[-1].response
    assert done.status == "completed" and done.output_text == text
    assert done.id == events[0].response.id
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens > 0
    item_id = events[2].item.id
    assert all(getattr(e, "item_id", item_id) == item_id for e in events)
    assert events[-4].text == text and events[-2].item.content[0].text == text


def test_stream_sync_text(client):
    text = "streamed words for the responses api"
    events = list(client.responses.create(model="fake:echo", input=text, stream=True))
    _check_text_stream(events, text)


def test_stream_async_text(keel):
    async def go() -> list[Any]:
        c = openai.AsyncOpenAI(base_url=keel.v1, api_key=keel.secret, max_retries=0)
        s = await c.responses.create(model="chat", input="async streamed words", stream=True)
        out = [e async for e in s]
        await c.close()
        return out

    _check_text_stream(asyncio.run(go()), "async streamed words")


def test_stream_tool_call_events(client):
    events = list(
        client.responses.create(
            model="fake:tool", input="weather Oslo", tools=[WEATHER_TOOL], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert "response.function_call_arguments.delta" in types
    assert types[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert "response.output_text.delta" not in types
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"query": "weather Oslo"}
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert item.arguments == args and item.call_id == events[2].item.call_id


def test_stream_manager_final_response(client):
    with client.responses.stream(model="fake:echo", input="managed stream text") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        final = s.get_final_response()
    assert "".join(deltas) == final.output_text == "managed stream text"
    assert final.usage.output_tokens > 0


def test_stream_error_before_first_chunk_is_an_http_error(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model="fake:error-429", input="x", stream=True)
    assert e.value.response.headers["x-should-retry"] == "false"
    assert e.value.body["code"] == "rate_limited"


def test_stream_cut_ends_with_error_and_failed(client):
    events = list(
        client.responses.create(
            model="fake:cut", input="one two three four five six seven", stream=True
        )
    )
    types = [e.type for e in events]
    assert "response.output_text.delta" in types
    assert types[-2:] == ["error", "response.failed"]
    assert "response.completed" not in types
    assert events[-2].code == "stream_cut" and events[-2].message
    failed = events[-1].response
    assert failed.status == "failed" and failed.error.code == "stream_cut"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ],
)
def test_unsupported_fields_are_clear_400s(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="fake:echo", input="x", **kw)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param
    assert e.value.body["type"] == "invalid_request_error"
    if param in ("previous_response_id", "store"):
        assert "stateless" in e.value.body["message"]


def test_store_false_is_fine(client):
    assert client.responses.create(model="fake:echo", input="ok", store=False).output_text == "ok"


def test_upstream_and_input_errors(client, keel):
    with pytest.raises(openai.RateLimitError) as e:
        client.responses.create(model="fake:error-429", input="x")
    assert e.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(openai.BadRequestError) as e2:
        client.responses.create(model="fake:context-length", input="x")
    assert e2.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-route", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="fake:echo", input=[])
    bad = openai.OpenAI(base_url=keel.v1, api_key="keel_sk_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.responses.create(model="fake:echo", input="x")


def test_key_limits_apply(keel):
    project = keel.store.projects.find_project_by_name("gw-test")
    _, limited = create_api_key(keel.store, project, name="limited", rpm_limit=2)
    _, narrow = create_api_key(keel.store, project, name="narrow", allowed_routes=["chat"])
    keel.app.state.keel.auth.invalidate()
    c = openai.OpenAI(base_url=keel.v1, api_key=limited, max_retries=0)
    c.responses.create(model="fake:echo", input="1")
    c.responses.create(model="fake:echo", input="2", stream=True).close()
    with pytest.raises(openai.RateLimitError) as e:
        c.responses.create(model="fake:echo", input="3")
    assert e.value.response.headers.get("retry-after")
    n = openai.OpenAI(base_url=keel.v1, api_key=narrow, max_retries=0)
    assert n.responses.create(model="chat", input="fine").output_text == "fine"
    with pytest.raises(openai.PermissionDeniedError):
        n.responses.create(model="failover", input="no")


# -- spans: the guardrail verdicts attribute is on every request's span ------------------------


def test_every_span_has_guardrail_verdicts(client, keel):
    """Until guardrails run, ``keel.guardrails.verdicts`` is ``"[]"`` on every gateway span:
    chat and responses, streaming or not, fallbacks, failures, embeddings."""
    msg = [{"role": "user", "content": "hi"}]
    calls = [
        lambda h: client.chat.completions.create(model="fake:echo", messages=msg, extra_headers=h),
        lambda h: list(
            client.chat.completions.create(model="chat", messages=msg, stream=True, extra_headers=h)
        ),
        lambda h: client.responses.create(model="fake:echo", input="hi", extra_headers=h),
        lambda h: list(
            client.responses.create(model="chat", input="hi", stream=True, extra_headers=h)
        ),
        lambda h: client.responses.create(model="failover", input="hi", extra_headers=h),
        lambda h: client.chat.completions.create(
            model="fake:error-500", messages=msg, extra_headers=h
        ),
        lambda h: list(
            client.responses.create(
                model="fake:cut", input="a b c d e f", stream=True, extra_headers=h
            )
        ),
    ]
    for i, call in enumerate(calls):
        tid, h = _traceparent()
        try:
            call(h)
        except openai.APIError:
            assert i >= 5
        span = _span(keel, tid)
        assert span.attributes["keel.guardrails.verdicts"] == "[]", span.name
        assert (span.status_message is not None) == (i >= 5), span.name
    # Embeddings spans do not join the caller's trace; find it by operation instead.
    client.embeddings.create(model="fake:echo", input="hi")
    proj = keel.store.projects.find_project_by_name("gw-test")
    deadline = time.time() + 5
    spans: list[Any] = []
    while time.time() < deadline and not spans:
        spans = keel.store.spans.list_spans(proj.id, SpanFilter(operation="embeddings")).items
        time.sleep(0.05)
    assert spans and spans[0].attributes["keel.guardrails.verdicts"] == "[]"


# -- pure translation -----------------------------------------------------------------------


def test_to_chat_mapping():
    chat = rapi.to_chat(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "dev"},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "look"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    ],
                },
                {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
            ],
            "instructions": "sys",
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "max_output_tokens": 50,
            "temperature": 0,
            "top_p": 0.5,
            "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}},
            "reasoning": {"effort": "low"},
            "metadata": {"a": "b"},
            "store": False,
        }
    )
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "developer", "content": "dev"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            ],
        },
        {"role": "assistant", "content": "ok"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER_TOOL["parameters"],
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["max_completion_tokens"] == 50
    assert chat["temperature"] == 0 and chat["top_p"] == 0.5
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "n", "schema": {"type": "object"}},
    }
    assert chat["reasoning_effort"] == "low"
    assert "metadata" not in chat and "store" not in chat


def test_from_chat_length_is_incomplete_and_cached_tokens():
    resp = rapi.from_chat(
        {"model": "m", "max_output_tokens": 3},
        {
            "model": "m-2024",
            "created": 5,
            "choices": [{"message": {"content": "abc"}, "finish_reason": "length"}],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 3,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
        },
    )
    assert resp["status"] == "incomplete"
    assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
    assert resp["output"][0]["status"] == "incomplete"
    assert resp["usage"]["input_tokens_details"] == {"cached_tokens": 8}
    assert resp["usage"]["total_tokens"] == 13 and resp["model"] == "m-2024"


def test_stream_translator_text_then_two_tool_calls():
    def ch(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def tc(i: int, **kw: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": i, **kw}]}

    tr = rapi.StreamTranslator({"model": "m", "input": "x"})
    evs = tr.start()
    for c in [
        ch({"role": "assistant", "content": "Let me check."}),
        ch(tc(0, id="call_a", type="function", function={"name": "f", "arguments": ""})),
        ch(tc(0, function={"arguments": '{"a":'})),
        ch(tc(0, function={"arguments": "1}"})),
        ch(tc(1, id="call_b", type="function", function={"name": "g", "arguments": "{}"})),
        ch({}, "tool_calls"),
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
    ]:
        evs += tr.chunk(c)
    evs += tr.end()
    assert [(e["type"], e.get("output_index")) for e in evs] == [
        ("response.created", None),
        ("response.in_progress", None),
        ("response.output_item.added", 0),
        ("response.content_part.added", 0),
        ("response.output_text.delta", 0),
        ("response.output_text.done", 0),
        ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.delta", 1),
        ("response.function_call_arguments.done", 1),
        ("response.output_item.done", 1),
        ("response.output_item.added", 2),
        ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2),
        ("response.output_item.done", 2),
        ("response.completed", None),
    ]
    assert [e["sequence_number"] for e in evs] == list(range(len(evs)))
    final = evs[-1]["response"]
    assert [o["type"] for o in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][0]["content"][0]["text"] == "Let me check."
    assert [(o.get("call_id"), o.get("arguments")) for o in final["output"][1:]] == [
        ("call_a", '{"a":1}'),
        ("call_b", "{}"),
    ]
    assert final["usage"]["total_tokens"] == 12
    assert b"event: response.completed\ndata: " in rapi.sse(evs[-1])
