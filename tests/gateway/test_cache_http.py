"""Two gateway replicas (two ``create_app`` instances under uvicorn on loopback) share the exact
cache through the real Redis via ``[gateway.cache] backend = "redis"``; the real ``openai`` SDK
opts out per request with ``Cache-Control`` and ``x-keel-cache``."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import uvicorn
from _serve import serve_in_thread

from keel.server.app import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def namespace() -> Iterator[str]:
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        r.ping()
    except redis.RedisError:
        if os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis is required but not reachable at {REDIS_URL}")
        pytest.skip("Redis not reachable")
    ns = f"keeltest:cachehttp:{uuid.uuid4().hex[:12]}:"
    yield ns
    for k in r.scan_iter(match=ns + "*", count=500):
        r.delete(k)
    r.close()


def test_replicas_share_exact_cache_and_obey_cache_headers(tmp_path: Path, namespace: str) -> None:
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    gw_cfg = {
        "cache": {"backend": "redis", "redis_url": REDIS_URL, "namespace": namespace},
        "routes": {
            "c": {
                "targets": [{"provider": "fake", "model": "fake:echo"}],
                "cache": {"exact": True, "ttl_s": 60},
            }
        },
    }
    first = open_store(url)
    project = first.projects.add_project("cachehttp")
    _, secret = create_api_key(first, project, name="k")
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []
    urls = []
    try:
        for i in range(2):
            store = first if i == 0 else open_store(url)
            app = create_app(Settings(store={"url": url}, gateway=gw_cfg), store)
            server, t, port = serve_in_thread(app)
            servers.append((server, t))
            urls.append(f"http://127.0.0.1:{port}/v1")

        async def go() -> None:
            c1, c2 = (openai.AsyncOpenAI(base_url=u, api_key=secret, max_retries=0) for u in urls)

            async def ask(c: openai.AsyncOpenAI, text: str, **headers: str) -> str:
                r = await c.chat.completions.create(
                    model="c",
                    messages=[{"role": "user", "content": text}],
                    extra_headers=headers or None,
                )
                return r.id

            try:
                a = await ask(c1, "hello")
                assert await ask(c2, "hello") == a  # replica 2 answers from replica 1's entry
                assert await ask(c2, "hello", **{"x-keel-cache": "off"}) != a
                assert await ask(c1, "hello", **{"Cache-Control": "no-store"}) != a
                assert await ask(c2, "hello") == a  # neither opt-out replaced the entry
                b = await ask(c1, "hello", **{"Cache-Control": "no-cache"})
                assert b != a
                assert await ask(c2, "hello") == b  # no-cache stored the fresh answer
                n = await ask(c1, "not stored", **{"Cache-Control": "no-store"})
                assert await ask(c2, "not stored") != n
            finally:
                await c1.close()
                await c2.close()

        asyncio.run(go())
    finally:
        for server, _ in servers:
            server.should_exit = True
        for _, t in servers:
            t.join(10)
