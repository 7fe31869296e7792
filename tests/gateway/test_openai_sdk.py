"""The official ``openai`` SDK against the running gateway: sync, async, streaming, tools,
embeddings, models, errors."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

MSG = [{"role": "user", "content": "hello there keel"}]


@pytest.fixture
def keel(keel_server, mock_providers):
    return keel_server(
        {
            "providers": mock_providers,
            "routes": {
                "chat": {"targets": [{"provider": "mock", "model": "echo"}], "retries": 0},
                "claude": {"targets": [{"provider": "mockant", "model": "tool"}], "retries": 0},
                "claude-echo": {
                    "targets": [{"provider": "mockant", "model": "echo"}],
                    "retries": 0,
                },
                "azure": {"targets": [{"provider": "mockazure", "model": "echo"}], "retries": 0},
                "limited": {
                    "targets": [{"provider": "mock", "model": "error-429"}],
                    "retries": 0,
                    "circuit_breaker": None,
                },
            },
        }
    )


@pytest.fixture
def client(keel):
    return openai.OpenAI(base_url=keel.v1, api_key=keel.secret, max_retries=2)


def test_sync_chat_fake_echo(client):
    r = client.chat.completions.create(model="fake:echo", messages=MSG)
    assert r.object == "chat.completion"
    assert r.choices[0].message.content == "hello there keel"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens > 0


def test_sync_chat_through_route(client):
    r = client.chat.completions.create(model="chat", messages=MSG, temperature=0)
    assert r.choices[0].message.content == "hello there keel"


def test_async_chat_concurrent(keel):
    async def go():
        c = openai.AsyncOpenAI(base_url=keel.v1, api_key=keel.secret)
        rs = await asyncio.gather(
            *[
                c.chat.completions.create(
                    model="chat", messages=[{"role": "user", "content": f"m{i}"}]
                )
                for i in range(20)
            ]
        )
        await c.close()
        return [r.choices[0].message.content for r in rs]

    assert asyncio.run(go()) == [f"m{i}" for i in range(20)]


@pytest.mark.parametrize("model", ["fake:echo", "chat", "claude-echo", "azure"])
def test_streaming_with_usage(client, model):
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MSG, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip() == "hello there keel"
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage is not None
        and chunks[-1].usage.total_tokens > 0
    )
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(client.chat.completions.create(model="chat", messages=MSG, stream=True))
    assert all(c.choices for c in chunks)


def test_raw_sse_format(keel):
    with httpx.stream(
        "POST",
        f"{keel.v1}/chat/completions",
        json={"model": "fake:echo", "messages": MSG, "stream": True},
        headers={"Authorization": f"Bearer {keel.secret}"},
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"]["role"] == "assistant"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


@pytest.mark.parametrize("model", ["fake:tool", "claude"])
def test_tool_calls(client, model):
    r = client.chat.completions.create(model=model, messages=MSG, tools=TOOLS, tool_choice="auto")
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    call = ch.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "hello there keel"}
    # the tool result goes back and the conversation continues
    msgs = [
        *MSG,
        ch.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    r2 = client.chat.completions.create(
        model="claude-echo" if model == "claude" else "fake:echo", messages=msgs, tools=TOOLS
    )
    assert r2.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["fake:tool", "claude"])
def test_streaming_tool_call_deltas(client, model):
    with client.chat.completions.stream(model=model, messages=MSG, tools=TOOLS) as s:
        for _ in s:
            pass
        final = s.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"query": "hello there keel"}
    assert final.choices[0].finish_reason == "tool_calls"


def test_response_format_json(client):
    r = client.chat.completions.create(
        model="fake:json", messages=MSG, response_format={"type": "json_object"}
    )
    assert json.loads(r.choices[0].message.content)["ok"] is True


def test_n_choices(client):
    r = client.chat.completions.create(model="chat", messages=MSG, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    chunks = list(client.chat.completions.create(model="fake:echo", messages=MSG, n=2, stream=True))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}


def test_embeddings(client):
    r = client.embeddings.create(model="fake:embed", input=["a", "bb"])
    assert [d.index for d in r.data] == [0, 1] and len(r.data[0].embedding) == 8
    r2 = client.embeddings.create(model="mock/embed", input="hello")
    assert r2.data[0].embedding[0] == 5.0


def test_embeddings_span_joins_the_callers_trace(keel, client):
    import os
    import time

    from keel.storage.spans import SpanFilter

    tid = os.urandom(16).hex()
    parent = os.urandom(8).hex()
    client.embeddings.create(
        model="fake:embed", input="x", extra_headers={"traceparent": f"00-{tid}-{parent}-01"}
    )
    deadline = time.time() + 5
    items: list = []
    while not items and time.time() < deadline:
        for p in keel.store.projects.list_projects():
            items += keel.store.spans.list_spans(p.id, SpanFilter(trace_id=tid)).items
        time.sleep(0.05)
    assert len(items) == 1 and items[0].parent_span_id == parent


def test_models(client):
    ids = {m.id for m in client.models.list()}
    assert {"chat", "claude", "fake:echo"} <= ids
    assert client.models.retrieve("chat").id == "chat"


def test_errors_map_to_sdk_exceptions(keel, client, upstream):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MSG)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="fake:echo", messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keel.v1, api_key="keel-wrong", max_retries=0).models.list()
    before = len(upstream.calls("error-429"))
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="limited", messages=MSG)
    # x-should-retry: false stops the SDK from multiplying the gateway's retries
    assert e.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.calls("error-429")) - before == 1
    with pytest.raises(openai.APIError):
        list(client.chat.completions.create(model="fake:cut", messages=MSG, stream=True))


def test_client_cannot_redirect_upstream(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="chat", messages=MSG, extra_body={"api_base": "http://169.254.169.254/v1"}
        )


def test_langchain_chat_openai(keel):
    lc = pytest.importorskip("langchain_openai")
    llm = lc.ChatOpenAI(model="fake:echo", base_url=keel.v1, api_key=keel.secret, max_retries=0)
    assert llm.invoke("hi langchain").content == "hi langchain"
    assert "".join(c.content for c in llm.stream("streamed words")) == "streamed words"


def test_key_limits_and_allowed_routes_are_enforced(keel):
    from keel.server.auth import create_api_key

    project = keel.store.projects.find_project_by_name("gw-test")
    _, limited = create_api_key(keel.store, project, name="limited", rpm_limit=2)
    _, narrow = create_api_key(keel.store, project, name="narrow", allowed_routes=["chat"])
    keel.app.state.keel.auth.invalidate()
    c = openai.OpenAI(base_url=keel.v1, api_key=limited, max_retries=0)
    for _ in range(2):
        c.chat.completions.create(model="fake:echo", messages=MSG)
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="fake:echo", messages=MSG)
    assert e.value.response.headers.get("retry-after")
    n = openai.OpenAI(base_url=keel.v1, api_key=narrow, max_retries=0)
    assert n.chat.completions.create(model="chat", messages=MSG).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError):
        n.chat.completions.create(model="claude", messages=MSG)
    assert {m.id for m in n.models.list()} == {"chat"}
