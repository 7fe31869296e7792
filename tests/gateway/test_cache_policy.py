"""Per-request cache policy: Cache-Control no-cache / no-store and x-keel-cache, and the
``[gateway.cache]`` backend table (memory or a Redis shared by replicas)."""

from __future__ import annotations

import asyncio
import os
import uuid
from typing import Any

import pytest
from starlette.datastructures import Headers

from keel.errors import ConfigError
from keel.gateway.cache import (
    CACHE_DEFAULT,
    CACHE_OFF,
    CACHE_REFRESH,
    ExactCache,
    MemoryCacheBackend,
    RedisCacheBackend,
    build_exact_cache,
    cache_policy,
)
from keel.gateway.config import parse_gateway_config
from keel.gateway.provider import CacheHit
from keel.gateway.service import Gateway

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        (None, CACHE_DEFAULT),
        ({}, CACHE_DEFAULT),
        ({"cache-control": "no-cache"}, CACHE_REFRESH),
        ({"Cache-Control": "No-Store"}, CACHE_OFF),
        ({"cache-control": "max-age=0"}, CACHE_REFRESH),
        ({"cache-control": "max-age=60"}, CACHE_DEFAULT),
        ({"cache-control": "no-cache, no-store"}, CACHE_OFF),
        ({"cache-control": "private, no-cache"}, CACHE_REFRESH),
        ({"x-keel-cache": "off"}, CACHE_OFF),
        ({"X-Keel-Cache": "refresh"}, CACHE_REFRESH),
        ({"x-keel-cache": "on"}, CACHE_DEFAULT),
        ({"x-keel-cache": "refresh", "cache-control": "no-store"}, CACHE_OFF),
        (Headers({"cache-control": "no-store"}), CACHE_OFF),
        (Headers({"x-keel-cache": "OFF"}), CACHE_OFF),
    ],
)
def test_cache_policy_from_headers(headers: Any, want: Any) -> None:
    assert cache_policy(headers) == want


class SpyCache:
    """A semantic-cache stand-in that records lookups and stores."""

    def __init__(self) -> None:
        self.lookups = 0
        self.stores = 0
        self.stored: dict[str, Any] = {}
        self.hits = 0

    async def lookup(self, scope: Any, body: Any) -> CacheHit | None:
        self.lookups += 1
        r = self.stored.get(body["messages"][-1]["content"])
        self.hits += r is not None
        return CacheHit(response=r, similarity=0.99) if r is not None else None

    async def store(self, scope: Any, body: Any, resp: Any, *, ttl_s: float) -> None:
        self.stores += 1
        self.stored[body["messages"][-1]["content"]] = resp


@pytest.mark.parametrize("semantic", [False, True])
def test_gateway_obeys_no_cache_no_store_and_opt_out(semantic: bool) -> None:
    spy = SpyCache()
    exact = ExactCache()
    gw = Gateway(
        {
            "routes": {
                "c": {
                    "targets": [{"provider": "fake", "model": "fake:echo"}],
                    "cache": {"exact": not semantic, "semantic": semantic, "ttl_s": 60},
                }
            }
        },
        cache=exact,
        semantic_cache=spy if semantic else None,
    )
    seen = [0]

    def last_hit() -> bool:  # did a cache answer since the previous call?
        n = exact.stats["hits"] + spy.hits
        hit, seen[0] = n > seen[0], n
        return hit

    async def ask(text: str, headers: Any = None, stream: bool = False) -> str:
        body = {"model": "c", "messages": [{"role": "user", "content": text}]}
        if stream:
            chunks = [
                c
                async for c in gw.stream(
                    {**body, "stream": True}, project_id="p", key=None, headers=headers
                )
            ]
            return str(chunks[0]["id"])
        r = await gw.chat(body, project_id="p", key=None, headers=headers)
        return str(r["id"])

    async def go() -> None:
        await gw.start()
        try:
            # no-store: neither read nor write
            a = await ask("one", {"cache-control": "no-store"})
            b = await ask("one")
            assert a != b  # nothing was stored by the no-store request
            assert await ask("one") == b  # the plain request stored its answer
            assert await ask("one", {"cache-control": "no-store"}) != b  # and no-store skips it
            # no-cache: bypass the lookup, store the fresh answer
            c = await ask("one", {"Cache-Control": "no-cache"})
            assert c != b
            assert await ask("one") == c
            # the opt-out header, streaming too
            last_hit()
            await ask("one", {"x-keel-cache": "off"}, stream=True)
            assert not last_hit()
            await ask("one", stream=True)
            assert last_hit()
            await ask("two", {"x-keel-cache": "off"}, stream=True)
            await ask("two", stream=True)
            assert not last_hit()  # the opted-out stream was not stored
            await ask("three", {"x-keel-cache": "refresh"}, stream=True)
            assert not last_hit()
            await ask("three", stream=True)
            assert last_hit()  # refresh stored it
        finally:
            await gw.close()

    asyncio.run(go())
    if semantic:
        assert spy.lookups > 0 and spy.stores > 0


def test_gateway_cache_table_is_validated() -> None:
    cfg = parse_gateway_config({"cache": {"backend": "redis", "redis_url": REDIS_URL}})
    assert cfg.cache["backend"] == "redis"
    with pytest.raises(ConfigError, match="unknown key"):
        build_exact_cache({"backend": "memory", "bogus": 1})
    with pytest.raises(ConfigError, match="memory' or 'redis"):
        build_exact_cache({"backend": "memcached"})
    mem = build_exact_cache({"max_entries": 5, "ttl_s": 30, "namespace": "x:"})
    assert isinstance(mem.backend, MemoryCacheBackend) and mem.ttl_s == 30
    assert mem.namespace == "x:"


def test_two_replicas_share_the_exact_cache_through_redis() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("Redis not reachable")
    ns = f"keeltest:{uuid.uuid4().hex[:12]}:cache:"
    table = {"backend": "redis", "redis_url": REDIS_URL, "namespace": ns}
    routes = {
        "routes": {
            "c": {
                "targets": [{"provider": "fake", "model": "fake:echo"}],
                "cache": {"exact": True, "ttl_s": 60},
            }
        },
        "cache": table,
    }

    async def go() -> None:
        c1, c2 = build_exact_cache(table), build_exact_cache(table)
        assert isinstance(c1.backend, RedisCacheBackend)
        g1, g2 = Gateway(routes, cache=c1), Gateway(routes, cache=c2)
        await g1.start()
        await g2.start()
        body = {"model": "c", "messages": [{"role": "user", "content": "shared?"}]}
        try:
            a = await g1.chat(dict(body), project_id="p", key=None)
            b = await g2.chat(dict(body), project_id="p", key=None)
            assert a["id"] == b["id"]  # replica 2 answered from replica 1's entry
            other = await g2.chat(dict(body), project_id="q", key=None)
            assert other["id"] != a["id"]  # another tenant never shares it
            assert c2.stats["hits"] == 1
        finally:
            await c1.backend.delete_prefix(ns)
            await g1.close()
            await g2.close()
            for c in (c1, c2):
                assert isinstance(c.backend, RedisCacheBackend)
                await c.backend.close()

    asyncio.run(go())
