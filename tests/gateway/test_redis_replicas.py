"""Two full gateway replicas (two ``create_app`` instances, each under its own uvicorn server on
loopback, one SQLite database) share one key's budget and rate limit through the real Redis.
Both are driven concurrently with the real ``openai`` SDK, over chat completions and the
Responses API; together they never accept more than the key allows, and the refusals are 429s
in OpenAI's error envelope."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from _serve import serve_in_thread

from keel.gateway.limits import RedisLimiter, estimate_tokens
from keel.server.app import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1"
IN_PRICE, OUT_PRICE = 1000.0, 2000.0  # USD per million tokens: 1000 / 2000 micro-USD per token
TEXT = "abcd" * 10  # the fake echo model answers with it
MAX_TOKENS = 16


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique Redis key prefix; everything under it is deleted afterwards."""
    import redis

    r = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        r.ping()
    except redis.RedisError:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required but not reachable at {REDIS_URL}")
        pytest.skip("Redis not reachable")
    p = f"keeltest:replicas:{uuid.uuid4().hex[:12]}:"
    yield p
    for k in r.scan_iter(match=p + "*", count=500):
        r.delete(k)
    assert not list(r.scan_iter(match=p + "*"))
    r.close()


def _gateway_cfg(prefix: str) -> dict[str, Any]:
    return {
        "limits": {"backend": "redis", "redis_url": REDIS_URL, "prefix": prefix},
        "routes": {
            "paid": {
                "targets": [
                    {
                        "provider": "fake",
                        "model": "fake:echo",
                        "input_price_per_mtok": IN_PRICE,
                        "output_price_per_mtok": OUT_PRICE,
                    }
                ],
                "retries": 0,
            }
        },
    }


@pytest.fixture
def replicas(tmp_path: Path, prefix: str) -> Iterator[Callable[..., tuple[list[str], Any]]]:
    """Factory: two replicas on one SQLite database and one Redis prefix, and the first
    replica's store (to create keys in, before the replicas cache anything)."""
    url = f"sqlite:///{tmp_path / 'keel.db'}"
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**key_limits: Any) -> tuple[list[str], str, Any]:
        first = open_store(url)
        project = first.projects.add_project("replicas")
        key, secret = create_api_key(first, project, name="shared", **key_limits)
        urls = []
        for i in range(2):
            store = first if i == 0 else open_store(url)
            settings = Settings(store={"url": url}, gateway=_gateway_cfg(prefix))
            app = create_app(settings, store)
            server, t, port = serve_in_thread(app)
            servers.append((server, t))
            urls.append(f"http://127.0.0.1:{port}/v1")
        return urls, secret, key

    yield start  # type: ignore[misc]
    for server, _ in servers:
        server.should_exit = True
    for _, t in servers:
        t.join(10)


async def _one(c: openai.AsyncOpenAI, api: str, text: str) -> Any:
    """One request through chat completions or the Responses API; the answer or the error."""
    try:
        if api == "chat":
            r = await c.chat.completions.create(
                model="paid", messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS
            )
            return r.usage.prompt_tokens, r.usage.completion_tokens
        rr = await c.responses.create(model="paid", input=text, max_output_tokens=MAX_TOKENS)
        return rr.usage.input_tokens, rr.usage.output_tokens
    except openai.APIStatusError as e:
        return e


def _check_429(e: Any, code: str) -> None:
    assert isinstance(e, openai.RateLimitError), e
    assert e.status_code == 429
    body = e.response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert {"message", "type", "code", "param"} <= set(err)
    assert err["code"] == code and err["type"] and err["message"]
    assert e.response.headers.get("retry-after")


def _clients(urls: list[str], secret: str) -> list[openai.AsyncOpenAI]:
    return [openai.AsyncOpenAI(base_url=u, api_key=secret, max_retries=0) for u in urls]


def test_two_replicas_share_one_budget(replicas: Any, prefix: str) -> None:
    n = 8
    # Per request: actual cost a (the fake's usage at the route's prices) and the limiter's
    # up-front estimate e (the same estimator the gateway uses; the chat body of both APIs).
    pt, ct = 4 + len(TEXT) // 4, len(TEXT) // 4
    a = (pt * IN_PRICE + ct * OUT_PRICE) / 1e6
    chat_body = {"messages": [{"role": "user", "content": TEXT}], "max_tokens": MAX_TOKENS}
    e = estimate_tokens(chat_body) * max(IN_PRICE, OUT_PRICE) / 1e6
    assert e > a
    # A budget that admits exactly n requests when they come one after another: request k+1
    # is admitted iff k*a + e <= budget (the half-request margin absorbs micro-USD rounding).
    budget = (n - 1) * a + e + a / 2
    urls, secret, key = replicas(budget_usd_day=budget)

    async def go() -> tuple[list[Any], list[Any]]:
        cs = _clients(urls, secret)
        try:
            # A concurrent burst at both replicas, both APIs: in-flight reservations hold the
            # estimate, so fewer than n may pass here, never more.
            burst = await asyncio.gather(
                *[_one(cs[i % 2], "chat" if i % 3 else "responses", TEXT) for i in range(3 * n)]
            )
            # Then one at a time, alternating replicas, until the budget refuses.
            seq: list[Any] = []
            for i in range(2 * n):
                r = await _one(cs[i % 2], "responses" if i % 2 else "chat", TEXT)
                seq.append(r)
                if isinstance(r, Exception):
                    break
            return burst, seq
        finally:
            for c in cs:
                await c.close()

    burst, seq = asyncio.run(go())
    ok_burst = [r for r in burst if not isinstance(r, Exception)]
    ok_seq = [r for r in seq if not isinstance(r, Exception)]
    assert 1 <= len(ok_burst) <= n
    for r in ok_burst + ok_seq:
        assert r == (pt, ct)  # the cost model above is what was billed
    for r in burst:
        if isinstance(r, Exception):
            _check_429(r, "budget_exceeded")
    _check_429(seq[-1], "budget_exceeded")
    # Across both replicas exactly the n requests the budget covers were accepted ...
    assert len(ok_burst) + len(ok_seq) == n
    # ... and the shared spend in Redis is theirs, within the budget.

    async def spent() -> float:
        lim = RedisLimiter(REDIS_URL, prefix=prefix)
        try:
            return (await lim.spent_usd(key.id))[0]
        finally:
            await lim.close()

    day = asyncio.run(spent())
    assert day == pytest.approx(n * a, abs=n * 1e-6)
    assert day <= budget


def test_two_replicas_share_one_rate_limit(replicas: Any) -> None:
    rpm = 7
    urls, secret, _ = replicas(rpm_limit=rpm)

    async def go() -> list[Any]:
        cs = _clients(urls, secret)
        try:
            return await asyncio.gather(
                *[
                    _one(cs[i % 2], "chat" if i % 2 else "responses", f"r{i}")
                    for i in range(4 * rpm)
                ]
            )
        finally:
            for c in cs:
                await c.close()

    out = asyncio.run(go())
    ok = [r for r in out if not isinstance(r, Exception)]
    assert len(ok) == rpm
    refused = [r for r in out if isinstance(r, Exception)]
    assert len(refused) == 3 * rpm
    for r in refused:
        _check_429(r, "rate_limited")
