"""Virtual-key enforcement: allowed routes/models, rate limits and budgets, held atomically.

Every :class:`~keel.core.projects.ApiKey` may carry ``allowed_routes``, ``allowed_models``,
``rpm_limit`` (requests per minute), ``tpm_limit`` (tokens per minute), ``budget_usd_day`` and
``budget_usd_month`` (UTC calendar day and month). The gateway calls, per request::

    limiter.check_access(key, route=route, model=model)       # PermissionDeniedError (403)
    res = await limiter.reserve(key, est_tokens, est_cost)   # RateLimitedError / BudgetExceededError (429)
    try:
        ...upstream call...
    except BaseException:
        await limiter.release(res)
        raise
    await limiter.commit(res, actual_tokens, actual_cost)

``reserve`` checks and takes every dimension in one atomic step (all pass and are charged, or
nothing is charged): one request slot, ``est_tokens`` from the token bucket and ``est_cost``
from the day and month budgets. ``commit`` replaces the estimate by the actual figures and
``release`` returns the estimate. So concurrent requests can never together spend more than a
budget as long as each estimate is an upper bound (``max_tokens`` priced at the output rate);
if an actual exceeds its estimate, the overspend is at most that difference. Reservations that
are never settled (a crashed worker) expire after ``reservation_ttl_s``.

Two backends, one contract:

* :class:`MemoryLimiter` (default): one process, a lock around plain counters. Spend is written
  behind to the store's ledger (:mod:`keel.storage.gateway`) at most ``flush_interval_s``
  apart and read back on first use of a key, so a restart does not reset a day's budget
  (at most one flush interval of spend can be lost if the process is killed).
* :class:`RedisLimiter`: several gateway replicas share limits through Lua scripts on one
  Redis (``redis://127.0.0.1:6379/0``); Redis holds the spend (keys expire after the window),
  so no ledger is needed. When Redis is unreachable the limiter fails closed (503) by default,
  or with ``on_error="open"`` falls back to a per-process :class:`MemoryLimiter`.

Amounts are integer micro-dollars internally; rates are token buckets (capacity = the
per-minute limit, refilled continuously), so ``retry_after`` is exact.
"""

from __future__ import annotations

import asyncio
import calendar
import fnmatch
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from keel.core.projects import ApiKey
from keel.errors import (
    BudgetExceededError,
    ConfigError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)
from keel.storage.gateway import MICRO_USD, GatewayStore, SpendDelta

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_RESERVATION_TTL_S = 600.0
DEFAULT_MAX_TOKENS = 4096


@dataclass(slots=True)
class Reservation:
    """What ``reserve`` took; hand it back to exactly one of ``commit`` or ``release``."""

    id: str
    key_id: str
    project_id: str
    tokens: int
    cost_micro: int
    day: str  # YYYYMMDD (UTC) the cost was reserved in
    month: str  # YYYYMM
    expires_at: float
    settled: bool = False
    limited: bool = True  # False when the key has no limits at all (nothing was taken)
    local: bool = False  # taken by a RedisLimiter's in-process fallback
    tpm_limit: int | None = None  # the key's token limit when reserved (caps refunds)


def to_micro(usd: float) -> int:
    """US dollars to integer micro-dollars, rounding up (estimates must not undercount)."""
    if usd <= 0:
        return 0
    return int(-(-usd * MICRO_USD // 1))


def _matches(value: str | None, patterns: list[str]) -> bool:
    if value is None:
        return False
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


def check_access(key: ApiKey, *, route: str | None = None, model: str | None = None) -> None:
    """Raise :class:`PermissionDeniedError` unless the key may use this route and model.

    ``allowed_routes`` / ``allowed_models`` are lists of names or shell-style patterns
    (``gpt-4o*``, ``openai:*``); ``None`` allows everything, an empty list nothing. A key
    with ``allowed_routes`` may call a model directly (``route=None``) only when it also has
    ``allowed_models`` and the model matches them.
    """
    if key.allowed_routes is not None:
        if route is None:
            # A direct model call bypasses routes: only an explicit model allow-list permits it.
            if key.allowed_models is None:
                raise PermissionDeniedError(
                    "this API key may only use its allowed routes, not models directly",
                    hint="call one of the key's allowed routes as the model name",
                )
        elif not _matches(route, key.allowed_routes):
            raise PermissionDeniedError(
                f"this API key may not use route {route!r}",
                hint="ask a project admin to add the route to the key's allowed_routes",
            )
    if (
        key.allowed_models is not None
        and model is not None
        and not _matches(model, key.allowed_models)
    ):
        raise PermissionDeniedError(
            f"this API key may not use model {model!r}",
            hint="ask a project admin to add the model to the key's allowed_models",
        )


def estimate_tokens(body: dict[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> int:
    """An upper-bound-ish token estimate for a Chat Completions body.

    Prompt tokens are approximated as characters / 3 (English BPE averages ~4 characters per
    token, so this overestimates); output tokens are ``max_completion_tokens`` / ``max_tokens``
    (or ``default_max_tokens``) times ``n``.
    """
    chars = 0
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            chars += len(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
        chars += 12
    if body.get("tools"):
        chars += len(str(body["tools"]))
    out = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    n = body.get("n") or 1
    try:
        return chars // 3 + 1 + int(out) * max(1, int(n))
    except (TypeError, ValueError):
        return chars // 3 + 1 + default_max_tokens


def _windows(now: float) -> tuple[str, str, float, float]:
    """(day id, month id, seconds to the next UTC day, seconds to the next UTC month)."""
    dt = datetime.fromtimestamp(now, UTC)
    day_start = datetime(dt.year, dt.month, dt.day, tzinfo=UTC).timestamp()
    days_in_month = calendar.monthrange(dt.year, dt.month)[1]
    month_end = datetime(dt.year, dt.month, 1, tzinfo=UTC).timestamp() + days_in_month * 86400
    return (
        f"{dt.year:04d}{dt.month:02d}{dt.day:02d}",
        f"{dt.year:04d}{dt.month:02d}",
        day_start + 86400 - now,
        month_end - now,
    )


def _has_limits(key: ApiKey) -> bool:
    return any(
        v is not None
        for v in (key.rpm_limit, key.tpm_limit, key.budget_usd_day, key.budget_usd_month)
    )


def _rate_error(what: str, limit: int, retry_after: float) -> RateLimitedError:
    return RateLimitedError(
        f"{what} limit of {limit} per minute reached for this API key",
        retry_after=max(0.001, retry_after),
        hint=f"retry after {retry_after:.2f} s",
    )


def _budget_error(period: str, budget: float, retry_after: float) -> BudgetExceededError:
    return BudgetExceededError(
        f"the {period} budget of ${budget:g} for this API key is used up",
        retry_after=max(1.0, retry_after),
        hint=f"it resets at the start of the next UTC {period}",
    )


class Limiter(Protocol):
    """What the gateway needs from a limiter (both backends implement it)."""

    def check_access(
        self, key: ApiKey, *, route: str | None = None, model: str | None = None
    ) -> None:
        """Raise PermissionDeniedError unless the key may use this route and model."""
        ...

    async def reserve(self, key: ApiKey, est_tokens: int, est_cost: float) -> Reservation:
        """Take one request, ``est_tokens`` and ``est_cost`` atomically, or raise 429."""
        ...

    async def commit(self, res: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Replace the reservation's estimate by the actual usage (idempotent)."""
        ...

    async def release(self, res: Reservation) -> None:
        """Give the whole reservation back (the call failed before costing anything)."""
        ...

    async def close(self) -> None:
        """Flush pending state and release connections."""
        ...


# --------------------------------------------------------------------------- in process


@dataclass(slots=True)
class _Bucket:
    """A token bucket holding up to ``cap`` units, refilled at ``cap`` per minute."""

    cap: float
    level: float
    ts: float

    def refill(self, now: float, cap: float) -> None:
        self.cap = cap
        if now > self.ts:
            self.level = min(cap, self.level + (now - self.ts) * cap / 60.0)
            self.ts = now

    def give_back(self, amount: float) -> None:
        self.level = min(self.cap, self.level + amount)


@dataclass(slots=True)
class _Budget:
    window: str
    spent: int = 0
    reserved: int = 0
    loaded: bool = False


@dataclass(slots=True)
class _KeyState:
    rpm: _Bucket | None = None
    tpm: _Bucket | None = None
    day: _Budget = field(default_factory=lambda: _Budget(""))
    month: _Budget = field(default_factory=lambda: _Budget(""))
    open: dict[str, Reservation] = field(default_factory=dict)


class MemoryLimiter:
    """Limits held in this process; spend persisted through an optional ledger.

    ``clock`` returns wall-clock seconds (injectable for tests). ``ledger`` is
    ``store.gateway``; without one, spend lives only as long as the process.
    """

    def __init__(
        self,
        ledger: GatewayStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        flush_interval_s: float = 1.0,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self._ttl = reservation_ttl_s
        self._flush_interval = flush_interval_s
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyState] = {}
        self._pending: dict[tuple[str, str, str], list[int]] = {}
        self._last_flush = clock()
        self._flush_lock = threading.Lock()
        self._flush_scheduled = False

    check_access = staticmethod(check_access)

    # -- helpers (called with self._lock held)

    def _expire(self, st: _KeyState, now: float) -> None:
        if not st.open:
            return
        for rid in [rid for rid, r in st.open.items() if r.expires_at <= now]:
            self._unreserve(st, st.open.pop(rid))

    def _unreserve(self, st: _KeyState, r: Reservation) -> None:
        if st.day.window == r.day:
            st.day.reserved -= r.cost_micro
        if st.month.window == r.month:
            st.month.reserved -= r.cost_micro

    def _roll(self, st: _KeyState, key: ApiKey, day: str, month: str) -> list[str]:
        """Move budgets to the current windows; return the windows that need a ledger load."""
        need = []
        if st.day.window != day:
            st.day = _Budget(day)
            # Reservations made in the old window stay charged to it (they settle there).
        if st.month.window != month:
            st.month = _Budget(month)
        # Load both windows whatever budgets the key has now, so that every commit into a
        # window happens after its load (the ledger never double-counts this process's spend).
        if self._ledger is not None:
            if not st.day.loaded:
                need.append("day")
            if not st.month.loaded:
                need.append("month")
        return need

    def _load(self, key: ApiKey, day: str, month: str) -> tuple[int, int]:
        assert self._ledger is not None
        d = date(int(day[:4]), int(day[4:6]), int(day[6:]))
        start = d.replace(day=1)
        day_total = self._ledger.get_spend(key.id, d, d).cost_micro_usd
        month_total = self._ledger.get_spend(key.id, start, d).cost_micro_usd
        return day_total, month_total

    async def reserve(self, key: ApiKey, est_tokens: int, est_cost: float) -> Reservation:
        """Take one request, ``est_tokens`` and ``est_cost`` atomically, or raise 429."""
        now = self._clock()
        day, month, to_day_end, to_month_end = _windows(now)
        cost = to_micro(est_cost)
        est_tokens = max(0, int(est_tokens))
        res = Reservation(
            id=uuid.uuid4().hex,
            key_id=key.id,
            project_id=key.project_id,
            tokens=est_tokens,
            cost_micro=cost,
            day=day,
            month=month,
            expires_at=now + self._ttl,
            tpm_limit=key.tpm_limit,
        )
        if not _has_limits(key):
            res.limited = False
            return res
        with self._lock:
            st = self._keys.get(key.id)
            if st is None:
                st = self._keys[key.id] = _KeyState()
            need = self._roll(st, key, day, month)
        if need:
            # Ledger reads happen outside the lock (and off the event loop).
            day_total, month_total = await asyncio.to_thread(self._load, key, day, month)
            with self._lock:
                if st.day.window == day and not st.day.loaded:
                    st.day.spent += day_total
                    st.day.loaded = True
                if st.month.window == month and not st.month.loaded:
                    st.month.spent += month_total
                    st.month.loaded = True
        with self._lock:
            self._roll(st, key, day, month)
            self._expire(st, now)
            self._check_and_take(st, key, res, now, to_day_end, to_month_end)
            st.open[res.id] = res
        return res

    def _check_and_take(
        self,
        st: _KeyState,
        key: ApiKey,
        res: Reservation,
        now: float,
        to_day_end: float,
        to_month_end: float,
    ) -> None:
        # Check every dimension first; charge only when all pass.
        if key.rpm_limit is not None:
            cap = float(key.rpm_limit)
            if st.rpm is None:
                st.rpm = _Bucket(cap, cap, now)
            st.rpm.refill(now, cap)
            if st.rpm.level < 1.0:
                raise _rate_error("request", key.rpm_limit, (1.0 - st.rpm.level) * 60.0 / cap)
        if key.tpm_limit is not None:
            cap = float(key.tpm_limit)
            if st.tpm is None:
                st.tpm = _Bucket(cap, cap, now)
            st.tpm.refill(now, cap)
            need = min(float(res.tokens), cap)
            if st.tpm.level < need or st.tpm.level <= 0:
                short = max(need, 1.0) - st.tpm.level
                raise _rate_error("token", key.tpm_limit, short * 60.0 / cap)
        if key.budget_usd_day is not None:
            b = st.day
            limit = to_micro(key.budget_usd_day)
            if b.spent + b.reserved >= limit or b.spent + b.reserved + res.cost_micro > limit:
                raise _budget_error("day", key.budget_usd_day, to_day_end)
        if key.budget_usd_month is not None:
            b = st.month
            limit = to_micro(key.budget_usd_month)
            if b.spent + b.reserved >= limit or b.spent + b.reserved + res.cost_micro > limit:
                raise _budget_error("month", key.budget_usd_month, to_month_end)
        if st.rpm is not None and key.rpm_limit is not None:
            st.rpm.level -= 1.0
        if st.tpm is not None and key.tpm_limit is not None:
            st.tpm.level -= res.tokens
        st.day.reserved += res.cost_micro
        st.month.reserved += res.cost_micro

    async def commit(self, res: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Replace the reservation's estimate by the actual usage (idempotent)."""
        if res.settled:
            return
        res.settled = True
        cost = to_micro(actual_cost)
        tokens = max(0, int(actual_tokens))
        now = self._clock()
        with self._lock:
            st = self._keys.get(res.key_id)
            if st is not None and res.limited:
                if st.open.pop(res.id, None) is not None:
                    self._unreserve(st, res)
                if st.tpm is not None:
                    st.tpm.give_back(res.tokens - tokens)
                if st.day.window == res.day:
                    st.day.spent += cost
                if st.month.window == res.month:
                    st.month.spent += cost
            if self._ledger is not None:
                k = (res.key_id, res.day, res.project_id)
                p = self._pending.setdefault(k, [0, 0, 0])
                p[0] += cost
                p[1] += tokens
                p[2] += 1
        if self._ledger is not None:
            if now - self._last_flush >= self._flush_interval:
                await asyncio.to_thread(self.flush)
            elif not self._flush_scheduled:
                # Traffic may stop now: make sure this spend reaches the ledger anyway.
                self._flush_scheduled = True
                loop = asyncio.get_running_loop()
                loop.call_later(self._flush_interval, self._scheduled_flush, loop)

    def _scheduled_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_scheduled = False
        loop.run_in_executor(None, self._flush_quietly)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # kept pending; the next flush retries
            pass

    async def release(self, res: Reservation) -> None:
        """Give the whole reservation back (the call failed before costing anything)."""
        if res.settled:
            return
        res.settled = True
        if not res.limited:
            return
        with self._lock:
            st = self._keys.get(res.key_id)
            if st is None:
                return
            if st.open.pop(res.id, None) is not None:
                self._unreserve(st, res)
            if st.tpm is not None:
                st.tpm.give_back(res.tokens)
            # The request slot stays taken: a failed call still reached (or tried) upstream.

    def flush(self) -> None:
        """Write pending spend to the ledger now (called periodically and on close)."""
        if self._ledger is None:
            return
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
                self._last_flush = self._clock()
            if not pending:
                return
            deltas = [
                SpendDelta(
                    key_id=kid,
                    project_id=pid,
                    day=date(int(d[:4]), int(d[4:6]), int(d[6:])),
                    cost_micro_usd=v[0],
                    tokens=v[1],
                    requests=v[2],
                )
                for (kid, d, pid), v in pending.items()
            ]
            try:
                self._ledger.add_spend(deltas)
            except Exception:
                # Keep the spend for the next attempt rather than lose it.
                with self._lock:
                    for (kid, d, pid), v in pending.items():
                        p = self._pending.setdefault((kid, d, pid), [0, 0, 0])
                        for i in range(3):
                            p[i] += v[i]
                raise

    def spent_usd(self, key_id: str) -> tuple[float, float]:
        """(today's, this month's) committed spend of a key known to this limiter."""
        with self._lock:
            st = self._keys.get(key_id)
            if st is None:
                return 0.0, 0.0
            return st.day.spent / MICRO_USD, st.month.spent / MICRO_USD

    async def close(self) -> None:
        """Flush pending spend to the ledger."""
        await asyncio.to_thread(self.flush)


# --------------------------------------------------------------------------- Redis

_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local est = tonumber(ARGV[4])
local dlim = tonumber(ARGV[5])
local mlim = tonumber(ARGV[6])
local cost = tonumber(ARGV[7])
local rid = ARGV[8]
local exp = tonumber(ARGV[9])

local function sweep(h, z)
  local ids = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(ids) do
    local amt = redis.call('HGET', h, 'r:' .. id)
    if amt then
      redis.call('HINCRBY', h, 'reserved', -tonumber(amt))
      redis.call('HDEL', h, 'r:' .. id)
    end
  end
  if #ids > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', now) end
end

local rl, rt, tl, tt
if rpm >= 0 then
  local b = redis.call('HMGET', KEYS[1], 'rl', 'rt')
  rl = tonumber(b[1]); rt = tonumber(b[2])
  if rl == nil then rl = rpm; rt = now end
  if now > rt then rl = math.min(rpm, rl + (now - rt) * rpm / 60); rt = now end
  if rl < 1 then return {1, tostring((1 - rl) * 60 / rpm)} end
end
if tpm >= 0 then
  local b = redis.call('HMGET', KEYS[1], 'tl', 'tt')
  tl = tonumber(b[1]); tt = tonumber(b[2])
  if tl == nil then tl = tpm; tt = now end
  if now > tt then tl = math.min(tpm, tl + (now - tt) * tpm / 60); tt = now end
  local need = math.min(est, tpm)
  if tl < need or tl <= 0 then return {2, tostring((math.max(need, 1) - tl) * 60 / tpm)} end
end
sweep(KEYS[2], KEYS[3])
sweep(KEYS[4], KEYS[5])
if dlim >= 0 then
  local d = redis.call('HMGET', KEYS[2], 'spent', 'reserved')
  local used = (tonumber(d[1]) or 0) + (tonumber(d[2]) or 0)
  if used >= dlim or used + cost > dlim then return {3, '0'} end
end
if mlim >= 0 then
  local m = redis.call('HMGET', KEYS[4], 'spent', 'reserved')
  local used = (tonumber(m[1]) or 0) + (tonumber(m[2]) or 0)
  if used >= mlim or used + cost > mlim then return {4, '0'} end
end
if rpm >= 0 then redis.call('HSET', KEYS[1], 'rl', tostring(rl - 1), 'rt', tostring(rt)) end
if tpm >= 0 then redis.call('HSET', KEYS[1], 'tl', tostring(tl - est), 'tt', tostring(tt)) end
if rpm >= 0 or tpm >= 0 then redis.call('EXPIRE', KEYS[1], 120) end
redis.call('HINCRBY', KEYS[2], 'reserved', cost)
redis.call('HSET', KEYS[2], 'r:' .. rid, cost)
redis.call('ZADD', KEYS[3], exp, rid)
redis.call('HINCRBY', KEYS[4], 'reserved', cost)
redis.call('HSET', KEYS[4], 'r:' .. rid, cost)
redis.call('ZADD', KEYS[5], exp, rid)
redis.call('EXPIRE', KEYS[2], ARGV[10]); redis.call('EXPIRE', KEYS[3], ARGV[10])
redis.call('EXPIRE', KEYS[4], ARGV[11]); redis.call('EXPIRE', KEYS[5], ARGV[11])
return {0, '0'}
"""

_SETTLE_LUA = """
local rid = ARGV[1]
local give = tonumber(ARGV[2])
local spend = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local function settle(h, z, ttl)
  local amt = redis.call('HGET', h, 'r:' .. rid)
  if amt then
    redis.call('HINCRBY', h, 'reserved', -tonumber(amt))
    redis.call('HDEL', h, 'r:' .. rid)
    redis.call('ZREM', z, rid)
  end
  if spend > 0 then
    redis.call('HINCRBY', h, 'spent', spend)
    redis.call('EXPIRE', h, ttl)
  end
end
settle(KEYS[2], KEYS[3], ARGV[5])
settle(KEYS[4], KEYS[5], ARGV[6])
if tpm >= 0 and give ~= 0 then
  local tl = tonumber(redis.call('HGET', KEYS[1], 'tl'))
  if tl then redis.call('HSET', KEYS[1], 'tl', tostring(math.min(tpm, tl + give))) end
end
return 0
"""

_DAY_TTL_S = 3 * 86400
_MONTH_TTL_S = 40 * 86400


class RedisLimiter:
    """Limits shared by every gateway replica through one Redis.

    ``prefix`` namespaces the keys (tests use a unique one). ``on_error`` decides what happens
    when Redis cannot be reached: ``"closed"`` answers 503 (nothing is spent unchecked),
    ``"open"`` falls back to a per-process :class:`MemoryLimiter` until Redis answers again.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "keel:lim:",
        clock: Callable[[], float] = time.time,
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        on_error: Literal["closed", "open"] = "closed",
        client: Redis | None = None,
        socket_timeout_s: float = 1.0,
    ) -> None:
        try:
            from redis.asyncio import Redis as _Redis
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ConfigError(f"the Redis limiter needs the 'redis' package: {e}")
        if on_error not in ("closed", "open"):
            raise ConfigError(f"limits.on_redis_error must be 'closed' or 'open', not {on_error!r}")
        self._redis: Redis = client or _Redis.from_url(
            url, socket_timeout=socket_timeout_s, socket_connect_timeout=socket_timeout_s
        )
        self._prefix = prefix
        self._clock = clock
        self._ttl = reservation_ttl_s
        self._on_error = on_error
        self._fallback = MemoryLimiter(clock=clock, reservation_ttl_s=reservation_ttl_s)
        self._reserve = self._redis.register_script(_RESERVE_LUA)
        self._settle = self._redis.register_script(_SETTLE_LUA)

    check_access = staticmethod(check_access)

    def _keys(self, key_id: str, day: str, month: str) -> list[str]:
        # One hash tag per API key: every key a script touches lives in one cluster slot.
        base = f"{self._prefix}{{{key_id}}}"
        return [
            f"{base}:b",
            f"{base}:d:{day}",
            f"{base}:dz:{day}",
            f"{base}:m:{month}",
            f"{base}:mz:{month}",
        ]

    def _unavailable(self, e: Exception) -> UnavailableError:
        return UnavailableError(
            f"the rate-limit store is unreachable: {type(e).__name__}",
            retry_after=1.0,
            hint="check that Redis is running, or set gateway.limits.on_redis_error = 'open'",
        )

    async def reserve(self, key: ApiKey, est_tokens: int, est_cost: float) -> Reservation:
        """Take one request, ``est_tokens`` and ``est_cost`` atomically, or raise 429."""
        from redis.exceptions import RedisError

        now = self._clock()
        day, month, to_day_end, to_month_end = _windows(now)
        res = Reservation(
            id=uuid.uuid4().hex,
            key_id=key.id,
            project_id=key.project_id,
            tokens=max(0, int(est_tokens)),
            cost_micro=to_micro(est_cost),
            day=day,
            month=month,
            expires_at=now + self._ttl,
            tpm_limit=key.tpm_limit,
        )
        if not _has_limits(key):
            res.limited = False
            return res
        args: list[str | int] = [
            repr(now),
            key.rpm_limit if key.rpm_limit is not None else -1,
            key.tpm_limit if key.tpm_limit is not None else -1,
            res.tokens,
            to_micro(key.budget_usd_day) if key.budget_usd_day is not None else -1,
            to_micro(key.budget_usd_month) if key.budget_usd_month is not None else -1,
            res.cost_micro,
            res.id,
            repr(res.expires_at),
            _DAY_TTL_S,
            _MONTH_TTL_S,
        ]
        try:
            out = await self._reserve(keys=self._keys(key.id, day, month), args=args)
        except RedisError as e:
            if self._on_error == "open":
                res = await self._fallback.reserve(key, est_tokens, est_cost)
                res.local = True
                return res
            raise self._unavailable(e) from e
        code = int(out[0])
        if code == 0:
            return res
        extra = float(out[1])
        if code == 1:
            raise _rate_error("request", key.rpm_limit or 0, extra)
        if code == 2:
            raise _rate_error("token", key.tpm_limit or 0, extra)
        if code == 3:
            raise _budget_error("day", key.budget_usd_day or 0.0, to_day_end)
        raise _budget_error("month", key.budget_usd_month or 0.0, to_month_end)

    async def _settle_call(self, res: Reservation, give_tokens: int, spend: int, tpm: int) -> None:
        from redis.exceptions import RedisError

        try:
            await self._settle(
                keys=self._keys(res.key_id, res.day, res.month),
                args=[res.id, give_tokens, spend, tpm, _DAY_TTL_S, _MONTH_TTL_S],
            )
        except RedisError as e:
            # The reservation expires on its own; the spend of this one call is lost.
            raise self._unavailable(e) from e

    async def commit(self, res: Reservation, actual_tokens: int, actual_cost: float) -> None:
        """Replace the reservation's estimate by the actual usage (idempotent)."""
        if res.settled:
            return
        res.settled = True
        if res.local:
            res.settled = False
            await self._fallback.commit(res, actual_tokens, actual_cost)
            return
        if not res.limited:
            return
        give = res.tokens - max(0, int(actual_tokens))
        tpm = res.tpm_limit if res.tpm_limit is not None else -1
        await self._settle_call(res, give, to_micro(actual_cost), tpm)

    async def release(self, res: Reservation) -> None:
        """Give the whole reservation back (the call failed before costing anything)."""
        if res.settled:
            return
        res.settled = True
        if res.local:
            res.settled = False
            await self._fallback.release(res)
            return
        if not res.limited:
            return
        tpm = res.tpm_limit if res.tpm_limit is not None else -1
        await self._settle_call(res, res.tokens, 0, tpm)

    async def spent_usd(self, key_id: str) -> tuple[float, float]:
        """(today's, this month's) committed spend of a key."""
        day, month, _, _ = _windows(self._clock())
        ks = self._keys(key_id, day, month)
        d = await self._redis.hget(ks[1], "spent")
        m = await self._redis.hget(ks[3], "spent")
        return int(d or 0) / MICRO_USD, int(m or 0) / MICRO_USD

    async def delete_all(self) -> int:
        """Delete every key under this limiter's prefix (tests and resets); returns the count."""
        n = 0
        async for k in self._redis.scan_iter(match=self._prefix + "*", count=500):
            n += int(await self._redis.delete(k))
        return n

    async def close(self) -> None:
        """Close the Redis connection pool."""
        await self._redis.aclose()


# --------------------------------------------------------------------------- configuration


def build_limiter(
    config: dict[str, Any] | None = None,
    *,
    ledger: GatewayStore | None = None,
    clock: Callable[[], float] = time.time,
) -> MemoryLimiter | RedisLimiter:
    """A limiter from the ``[gateway.limits]`` table of ``keel.toml``.

    Keys: ``backend`` (``"memory"`` default, or ``"redis"``), ``redis_url``
    (default ``redis://127.0.0.1:6379/0``), ``prefix`` (``keel:lim:``), ``on_redis_error``
    (``"closed"`` default, or ``"open"``), ``reservation_ttl_s`` (600), ``flush_interval_s``
    (1.0, memory backend). ``ledger`` is ``store.gateway`` (used by the memory backend).
    """
    cfg = dict(config or {})
    known = {
        "backend",
        "redis_url",
        "prefix",
        "on_redis_error",
        "reservation_ttl_s",
        "flush_interval_s",
    }
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(f"unknown key(s) in gateway.limits: {', '.join(sorted(unknown))}")
    backend = cfg.get("backend", "memory")
    ttl = float(cfg.get("reservation_ttl_s", DEFAULT_RESERVATION_TTL_S))
    if backend == "memory":
        return MemoryLimiter(
            ledger,
            clock=clock,
            reservation_ttl_s=ttl,
            flush_interval_s=float(cfg.get("flush_interval_s", 1.0)),
        )
    if backend == "redis":
        return RedisLimiter(
            str(cfg.get("redis_url", "redis://127.0.0.1:6379/0")),
            prefix=str(cfg.get("prefix", "keel:lim:")),
            clock=clock,
            reservation_ttl_s=ttl,
            on_error=cfg.get("on_redis_error", "closed"),
        )
    raise ConfigError(f"gateway.limits.backend must be 'memory' or 'redis', not {backend!r}")
