"""The Redis limiter: the same contract, shared by several replicas, against the real Redis."""

from __future__ import annotations

import asyncio
import os
import random
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from keel.core.projects import ApiKey
from keel.errors import BudgetExceededError, RateLimitedError, UnavailableError
from keel.gateway.limits import RedisLimiter, build_limiter

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()
REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("KEEL_TEST_REQUIRE_SERVICES") == "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        if REQUIRE_SERVICES:
            pytest.fail(f"Redis is required but not reachable at {REDIS_URL}")
        pytest.skip("Redis not reachable")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix; every key under it is deleted afterwards."""
    p = f"keeltest:{uuid.uuid4().hex[:12]}:"
    yield p  # type: ignore[misc]
    import redis

    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=p + "*", count=500):
        r.delete(k)
    assert not list(r.scan_iter(match=p + "*"))


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_key(key_id: str = "key_1", **kw: object) -> ApiKey:
    return ApiKey(
        id=key_id,
        project_id="prj_1",
        name="k",
        prefix="keel_sk_x",
        key_hash="sha256:" + key_id,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )


async def test_rpm_tpm_and_budget(redis_url: str, prefix: str) -> None:
    clock = Clock()
    lim = RedisLimiter(redis_url, prefix=prefix, clock=clock)
    try:
        key = make_key(rpm_limit=2, tpm_limit=1000, budget_usd_day=1.0)
        r1 = await lim.reserve(key, 600, 0.5)
        with pytest.raises(RateLimitedError, match="token"):
            await lim.reserve(key, 600, 0.1)
        await lim.commit(r1, 100, 0.2)  # 500 tokens back
        r2 = await lim.reserve(key, 600, 0.5)
        with pytest.raises(RateLimitedError, match="request") as ei:
            await lim.reserve(key, 1, 0.1)
        assert ei.value.retry_after == pytest.approx(30.0, rel=1e-3)
        await lim.release(r2)
        clock.t += 60
        r3 = await lim.reserve(key, 10, 0.8)
        with pytest.raises(BudgetExceededError) as eb:
            await lim.reserve(key, 10, 0.1)  # 0.2 spent + 0.8 reserved
        assert eb.value.retry_after == pytest.approx(12 * 3600 - 60)
        await lim.commit(r3, 10, 0.3)
        assert await lim.spent_usd(key.id) == (0.5, 0.5)
        clock.t += 86400  # a new day: fresh day budget
        await lim.reserve(key, 10, 0.9)
    finally:
        await lim.close()


async def test_abandoned_reservation_expires(redis_url: str, prefix: str) -> None:
    clock = Clock()
    lim = RedisLimiter(redis_url, prefix=prefix, clock=clock, reservation_ttl_s=30)
    try:
        key = make_key(budget_usd_month=1.0)
        await lim.reserve(key, 1, 1.0)
        with pytest.raises(BudgetExceededError, match="month"):
            await lim.reserve(key, 1, 0.01)
        clock.t += 31
        r = await lim.reserve(key, 1, 0.5)
        await lim.commit(r, 1, 0.5)
        await lim.commit(r, 1, 0.5)  # idempotent
    finally:
        await lim.close()


def _replica(
    redis_url: str,
    prefix: str,
    key: ApiKey,
    est: float,
    out: dict[str, int],
    name: str,
    barrier: threading.Barrier,
    seed: int,
) -> Callable[[], None]:
    """One gateway replica: its own thread, event loop, Redis pool and 25 concurrent clients."""

    def run() -> None:
        async def main() -> None:
            lim = RedisLimiter(redis_url, prefix=prefix)
            rng = random.Random(seed)
            ok = refused = 0

            async def client() -> None:
                nonlocal ok, refused
                for _ in range(30):
                    try:
                        r = await lim.reserve(key, 50, est)
                    except BudgetExceededError:
                        refused += 1
                        await asyncio.sleep(0.002)
                        continue
                    ok += 1
                    await asyncio.sleep(rng.random() * 0.004)
                    if rng.random() < 0.2:
                        await lim.release(r)
                    else:
                        await lim.commit(r, 40, est * rng.uniform(0.5, 1.0))

            # connect (and load the scripts) before the start line, so neither replica spends
            # the whole budget while the other is still opening its pool
            await lim.spent_usd(key.id)
            barrier.wait()
            await asyncio.gather(*(client() for _ in range(25)))
            await lim.close()
            out[name + "_ok"] = ok
            out[name + "_refused"] = refused

        asyncio.run(main())

    return run


async def test_two_replicas_share_one_budget(redis_url: str, prefix: str) -> None:
    """Two limiter instances (threads, loops and connection pools of their own) on one Redis:
    together they never spend more than the key's budget, and they do use it up."""
    # a budget of ~400 reservations: large enough that neither replica can use it up in the
    # moments before the other's first request (threads share the GIL, so one replica may start
    # a few ms late: with 40 reservations, 1 run in ~10 saw it spend everything first), small
    # enough that 1,500 attempts run into it
    budget = 20.0
    key = make_key("key_shared", budget_usd_day=budget, rpm_limit=1_000_000)
    est = 0.05
    out: dict[str, int] = {}
    barrier = threading.Barrier(2)
    threads = [
        threading.Thread(target=_replica(redis_url, prefix, key, est, out, n, barrier, s))
        for n, s in (("a", 1), ("b", 2))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    lim = RedisLimiter(redis_url, prefix=prefix)
    try:
        spent_day, _ = await lim.spent_usd(key.id)
    finally:
        await lim.close()
    # both replicas served traffic (the split depends on scheduling; the sum is the budget)
    assert out["a_ok"] > 0 and out["b_ok"] > 0
    assert out["a_refused"] + out["b_refused"] > 0
    assert spent_day <= budget + 1e-9
    assert spent_day > budget - est - 1e-9


async def test_rpm_shared_across_replicas(redis_url: str, prefix: str) -> None:
    key = make_key("key_rpm", rpm_limit=10)
    a = RedisLimiter(redis_url, prefix=prefix)
    b = RedisLimiter(redis_url, prefix=prefix)
    try:

        async def try_one(lim: RedisLimiter) -> bool:
            try:
                await lim.reserve(key, 1, 0.0)
                return True
            except RateLimitedError:
                return False

        results = await asyncio.gather(*(try_one(a if i % 2 else b) for i in range(30)))
        assert sum(results) == 10
    finally:
        await a.close()
        await b.close()


async def test_redis_down_fails_closed_or_open() -> None:
    key = make_key(budget_usd_day=1.0)
    closed = RedisLimiter("redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    try:
        with pytest.raises(UnavailableError) as ei:
            await closed.reserve(key, 1, 0.1)
        assert ei.value.status == 503
    finally:
        await closed.close()
    lim = build_limiter(
        {"backend": "redis", "redis_url": "redis://127.0.0.1:1/0", "on_redis_error": "open"}
    )
    assert isinstance(lim, RedisLimiter)
    try:
        r = await lim.reserve(key, 1, 0.6)  # served by the per-process fallback
        assert r.local
        with pytest.raises(BudgetExceededError):
            await lim.reserve(key, 1, 0.6)
        await lim.commit(r, 1, 0.6)
    finally:
        await lim.close()
