"""Retries with exponential backoff and full jitter, honouring ``Retry-After``, under a budget.

Only retryable failures (429, 5xx, 529, connection errors) are retried, never after a stream
has produced output, never a silent upstream (a timeout moves on to the fallback instead), and
never past the request deadline. A ``Retry-After`` longer than ``retry_after_cap_s`` is not
waited for: the error goes up so a fallback can answer now. The process-wide
:class:`RetryBudget` caps concurrent retries at a share of active requests (Envoy's rule), so
an outage cannot multiply load.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, Provider

NO_RETRY_CODES = frozenset({"upstream_timeout", "circuit_open", "stream_stall"})


class RetryBudget:
    """Concurrent retries <= max(percent % of active requests, minimum)."""

    def __init__(self, percent: float = 20.0, minimum: int = 3) -> None:
        self.percent = percent
        self.minimum = minimum
        self.active = 0
        self.retrying = 0
        self.denied = 0

    def try_acquire(self) -> bool:
        """Take one retry slot, or False when the budget is spent."""
        cap = max(self.active * self.percent / 100.0, self.minimum)
        if self.retrying + 1 > cap:
            self.denied += 1
            return False
        self.retrying += 1
        return True

    def release(self) -> None:
        """Give the slot back."""
        self.retrying -= 1


class Retry:
    """Retries ``inner`` up to ``retries`` extra times."""

    def __init__(
        self,
        inner: Provider,
        *,
        retries: int,
        budget: RetryBudget,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        retry_after_cap_s: float = 30.0,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.retries = retries
        self.budget = budget
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.retry_after_cap_s = retry_after_cap_s

    def models(self) -> list[str]:
        """The inner provider's models."""
        return self.inner.models()

    def _delay(self, attempt: int, e: ProviderError, ctx: CallContext) -> float | None:
        if not e.retryable or e.code in NO_RETRY_CODES or attempt >= self.retries:
            return None
        if e.retry_after is not None:
            if e.retry_after > self.retry_after_cap_s:
                return None
            delay = e.retry_after
        else:
            delay = random.uniform(0, min(self.max_backoff_s, self.backoff_s * (2**attempt)))
        if delay >= ctx.remaining():
            return None
        return delay

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """Call, retrying what may be retried."""
        attempt = 0
        while True:
            try:
                return await self.inner.chat(body, ctx)
            except ProviderError as e:
                delay = self._delay(attempt, e, ctx)
                if delay is None or not self.budget.try_acquire():
                    raise
            try:
                await asyncio.sleep(delay)
            finally:
                self.budget.release()
            attempt += 1
            ctx.decision.retries += 1

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Stream, retrying only while nothing has been yielded."""
        attempt = 0
        while True:
            started = False
            try:
                async for c in self.inner.stream(body, ctx):
                    started = True
                    yield c
                return
            except ProviderError as e:
                delay = None if started else self._delay(attempt, e, ctx)
                if delay is None or not self.budget.try_acquire():
                    raise
            try:
                await asyncio.sleep(delay)
            finally:
                self.budget.release()
            attempt += 1
            ctx.decision.retries += 1

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Embeddings, retried like chat."""
        attempt = 0
        while True:
            try:
                return await self.inner.embed(body, ctx)
            except ProviderError as e:
                delay = self._delay(attempt, e, ctx)
                if delay is None or not self.budget.try_acquire():
                    raise
            try:
                await asyncio.sleep(delay)
            finally:
                self.budget.release()
            attempt += 1
            ctx.decision.retries += 1
