"""Circuit breaker per target: consecutive failures open it, a cooldown later one probe may
pass (half-open), a success closes it. Only failures that say something about the upstream's
health count (429, 5xx, 529, timeouts, connection errors), not a caller's bad request.

State lives outside the policy objects (:class:`BreakerState`, keyed by target) so it
survives a hot reload of the routing config.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, Provider, provider_error


@dataclass(slots=True)
class BreakerState:
    """Mutable health of one target."""

    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    opened: int = 0

    def state(self, now: float | None = None) -> str:
        """``closed``, ``open`` or ``half_open``."""
        now = time.monotonic() if now is None else now
        if self.open_until == 0.0:
            return "closed"
        return "open" if now < self.open_until else "half_open"


def _counts(e: ProviderError) -> bool:
    return e.retryable or e.code in ("upstream_timeout", "stream_stall", "stream_cut")


class CircuitBreaker:
    """Fails fast with ``circuit_open`` while the target is unhealthy."""

    def __init__(
        self, inner: Provider, state: BreakerState, *, failures: int = 5, cooldown_s: float = 30.0
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.st = state
        self.threshold = failures
        self.cooldown_s = cooldown_s

    def models(self) -> list[str]:
        """The inner provider's models."""
        return self.inner.models()

    def _admit(self, ctx: CallContext) -> bool:
        """Raise when open; returns True when this call is the half-open probe."""
        st = self.st
        if st.open_until == 0.0:
            return False
        now = time.monotonic()
        if now < st.open_until or st.probing:
            err = provider_error(
                f"circuit for {self.name} is open after repeated failures",
                status=503,
                code="circuit_open",
                retryable=False,
                retry_after=max(0.0, st.open_until - now),
            )
            ctx.decision.hops.append(self.name)
            ctx.decision.errors.append("circuit_open")
            raise err
        st.probing = True
        return True

    def _ok(self) -> None:
        st = self.st
        st.failures = 0
        st.open_until = 0.0
        st.probing = False

    def _fail(self, e: ProviderError) -> None:
        st = self.st
        st.probing = False
        if not _counts(e):
            return
        st.failures += 1
        if st.failures >= self.threshold or st.open_until != 0.0:
            st.opened += 1
            st.open_until = time.monotonic() + self.cooldown_s

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """Call unless open."""
        self._admit(ctx)
        try:
            out = await self.inner.chat(body, ctx)
        except ProviderError as e:
            self._fail(e)
            raise
        except BaseException:
            self.st.probing = False
            raise
        self._ok()
        return out

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Stream unless open; a failure at any point counts."""
        self._admit(ctx)
        try:
            async for c in self.inner.stream(body, ctx):
                yield c
        except ProviderError as e:
            self._fail(e)
            raise
        except BaseException:
            self.st.probing = False
            raise
        self._ok()

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Embeddings unless open."""
        self._admit(ctx)
        try:
            out = await self.inner.embed(body, ctx)
        except ProviderError as e:
            self._fail(e)
            raise
        self._ok()
        return out
