"""The exact cache: keys, tenant scoping, TTLs, LRU bounds, Redis, streaming."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keel.gateway.cache import (
    ExactCache,
    MemoryCacheBackend,
    RedisCacheBackend,
    StreamAssembler,
    is_cacheable,
    record_stream,
    replay_stream,
    request_key,
)
from keel.gateway.provider import CacheScope

pytestmark = pytest.mark.anyio
REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


A = CacheScope(project_id="prj_a", route="support", model="gpt-4o-mini", prompt_version="3")
B = CacheScope(project_id="prj_b", route="support", model="gpt-4o-mini", prompt_version="3")
BODY = {
    "model": "support",
    "messages": [{"role": "user", "content": "What is the refund window?"}],
    "temperature": 0,
}


def completion(text: str, finish: str = "stop") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_key_ignores_transport_fields_nulls_and_key_order() -> None:
    k = request_key(A, BODY)
    same = {
        "temperature": 0,
        "messages": [{"content": "What is the refund window?", "role": "user", "name": None}],
        "model": "support",
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-17",
        "metadata": {"x": "y"},
        "top_p": None,
    }
    assert request_key(A, same) == k


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.7},
        {"messages": [{"role": "user", "content": "What is the refund window ?"}]},
        {"messages": [{"role": "system", "content": "Be brief."}] + BODY["messages"]},  # type: ignore[operator]
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"tool_choice": "required"},
        {"response_format": {"type": "json_object"}},
        {"seed": 1},
        {"max_tokens": 5},
        {"n": 2},
        {"stop": ["\n"]},
        {"model": "other"},
    ],
)
def test_key_changes_with_anything_that_changes_the_answer(change: dict[str, Any]) -> None:
    assert request_key(A, {**BODY, **change}) != request_key(A, BODY)


@pytest.mark.parametrize(
    "other",
    [
        B,
        CacheScope("prj_a", "billing", "gpt-4o-mini", "3"),
        CacheScope("prj_a", "support", "gpt-4o", "3"),
        CacheScope("prj_a", "support", "gpt-4o-mini", "4"),
        CacheScope("prj_a", "support", "gpt-4o-mini", None),
    ],
)
async def test_scopes_never_share_entries(other: CacheScope) -> None:
    cache = ExactCache()
    await cache.store(A, BODY, completion("30 days"))
    assert (hit := await cache.lookup(A, BODY)) is not None
    assert hit.response["choices"][0]["message"]["content"] == "30 days"
    assert hit.similarity is None
    assert await cache.lookup(other, BODY) is None


def test_scope_needs_a_tenant() -> None:
    with pytest.raises(ValueError, match="project_id"):
        request_key(CacheScope("", "r", "m"), BODY)


async def test_ttl_expiry_default_and_per_entry() -> None:
    clock = Clock()
    cache = ExactCache(MemoryCacheBackend(clock=clock), ttl_s=60)
    await cache.store(A, BODY, completion("a"))
    other = {**BODY, "seed": 3}
    await cache.store(A, other, completion("b"), ttl_s=5)
    clock.t += 5.01
    assert await cache.lookup(A, other) is None
    assert await cache.lookup(A, BODY) is not None
    clock.t += 55
    assert await cache.lookup(A, BODY) is None
    assert cache.stats == {"hits": 1, "misses": 2, "stores": 2, "errors": 0}


async def test_lru_bounds_entries_and_bytes() -> None:
    backend = MemoryCacheBackend(max_entries=3)
    cache = ExactCache(backend)
    bodies = [{**BODY, "seed": i} for i in range(4)]
    for b in bodies[:3]:
        await cache.store(A, b, completion("x"))
    assert await cache.lookup(A, bodies[0]) is not None  # now most recently used
    await cache.store(A, bodies[3], completion("x"))
    assert len(backend) == 3
    assert await cache.lookup(A, bodies[1]) is None  # the least recently used went
    assert await cache.lookup(A, bodies[0]) is not None
    small = ExactCache(MemoryCacheBackend(max_bytes=600))
    await small.store(A, bodies[0], completion("x" * 100))
    await small.store(A, bodies[1], completion("y" * 100))
    assert await small.lookup(A, bodies[0]) is None
    assert await small.lookup(A, bodies[1]) is not None


async def test_incomplete_answers_are_not_cached() -> None:
    cache = ExactCache()
    assert not await cache.store(A, BODY, completion("partial", finish="content_filter"))
    assert not await cache.store(A, BODY, {"choices": []})
    assert not is_cacheable({"choices": [{"finish_reason": None}]})
    assert await cache.lookup(A, BODY) is None


async def test_clear_drops_one_tenant_only() -> None:
    cache = ExactCache()
    await cache.store(A, BODY, completion("a"))
    await cache.store(B, BODY, completion("b"))
    assert await cache.clear("prj_a") == 1
    assert await cache.lookup(A, BODY) is None
    assert await cache.lookup(B, BODY) is not None


async def test_redis_backend_shared_by_two_instances_with_ttl() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    ns = f"keeltest:{uuid.uuid4().hex[:12]}:cache:"
    b1, b2 = RedisCacheBackend(REDIS_URL), RedisCacheBackend(REDIS_URL)
    c1, c2 = ExactCache(b1, namespace=ns), ExactCache(b2, namespace=ns)
    try:
        await c1.store(A, BODY, completion("shared"), ttl_s=0.2)
        hit = await c2.lookup(A, BODY)
        assert hit is not None and hit.response["choices"][0]["message"]["content"] == "shared"
        assert await c2.lookup(B, BODY) is None
        import asyncio

        await asyncio.sleep(0.3)
        assert await c2.lookup(A, BODY) is None
        await c1.store(A, BODY, completion("again"))
        await c1.store(B, BODY, completion("other tenant"))
        assert await c2.clear("prj_a") == 1
        assert await c1.lookup(B, BODY) is not None
    finally:
        await c1.backend.delete_prefix(ns)  # type: ignore[attr-defined]
        await b1.close()
        await b2.close()


async def test_backend_down_is_a_miss_not_an_error() -> None:
    cache = ExactCache(RedisCacheBackend("redis://127.0.0.1:1/0", socket_timeout_s=0.1))
    assert await cache.lookup(A, BODY) is None
    assert not await cache.store(A, BODY, completion("x"))
    assert cache.stats["errors"] == 2


def tool_stream() -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "m"}

    def ch(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    return [
        ch({"role": "assistant", "content": ""}),
        ch({"content": "Let me "}),
        ch({"content": "check."}),
        ch(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": ""},
                    }
                ]
            }
        ),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": '{"order":'}}]}),
        ch({"tool_calls": [{"index": 0, "function": {"arguments": ' "A-17"}'}}]}),
        ch({}, "tool_calls"),
        {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 7}},
    ]


def test_assembler_merges_content_and_tool_call_deltas() -> None:
    asm = StreamAssembler()
    for c in tool_stream():
        asm.add(c)
    r = asm.result()
    msg = r["choices"][0]["message"]
    assert msg["content"] == "Let me check."
    assert msg["tool_calls"] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"order": "A-17"}'},
        }
    ]
    assert r["choices"][0]["finish_reason"] == "tool_calls"
    assert r["usage"]["completion_tokens"] == 7


async def _aiter(
    items: list[dict[str, Any]], fail_at: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    for i, it in enumerate(items):
        if fail_at is not None and i == fail_at:
            raise ConnectionResetError("stream cut")
        yield it


async def test_stream_is_recorded_then_replayed_as_chunks() -> None:
    cache = ExactCache()
    stream_body = {**BODY, "stream": True}
    seen = [
        c
        async for c in record_stream(
            _aiter(tool_stream()), lambda r: cache.store(A, stream_body, r)
        )
    ]
    assert seen == tool_stream()  # passed through unchanged
    hit = await cache.lookup(A, BODY)  # the non-streaming twin hits the same entry
    assert hit is not None
    replayed = list(replay_stream(hit.response, piece_chars=4, include_usage=True))
    again = StreamAssembler()
    for c in replayed:
        again.add(c)
    assert again.result()["choices"] == hit.response["choices"]
    assert replayed[0]["choices"][0]["delta"]["role"] == "assistant"
    assert replayed[-1]["choices"] == [] and replayed[-1]["usage"]["prompt_tokens"] == 9
    assert all(c["object"] == "chat.completion.chunk" for c in replayed)


async def test_cut_stream_is_never_cached() -> None:
    cache = ExactCache()
    with pytest.raises(ConnectionResetError):
        async for _ in record_stream(
            _aiter(tool_stream(), fail_at=4), lambda r: cache.store(A, BODY, r)
        ):
            pass
    # A stream that ends without a finish reason (missing [DONE]) is not stored either.
    async for _ in record_stream(_aiter(tool_stream()[:5]), lambda r: cache.store(A, BODY, r)):
        pass
    assert await cache.lookup(A, BODY) is None
