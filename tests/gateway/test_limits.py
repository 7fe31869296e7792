"""Virtual-key enforcement in one process: access checks, rate limits, budgets, ledger."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

import pytest

from keel.core.projects import ApiKey
from keel.errors import BudgetExceededError, PermissionDeniedError, RateLimitedError
from keel.gateway.limits import (
    MemoryLimiter,
    build_limiter,
    check_access,
    estimate_tokens,
    to_micro,
)
from keel.storage.gateway import SpendDelta

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


T0 = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    """Wall-clock seconds that move only when told to."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_key(key_id: str = "key_1", project_id: str = "prj_1", **kw: object) -> ApiKey:
    return ApiKey(
        id=key_id,
        project_id=project_id,
        name="k",
        prefix="keel_sk_x",
        key_hash="sha256:" + key_id,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        **kw,  # type: ignore[arg-type]
    )


def test_access_allows_and_denies_routes_and_models() -> None:
    key = make_key(allowed_routes=["support-*", "faq"], allowed_models=["gpt-4o-mini", "fake:*"])
    check_access(key, route="support-bot", model="gpt-4o-mini")
    check_access(key, route="faq", model="fake:echo")
    with pytest.raises(PermissionDeniedError, match="route 'billing'"):
        check_access(key, route="billing", model="gpt-4o-mini")
    with pytest.raises(PermissionDeniedError, match="model 'gpt-4o'"):
        check_access(key, route="faq", model="gpt-4o")
    # A route-restricted key without a model allow-list cannot call models directly.
    with pytest.raises(PermissionDeniedError, match="only use its allowed routes"):
        check_access(make_key(allowed_routes=["faq"]), route=None, model="fake:echo")
    check_access(key, route=None, model="fake:echo")
    with pytest.raises(PermissionDeniedError):
        check_access(make_key(allowed_models=[]), model="fake:echo")
    check_access(make_key(), route="anything", model="anything")


def test_estimate_tokens_counts_prompt_and_output() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 300}], "max_tokens": 100, "n": 2}
    assert estimate_tokens(body) == 300 // 3 + 12 // 3 + 1 + 200
    assert estimate_tokens({"messages": []}, default_max_tokens=50) == 51


def test_to_micro_rounds_up() -> None:
    assert to_micro(0.0000001) == 1
    assert to_micro(1.0) == 1_000_000
    assert to_micro(0) == 0


async def test_rpm_limit_then_refill_with_retry_after() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    key = make_key(rpm_limit=3)
    for _ in range(3):
        await lim.commit(await lim.reserve(key, 1, 0.0), 1, 0.0)
    with pytest.raises(RateLimitedError) as ei:
        await lim.reserve(key, 1, 0.0)
    assert ei.value.status == 429
    assert ei.value.retry_after == pytest.approx(20.0)  # one slot refills every 60/3 s
    clock.t += 19.9
    with pytest.raises(RateLimitedError):
        await lim.reserve(key, 1, 0.0)
    clock.t += 0.2
    await lim.reserve(key, 1, 0.0)


async def test_tpm_reserves_estimate_and_refunds_on_commit() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    key = make_key(tpm_limit=1000)
    r1 = await lim.reserve(key, 600, 0.0)
    with pytest.raises(RateLimitedError, match="token limit"):
        await lim.reserve(key, 600, 0.0)  # 400 left
    await lim.commit(r1, 100, 0.0)  # 500 refunded
    r2 = await lim.reserve(key, 600, 0.0)  # 900 available
    await lim.release(r2)
    # A request larger than the whole per-minute capacity passes only on a full bucket.
    with pytest.raises(RateLimitedError):
        await lim.reserve(key, 5000, 0.0)  # 900 available
    clock.t += 6.0
    await lim.reserve(key, 5000, 0.0)
    with pytest.raises(RateLimitedError):
        await lim.reserve(key, 1, 0.0)


async def test_day_budget_counts_reserved_and_spent() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    key = make_key(budget_usd_day=1.0)
    r1 = await lim.reserve(key, 10, 0.6)
    with pytest.raises(BudgetExceededError) as ei:
        await lim.reserve(key, 10, 0.5)  # 0.6 reserved + 0.5 > 1.0
    assert ei.value.code == "budget_exceeded"
    assert ei.value.retry_after == pytest.approx(12 * 3600)  # next UTC midnight
    await lim.commit(r1, 10, 0.2)
    r2 = await lim.reserve(key, 10, 0.5)
    await lim.release(r2)
    assert lim.spent_usd(key.id) == pytest.approx((0.2, 0.2))
    r3 = await lim.reserve(key, 10, 0.8)
    await lim.commit(r3, 10, 0.8)
    with pytest.raises(BudgetExceededError):
        await lim.reserve(key, 10, 0.0)  # used up: even a zero estimate is refused
    clock.t += 12 * 3600 + 1  # next day
    await lim.reserve(key, 10, 0.9)


async def test_month_budget_spans_days() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock)
    key = make_key(budget_usd_month=1.0)
    await lim.commit(await lim.reserve(key, 1, 0.7), 1, 0.7)
    clock.t += 86400
    with pytest.raises(BudgetExceededError, match="month"):
        await lim.reserve(key, 1, 0.4)
    clock.t = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
    await lim.reserve(key, 1, 0.9)


async def test_abandoned_reservations_expire() -> None:
    clock = Clock()
    lim = MemoryLimiter(clock=clock, reservation_ttl_s=30)
    key = make_key(budget_usd_day=1.0)
    await lim.reserve(key, 1, 1.0)  # never settled
    with pytest.raises(BudgetExceededError):
        await lim.reserve(key, 1, 0.1)
    clock.t += 31
    await lim.reserve(key, 1, 0.1)


async def test_commit_and_release_are_idempotent() -> None:
    lim = MemoryLimiter(clock=Clock())
    key = make_key(budget_usd_day=1.0)
    r = await lim.reserve(key, 1, 0.5)
    await lim.commit(r, 1, 0.5)
    await lim.commit(r, 1, 0.5)
    await lim.release(r)
    assert lim.spent_usd(key.id) == pytest.approx((0.5, 0.5))


async def test_unlimited_key_takes_nothing() -> None:
    lim = MemoryLimiter(clock=Clock())
    r = await lim.reserve(make_key(), 10**9, 10**6)
    assert not r.limited
    await lim.commit(r, 1, 1.0)


async def test_no_overspend_under_concurrent_load() -> None:
    """50 concurrent clients hammer a $1 budget: spend never passes $1, and it gets used."""
    lim = MemoryLimiter(clock=Clock())
    key = make_key(budget_usd_day=1.0, rpm_limit=100_000, tpm_limit=10_000_000)
    rng = random.Random(7)
    est = 0.05
    admitted = refused = 0
    peak_exposure = 0.0  # committed spend + estimates in flight

    in_flight: set[int] = set()

    async def client(i: int) -> None:
        nonlocal admitted, refused, peak_exposure
        for n in range(40):
            try:
                r = await lim.reserve(key, 100, est)
            except BudgetExceededError:
                refused += 1
                await asyncio.sleep(0.001)
                continue
            admitted += 1
            token = i * 1000 + n
            in_flight.add(token)
            exposure = lim.spent_usd(key.id)[0] + est * len(in_flight)
            peak_exposure = max(peak_exposure, exposure)
            await asyncio.sleep(rng.random() * 0.003)
            in_flight.discard(token)
            if rng.random() < 0.2:
                await lim.release(r)  # the upstream call failed
            else:
                await lim.commit(r, 80, est * rng.uniform(0.3, 1.0))

    await asyncio.gather(*(client(i) for i in range(50)))
    spent = lim.spent_usd(key.id)[0]
    assert spent <= 1.0 + 1e-9
    assert peak_exposure <= 1.0 + 1e-9  # never more in flight than the budget covers
    assert refused > 0 and admitted > 25
    # Nearly all of the budget is usable: less than one estimate is left on the table.
    assert spent > 1.0 - est - 1e-9


def test_no_overspend_with_threads() -> None:
    """Several event loops in threads share one limiter (the lock is a real one)."""
    import threading

    lim = MemoryLimiter(clock=Clock())
    key = make_key(budget_usd_day=2.0)
    admitted: list[int] = []

    def worker() -> None:
        async def run() -> None:
            n = 0
            for _ in range(200):
                try:
                    r = await lim.reserve(key, 1, 0.01)
                except BudgetExceededError:
                    continue
                n += 1
                await lim.commit(r, 1, 0.01)
            admitted.append(n)

        asyncio.run(run())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(admitted) == 200
    assert lim.spent_usd(key.id)[0] == pytest.approx(2.0)


async def test_spend_survives_restart_through_the_ledger(store) -> None:  # type: ignore[no-untyped-def]
    """Spend is written to the store's ledger; a new limiter (a restart) reads it back."""
    clock = Clock()
    key = make_key(budget_usd_day=1.0, budget_usd_month=1.5)
    lim = MemoryLimiter(store.gateway, clock=clock, flush_interval_s=0.0)
    await lim.commit(await lim.reserve(key, 10, 0.5), 10, 0.4)
    await lim.commit(await lim.reserve(key, 10, 0.5), 10, 0.3)
    await lim.close()
    d = date(2026, 3, 14)
    tot = store.gateway.get_spend(key.id, d, d)
    assert tot.cost_micro_usd == 700_000 and tot.tokens == 20 and tot.requests == 2

    lim2 = MemoryLimiter(store.gateway, clock=clock)
    with pytest.raises(BudgetExceededError):
        await lim2.reserve(key, 10, 0.4)  # 0.7 spent before the restart
    r = await lim2.reserve(key, 10, 0.3)
    await lim2.commit(r, 10, 0.3)
    await lim2.close()

    # Next day: the day budget is fresh, the month still counts yesterday.
    clock.t += 86400
    lim3 = MemoryLimiter(store.gateway, clock=clock)
    with pytest.raises(BudgetExceededError, match="month"):
        await lim3.reserve(key, 10, 0.6)
    await lim3.reserve(key, 10, 0.5)
    rows = store.gateway.list_spend("prj_1", date(2026, 3, 1), date(2026, 3, 31))
    assert [(k, day, t.cost_usd) for k, day, t in rows] == [("key_1", d, pytest.approx(1.0))]


async def test_flush_happens_even_when_traffic_stops(store) -> None:  # type: ignore[no-untyped-def]
    lim = MemoryLimiter(store.gateway, flush_interval_s=0.05)
    key = make_key(budget_usd_day=5.0)
    await lim.reserve(key, 1, 0.1)  # first reserve loads (and stamps the last flush)
    r = await lim.reserve(key, 1, 0.1)
    await lim.commit(r, 1, 0.1)
    today = datetime.now(UTC).date()
    for _ in range(100):
        if store.gateway.get_spend(key.id, today, today).requests:
            break
        await asyncio.sleep(0.02)
    assert store.gateway.get_spend(key.id, today, today).cost_micro_usd == 100_000


def test_ledger_adds_are_cumulative(store) -> None:  # type: ignore[no-untyped-def]
    d = date(2026, 5, 2)
    store.gateway.add_spend(
        [SpendDelta("k1", "p1", d, 5, 1, 1), SpendDelta("k1", "p1", d, 7, 2, 1)]
    )
    store.gateway.add_spend([SpendDelta("k1", "p1", d, 1, 0, 0), SpendDelta("k2", "p1", d, 3)])
    assert store.gateway.get_spend("k1", d, d).cost_micro_usd == 13
    assert store.gateway.get_spend("k1", d, d).tokens == 3
    assert store.gateway.get_spend("k3", d, d).cost_micro_usd == 0
    assert [r[0] for r in store.gateway.list_spend("p1", d, d)] == ["k1", "k2"]
    assert store.gateway.list_spend("p2", d, d) == []


def test_build_limiter_validates_config() -> None:
    from keel.errors import ConfigError

    assert isinstance(build_limiter({}), MemoryLimiter)
    with pytest.raises(ConfigError, match="unknown key"):
        build_limiter({"bakend": "redis"})
    with pytest.raises(ConfigError, match="backend"):
        build_limiter({"backend": "etcd"})
