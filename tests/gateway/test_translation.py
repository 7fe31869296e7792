"""Pure request/response translation: OpenAI <-> Anthropic Messages, OpenAI passthrough."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.errors import ProviderError
from keel.gateway.provider import parse_retry_after
from keel.gateway.providers.anthropic import (
    StreamTranslator,
    from_anthropic_response,
    to_anthropic_request,
    usage_from_anthropic,
)
from keel.gateway.providers.http import classify_error
from keel.gateway.providers.openai import to_openai_request


def test_system_tools_and_tool_results_map_to_anthropic():
    body = {
        "model": "x",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "warm"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "d",
                    "parameters": {"type": "object", "properties": {}},
                },
            }
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_completion_tokens": 77,
        "stop": "END",
        "user": "u1",
    }
    a = to_anthropic_request(body, "claude-x", stream=True)
    assert a["system"] == "be brief" and a["model"] == "claude-x" and a["max_tokens"] == 77
    assert a["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": "weather in Paris?"}],
    }
    assert a["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "call_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }
    # consecutive tool results merge into one user turn
    assert [b["tool_use_id"] for b in a["messages"][2]["content"]] == ["call_1", "call_2"]
    assert a["tools"][0]["input_schema"] == {"type": "object", "properties": {}}
    assert a["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert (
        a["stop_sequences"] == ["END"]
        and a["metadata"] == {"user_id": "u1"}
        and a["stream"] is True
    )


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(reason, finish):
    out = from_anthropic_response(
        {
            "id": "m",
            "model": "c",
            "content": [{"type": "text", "text": "x"}],
            "stop_reason": reason,
            "usage": {},
        }
    )
    assert out["choices"][0]["finish_reason"] == finish


def test_cached_token_accounting():
    u = usage_from_anthropic(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        }
    )
    assert u["prompt_tokens"] == 130 and u["total_tokens"] == 135
    assert u["prompt_tokens_details"] == {"cached_tokens": 100, "cache_write_tokens": 20}


def test_stream_translation_with_tool_use():
    tr = StreamTranslator("c")
    events = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "model": "claude",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": "Let me check."},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": "1}"},
        },
        {"type": "ping"},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    out = [c for e in events for c in tr.feed(None, e)]
    assert out[0]["choices"][0]["delta"]["role"] == "assistant" and out[0]["id"] == "chatcmpl-msg_1"
    assert out[1]["choices"][0]["delta"]["content"] == "Let me check."
    first_tool = out[2]["choices"][0]["delta"]["tool_calls"][0]
    assert first_tool == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "w", "arguments": ""},
    }
    args = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in out[3:5]
    )
    assert orjson.loads(args) == {"a": 1}
    assert out[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert (
        out[6]["choices"] == []
        and out[6]["usage"]["completion_tokens"] == 9
        and out[6]["usage"]["prompt_tokens"] == 3
    )


def test_stream_error_event_raises():
    tr = StreamTranslator("c")
    with pytest.raises(ProviderError) as e:
        tr.feed(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    assert e.value.code == "overloaded" and e.value.retryable


def test_openai_request_drops_keel_fields_and_asks_for_usage():
    out = to_openai_request(
        {"model": "route", "messages": [], "variables": {"a": 1}, "stream": True},
        "gpt-x",
        stream=True,
    )
    assert out["model"] == "gpt-x" and "variables" not in out
    assert out["stream_options"] == {"include_usage": True}
    out2 = to_openai_request(
        {"model": "r", "messages": [], "stream": True, "stream_options": {"include_usage": True}},
        "m",
        stream=False,
    )
    assert "stream" not in out2 and "stream_options" not in out2


def test_error_classification():
    e = classify_error(
        400,
        {},
        b'{"error":{"message":"maximum context length is 8k","code":"context_length_exceeded"}}',
        "up",
    )
    assert e.code == "context_length_exceeded" and not e.retryable and e.status == 400
    e = classify_error(429, {"retry-after": "3"}, b"{}", "up")
    assert e.retryable and e.retry_after == 3.0 and e.status == 429
    e = classify_error(
        529,
        {},
        b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
        "up",
    )
    assert e.code == "overloaded" and e.status == 503 and e.retryable
    e = classify_error(401, {}, b'{"error":{"message":"bad key"}}', "up")
    assert e.code == "upstream_auth" and e.status == 502 and not e.retryable


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


@given(
    st.text(max_size=200),
    st.lists(st.sampled_from(["user", "assistant", "system"]), min_size=1, max_size=6),
)
def test_anthropic_translation_never_crashes_and_keeps_user_text(text, roles):
    msgs = [{"role": r, "content": text} for r in roles]
    a = to_anthropic_request({"messages": msgs}, "m", stream=False)
    # Anthropic turns never repeat a role back to back
    assert all(
        x["role"] != y["role"] for x, y in zip(a["messages"], a["messages"][1:], strict=False)
    )
    if text and "user" in roles:
        assert any(
            b.get("text") == text
            for m in a["messages"]
            if m["role"] == "user"
            for b in m["content"]
        )


def test_upstream_error_text_is_redacted():
    body = b'{"error":{"message":"Incorrect API key provided: sk-proj-abc123***xyz9. You can find your key at ..."}}'
    e = classify_error(401, {}, body, "openai")
    assert "sk-proj" not in e.message and "abc123" not in e.message and "[redacted]" in e.message
