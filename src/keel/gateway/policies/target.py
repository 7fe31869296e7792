"""The leaf of a route: one provider, one model, and the time-to-first-token limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from keel.errors import ProviderError
from keel.gateway.provider import Body, CallContext, Provider, provider_error


@dataclass(frozen=True, slots=True)
class TargetInfo:
    """What routing needs to know about a target (prices per token, limits, capabilities)."""

    key: str
    provider: str
    model: str
    weight: float = 1.0
    context_window: int | None = None
    input_price: float | None = None  # USD per token
    output_price: float | None = None
    supports_tools: bool = True
    supports_vision: bool = True
    supports_json: bool = True


class Targeted:
    """Sends to ``provider`` with ``model``; records the attempt in the decision."""

    def __init__(
        self, provider: Provider, info: TargetInfo, *, ttft_timeout_s: float | None = None
    ) -> None:
        self.inner = provider
        self.info = info
        self.name = info.key
        self.ttft_timeout_s = ttft_timeout_s

    def models(self) -> list[str]:
        """The one model."""
        return [self.info.model]

    def _body(self, body: Body) -> Body:
        b = body.copy()
        b["model"] = self.info.model
        return b

    def _chosen(self, ctx: CallContext) -> None:
        d = ctx.decision
        d.target = self.info.key
        d.provider = self.info.provider
        d.model = self.info.model

    def _failed(self, ctx: CallContext, e: ProviderError) -> None:
        ctx.decision.hops.append(self.info.key)
        ctx.decision.errors.append(e.code)

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """One attempt."""
        self._chosen(ctx)
        try:
            return await self.inner.chat(self._body(body), ctx)
        except ProviderError as e:
            self._failed(ctx, e)
            raise

    async def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """One attempt; no first chunk within ``ttft_timeout_s`` is a (retryable) failure."""
        self._chosen(ctx)
        it = self.inner.stream(self._body(body), ctx).__aiter__()
        started = False
        try:
            try:
                async with asyncio.timeout(self.ttft_timeout_s):
                    first = await it.__anext__()
            except StopAsyncIteration:
                raise provider_error(
                    f"{self.info.key} ended the stream without any output",
                    status=None,
                    code="stream_cut",
                ) from None
            except TimeoutError:
                raise provider_error(
                    f"{self.info.key} sent no first token within {self.ttft_timeout_s:g} s",
                    status=None,
                    code="upstream_timeout",
                ) from None
            started = True
            yield first
            async for c in it:
                yield c
        except ProviderError as e:
            if not started:
                self._failed(ctx, e)
            raise
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """Embeddings with this model."""
        self._chosen(ctx)
        return await self.inner.embed(self._body(body), ctx)
