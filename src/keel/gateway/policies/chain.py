"""Try targets in an order a strategy picks; move on when one fails in a way another can fix.

Orders: :class:`WeightedOrder` (split by weight, sticky per user/session key, the rest by
weight as failover), :class:`FallbackOrder` (as declared), :class:`CostOrder` (cheapest
target that fits the request's context and capabilities first), :class:`LatencyOrder`
(lowest smoothed latency first, with a little exploration).

Moving on happens for retryable failures (429, 5xx, 529, timeouts, connection errors), an
open circuit, an upstream auth failure (that key is bad, another provider's may be fine) and
a context-length error (the next target may have a larger window). A content-filter or other
4xx stops the chain. Streams move on only before their first chunk. When every target fails
the first error is raised (it names the primary's problem, not the last hop's).
"""

from __future__ import annotations

import bisect
import random
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence

from keel.errors import ProviderError
from keel.gateway.policies.target import TargetInfo
from keel.gateway.provider import Body, CallContext, Provider, provider_error

MOVE_ON_CODES = frozenset(
    {"circuit_open", "upstream_auth", "context_length_exceeded", "model_unavailable"}
)


def moves_on(e: ProviderError) -> bool:
    """Whether another target may succeed where this one failed."""
    return (
        e.retryable
        or e.code in MOVE_ON_CODES
        or e.code in ("stream_cut", "stream_stall", "upstream_timeout")
    )


class FallbackOrder:
    """As declared."""

    def __init__(self, n: int) -> None:
        self.order = list(range(n))

    def __call__(self, body: Body, ctx: CallContext) -> Sequence[int]:
        """Indices in declared order."""
        return self.order


class WeightedOrder:
    """One target by weight (sticky when the request carries a user/session key), then the
    others by descending weight."""

    def __init__(self, route: str, infos: Sequence[TargetInfo]) -> None:
        self.route = route
        weights = [max(0.0, i.weight) for i in infos]
        total = sum(weights) or 1.0
        self.weights = {i.key: w / total for i, w in zip(infos, weights, strict=True)}
        acc = 0.0
        self.cum: list[float] = []
        for w in weights:
            acc += w / total
            self.cum.append(acc)
        by_weight = sorted(range(len(infos)), key=lambda k: -weights[k])
        self.orders = [[k] + [j for j in by_weight if j != k] for k in range(len(infos))]
        self.salt = route.encode() + b"\x00"

    def pick(self, sticky_key: str | None) -> int:
        """Index of the chosen target."""
        if sticky_key:
            x = zlib.crc32(self.salt + sticky_key.encode()) / 4294967296.0
        else:
            x = random.random()
        return min(bisect.bisect_right(self.cum, x), len(self.cum) - 1)

    def __call__(self, body: Body, ctx: CallContext) -> Sequence[int]:
        """Chosen first, then the rest."""
        ctx.decision.weights = self.weights
        return self.orders[self.pick(ctx.sticky_key)]


def _estimate_prompt_tokens(body: Body) -> int:
    n = 0
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            for p in c:
                if isinstance(p, dict):
                    n += len(str(p.get("text", ""))) + (3000 if p.get("type") == "image_url" else 0)
    for t in body.get("tools") or ():
        n += len(str(t))
    return n // 4 + 8


def _needs_vision(body: Body) -> bool:
    for m in body.get("messages") or ():
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in c
        ):
            return True
    return False


class CostOrder:
    """Cheapest eligible target first (prices per token from genai-prices or the config)."""

    def __init__(self, infos: Sequence[TargetInfo], default_output_tokens: int = 256) -> None:
        self.infos = list(infos)
        self.default_output_tokens = default_output_tokens

    def __call__(self, body: Body, ctx: CallContext) -> Sequence[int]:
        """Eligible targets, cheapest first; raises when none fits."""
        pt = _estimate_prompt_tokens(body)
        out = int(
            body.get("max_completion_tokens")
            or body.get("max_tokens")
            or self.default_output_tokens
        )
        tools = bool(body.get("tools"))
        vision = _needs_vision(body)
        fmt = (body.get("response_format") or {}).get("type")
        json_needed = fmt in ("json_object", "json_schema")
        scored: list[tuple[float, int]] = []
        for k, i in enumerate(self.infos):
            if i.context_window is not None and pt + out > i.context_window:
                continue
            if (
                (tools and not i.supports_tools)
                or (vision and not i.supports_vision)
                or (json_needed and not i.supports_json)
            ):
                continue
            cost = (i.input_price or 0.0) * pt + (i.output_price or 0.0) * out
            if i.input_price is None and i.output_price is None:
                cost = float("inf")  # unknown price: only when nothing priced fits
            scored.append((cost, k))
        if not scored:
            raise provider_error(
                f"no target of this route fits a request of about {pt + out} tokens with these capabilities",
                status=400,
                code="context_length_exceeded",
            )
        scored.sort()
        ctx.decision.weights = {
            self.infos[k].key: (0.0 if c == float("inf") else round(c, 8)) for c, k in scored
        }
        return [k for _, k in scored]


class LatencyOrder:
    """Lowest smoothed latency (EWMA of time to answer or to first chunk) first."""

    def __init__(
        self,
        infos: Sequence[TargetInfo],
        stats: dict[str, float],
        alpha: float = 0.2,
        explore: float = 0.05,
    ) -> None:
        self.keys = [i.key for i in infos]
        self.stats = stats
        self.alpha = alpha
        self.explore = explore

    def observe(self, key: str, seconds: float) -> None:
        """Fold one latency sample in."""
        old = self.stats.get(key)
        self.stats[key] = seconds if old is None else old + self.alpha * (seconds - old)

    def __call__(self, body: Body, ctx: CallContext) -> Sequence[int]:
        """Unmeasured targets first (to measure them), then fastest."""
        order = sorted(range(len(self.keys)), key=lambda k: self.stats.get(self.keys[k], 0.0))
        if len(order) > 1 and random.random() < self.explore:
            random.shuffle(order)
        return order


class Chain:
    """Tries ``targets`` in the order ``order(body, ctx)`` gives."""

    def __init__(
        self,
        name: str,
        targets: Sequence[Provider],
        order: Callable[[Body, CallContext], Sequence[int]],
        *,
        on_latency: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self.targets = list(targets)
        self.order = order
        self.on_latency = on_latency

    def models(self) -> list[str]:
        """Every target's models."""
        return [m for t in self.targets for m in t.models()]

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """First success in order."""
        first: ProviderError | None = None
        for k in self.order(body, ctx):
            t = self.targets[k]
            t0 = time.monotonic()
            try:
                out = await t.chat(body, ctx)
            except ProviderError as e:
                first = first or e
                if not moves_on(e):
                    raise
                continue
            if self.on_latency is not None:
                self.on_latency(t.name, time.monotonic() - t0)
            return out
        assert first is not None
        raise first

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """First stream that produces a chunk; after that, errors propagate."""
        first: ProviderError | None = None
        for k in self.order(body, ctx):
            t = self.targets[k]
            t0 = time.monotonic()
            started = False
            try:
                async for c in t.stream(body, ctx):
                    if not started:
                        started = True
                        if self.on_latency is not None:
                            self.on_latency(t.name, time.monotonic() - t0)
                    yield c
                return
            except ProviderError as e:
                if started:
                    raise
                first = first or e
                if not moves_on(e):
                    raise
        assert first is not None
        raise first

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """First success in order."""
        first: ProviderError | None = None
        for k in self.order(body, ctx):
            try:
                return await self.targets[k].embed(body, ctx)
            except ProviderError as e:
                first = first or e
                if not moves_on(e):
                    raise
        assert first is not None
        raise first
