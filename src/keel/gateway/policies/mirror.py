"""Traffic mirroring: a shadow target gets a copy of the request; its answer is recorded beside
the primary's (for grading) and never reaches the caller.

The shadow call runs after the primary has answered (non-streaming) or alongside it
(streaming), as a background task under a process-wide concurrency cap; when the cap is
reached the copy is dropped and counted, so mirroring can never slow the primary path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, Decision, Provider

# record(primary_ctx, shadow_decision, request_body, primary_response | None, shadow_response | None, error | None, seconds)
MirrorRecorder = Callable[
    [CallContext, Decision, Body, Body | None, Body | None, str | None, float], None
]


class MirrorPool:
    """Process-wide bound on shadow calls in flight, plus the task set that keeps them alive."""

    def __init__(self, max_in_flight: int = 32) -> None:
        self.max_in_flight = max_in_flight
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dropped = 0
        self.done = 0

    def spawn(self, coro: Any) -> bool:
        """Start ``coro`` unless at the cap (then it is closed and counted as dropped)."""
        if len(self.tasks) >= self.max_in_flight:
            coro.close()
            self.dropped += 1
            return False
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return True

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for shadow calls to finish (at shutdown, or in tests)."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)


class Mirror:
    """``primary`` answers; ``shadow`` gets a copy."""

    def __init__(
        self,
        primary: Provider,
        shadow: Provider,
        *,
        sample: float,
        pool: MirrorPool,
        record: MirrorRecorder,
    ) -> None:
        self.inner = primary
        self.shadow = shadow
        self.name = primary.name
        self.sample = sample
        self.pool = pool
        self.record = record

    def models(self) -> list[str]:
        """The primary's models."""
        return self.inner.models()

    async def _shadow(self, body: Body, ctx: CallContext, primary: Body | None) -> None:
        sctx = CallContext(project_id=ctx.project_id, key_id=ctx.key_id, sticky_key=ctx.sticky_key)
        t0 = time.monotonic()
        out: Body | None = None
        err: str | None = None
        try:
            out = await asyncio.wait_for(self.shadow.chat(body, sctx), 120.0)
        except ProviderError as e:
            err = f"{e.code}: {e.message}"
        except TimeoutError:
            err = "upstream_timeout: shadow did not answer in 120 s"
        except Exception as e:  # a shadow must never disturb anything
            err = f"internal: {type(e).__name__}"
        self.pool.done += 1
        try:
            self.record(ctx, sctx.decision, body, primary, out, err, time.monotonic() - t0)
        except Exception:
            pass

    def _copy(self, body: Body) -> Body:
        b = body.copy()
        b.pop("stream", None)
        b.pop("stream_options", None)
        return b

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """Primary answer; shadow afterwards in the background."""
        out = await self.inner.chat(body, ctx)
        if (self.sample >= 1.0 or random.random() < self.sample) and self.pool.spawn(
            self._shadow(self._copy(body), ctx, out)
        ):
            ctx.decision.mirror_target = self.shadow.name
        return out

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """Primary chunks; shadow (non-streaming) alongside."""
        if (self.sample >= 1.0 or random.random() < self.sample) and self.pool.spawn(
            self._shadow(self._copy(body), ctx, None)
        ):
            ctx.decision.mirror_target = self.shadow.name
        async for c in self.inner.stream(body, ctx):
            yield c

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Not mirrored."""
        return await self.inner.embed(body, ctx)
