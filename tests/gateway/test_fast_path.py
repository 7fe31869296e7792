"""The raw ASGI fast path for ``POST /v1/chat/completions`` (ahead of the framework stack).

It must answer exactly as the framework route would: body cap (413), bad JSON / bad key /
a bug in Keel in the OpenAI error envelope, and other routes untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from keel.core.spans import LlmCall, Span
from keel.gateway.provider import CallContext
from keel.gateway.telemetry import _hex, build_span

ROUTE = {"routes": {"r": {"targets": [{"provider": "fake", "model": "fake:echo"}]}}}
BODY = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}


def test_fast_path_answers_and_keeps_error_envelopes(keel_server: Callable[..., Any]) -> None:
    k = keel_server(ROUTE)
    assert k.app.keel_fast_chat is not None
    auth = {"Authorization": f"Bearer {k.secret}"}
    with httpx.Client(base_url=k.url, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=BODY, headers=auth)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["content-length"]) == len(r.content)
        assert r.json()["object"] == "chat.completion"

        r = c.post("/v1/chat/completions", content=b"{not json", headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "request body is not valid JSON"

        r = c.post("/v1/chat/completions", json=BODY, headers={"Authorization": "Bearer sk-nope"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert "error" in r.json()

        r = c.post("/v1/chat/completions", json={"model": "r"}, headers=auth)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "'messages' must be a non-empty list"

        # the other routes still go through the framework
        r = c.get("/v1/models", headers=auth)
        assert r.status_code == 200 and r.json()["object"] == "list"


def test_fast_path_body_cap(keel_server: Callable[..., Any]) -> None:
    k = keel_server(ROUTE, server={"max_body_bytes": 4096})
    auth = {"Authorization": f"Bearer {k.secret}"}
    big = {**BODY, "messages": [{"role": "user", "content": "x" * 10_000}]}
    with httpx.Client(base_url=k.url, timeout=10) as c:
        r = c.post("/v1/chat/completions", json=big, headers=auth)
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"

        def chunks() -> Any:  # no Content-Length: the cap applies while reading
            raw = orjson.dumps(big)
            for i in range(0, len(raw), 1000):
                yield raw[i : i + 1000]

        r = c.post(
            "/v1/chat/completions",
            content=chunks(),
            headers={**auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"


def test_fast_path_bug_is_a_500_with_an_incident(keel_server: Callable[..., Any]) -> None:
    k = keel_server(ROUTE)

    async def broken(*_a: Any, **_kw: Any) -> Any:
        raise RuntimeError("boom")

    k.gateway.chat = broken
    with httpx.Client(base_url=k.url, timeout=10) as c:
        r = c.post(
            "/v1/chat/completions", json=BODY, headers={"Authorization": f"Bearer {k.secret}"}
        )
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "internal_error" and "incident" in err["message"]
    assert "boom" not in r.text


def test_built_span_is_what_validation_would_build() -> None:
    ctx = CallContext(project_id="p1", key_id="key1", sticky_key=None)
    d = ctx.decision
    d.route, d.target, d.provider, d.config_hash = "r", "fake/fake:echo", "fake", "h"
    d.input_tokens, d.output_tokens = 3, 2
    req = {"model": "r", "messages": [{"role": "user", "content": "hi"}]}
    resp = {
        "model": "fake:echo",
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    }
    tp = ("a" * 32, "b" * 16)
    for trace in (tp, (None, None)):
        span, llm = build_span(("chat", ctx, req, resp, None, 10, 20, *trace))
        again = Span.model_validate(span.model_dump())
        assert again == span
        assert span.model_dump() == again.model_dump()
        assert isinstance(llm, LlmCall)
        assert len(span.trace_id) == 32 and len(span.span_id) == 16
        int(span.trace_id, 16), int(span.span_id, 16)
    assert (
        span.trace_id != build_span(("chat", ctx, req, resp, None, 10, 20, None, None))[0].trace_id
    )
    ids = {_hex(8) for _ in range(10_000)}
    assert len(ids) == 10_000 and all(len(i) == 16 and i != "0" * 16 for i in ids)


@pytest.mark.parametrize(
    ("req", "resp"),
    [
        (
            {
                "model": "r",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [{"type": "text", "text": "a"}, {"text": "b"}]},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c1", "function": {"name": "f", "arguments": '{"x": 1}'}},
                            {"function": {"name": "g"}},
                            "junk",
                        ],
                    },
                    {"role": "tool", "tool_call_id": "c1", "content": "42"},
                    "junk",
                ],
            },
            {
                "model": "m-1",
                "choices": [
                    {
                        "message": {
                            "content": None,
                            "tool_calls": [{"id": "c2", "function": {"name": "h", "arguments": {}}}],
                        },
                        "finish_reason": "tool_calls",
                    },
                    {"message": {"content": "x"}, "finish_reason": None},
                ],
            },
        ),
        # what clients and upstreams should not send, but do: odd types are coerced, not fatal
        (
            {"model": 7, "messages": [{"role": "tool", "tool_call_id": 12, "content": 3}]},
            {"model": 5, "choices": ["junk", {"message": "junk"}, {"message": {"content": 9}}]},
        ),
        ({"model": "r"}, None),
    ],
)
def test_span_models_built_without_validation_equal_validated_ones(
    req: dict[str, Any], resp: dict[str, Any] | None
) -> None:
    """build_span makes Message/ToolCall/LlmCall without pydantic validation: the result must
    be what validation would accept and give, and the message attributes what model_dump gave."""
    ctx = CallContext(project_id="p1", key_id="key1", sticky_key=None)
    d = ctx.decision
    d.route, d.target, d.provider, d.config_hash = "r", "t", "openai", "h"
    d.input_tokens, d.output_tokens, d.cost_usd, d.ttft_ms = 3.0, None, 0.5, 12.5  # type: ignore[assignment]
    d.prompt_name, d.prompt_version = "p", 2
    span, llm = build_span(("chat", ctx, req, resp, "rate_limit: slow down", 10, 20, None, None))
    assert LlmCall.model_validate(llm.model_dump()) == llm
    assert llm.model_dump() == LlmCall.model_validate(llm.model_dump()).model_dump()
    assert llm.total_tokens == 3 and llm.cost_source == "genai-prices"
    for key, msgs in (
        ("gen_ai.input.messages", llm.input_messages),
        ("gen_ai.output.messages", llm.output_messages),
    ):
        if msgs:
            assert orjson.loads(span.attributes[key]) == [
                m.model_dump(exclude_none=True) for m in msgs
            ]
        else:
            assert key not in span.attributes
    assert Span.model_validate(span.model_dump()) == span
