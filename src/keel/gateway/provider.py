"""The one interface every model backend and every routing policy implements.

A :class:`Provider` speaks OpenAI's wire shapes as plain dicts (no per-request models on the
hot path): ``chat`` takes a Chat Completions request body and returns a ``chat.completion``
dict; ``stream`` is an async iterator of ``chat.completion.chunk`` dicts (the last one may carry
``usage`` with ``choices: []``); ``embed`` takes an Embeddings body and returns the ``list``
dict; ``models`` names what it serves. Concrete providers (``keel.gateway.providers.*``)
translate to and from their upstream API with pure functions; policies
(``keel.gateway.policies.*``) are Providers around Providers (retry, fallback, weighted split,
circuit breaker, cost/latency choice, mirroring, prompt rendering, cache).

Failures are :class:`keel.errors.ProviderError` with ``upstream_status`` (HTTP status or None
for connection errors / timeouts), ``retryable`` (429, 5xx, 529, connect/reset, timeouts) and
``retry_after`` (seconds, from ``retry-after-ms`` / ``retry-after``). ``code`` is one of
``rate_limited``, ``upstream_error``, ``upstream_timeout``, ``connection_error``,
``context_length_exceeded``, ``content_filter``, ``upstream_auth``, ``overloaded``,
``stream_cut``, ``stream_stall``, ``malformed_chunk``, ``invalid_request``.

Streaming rule: a policy may fall back only while no chunk has been yielded; once one has,
an error propagates to the caller (the HTTP layer turns it into an in-stream error frame,
never a clean ``[DONE]``).

Per-request state travels in a :class:`CallContext` (tenant, sticky key, deadline, and the
:class:`Decision` every policy writes into: chosen target, hops, retries, cache hit ...).

Interfaces for the components another module provides (wrapped by the pipeline):

* Cache (``keel.gateway.cache`` exact, ``keel.gateway.semantic_cache``)::

      async def lookup(scope: CacheScope, request: dict) -> CacheHit | None
      async def store(scope: CacheScope, request: dict, response: dict) -> None

  ``CacheScope`` is (project_id, route, model, prompt_version); the tenant is always part of
  it. Plain (non-async) methods are accepted too. ``CacheHit`` has ``response`` (a
  ``chat.completion`` dict) and ``similarity`` (None for exact hits).

* Limits (``keel.gateway.limits``)::

      reserve(key: ApiKey, est_tokens: int, est_cost: float) -> Reservation   # raises 429
      commit(reservation, actual_tokens: int, actual_cost: float) -> None
      release(reservation) -> None

  called (sync or async) once before the upstream call and once after it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from keel.errors import ProviderError

Body = dict[str, Any]

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


@dataclass(frozen=True, slots=True)
class CacheScope:
    """What a cache entry is isolated by. ``project_id`` (the tenant) is never optional."""

    project_id: str
    route: str
    model: str
    prompt_version: str | None = None


@dataclass(frozen=True, slots=True)
class CacheHit:
    """A cached answer; ``similarity`` is None for an exact hit."""

    response: Body
    similarity: float | None = None
    encoder: str | None = None  # the semantic cache's query encoder (its cosines differ)


@dataclass(slots=True)
class Decision:
    """What the gateway did with one request; becomes the ``keel.gateway.*`` span attributes."""

    route: str | None = None
    target: str | None = None
    provider: str | None = None
    model: str | None = None
    weights: dict[str, float] | None = None
    hops: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retries: int = 0
    cache_hit: bool = False
    cache_similarity: float | None = None
    cache_encoder: str | None = None
    mirror_target: str | None = None
    guardrails: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cost_usd: float | None = None
    ttft_ms: float | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    prompt_label: str | None = None
    config_hash: str | None = None


@dataclass(slots=True)
class CallContext:
    """Per-request state shared by the policies of one call."""

    project_id: str = "default"
    key_id: str | None = None
    sticky_key: str | None = None
    deadline: float = 0.0
    variables: dict[str, Any] | None = None
    decision: Decision = field(default_factory=Decision)
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float:
        """Seconds left before the request deadline (inf when there is none)."""
        if not self.deadline:
            return float("inf")
        return self.deadline - time.monotonic()


@runtime_checkable
class Provider(Protocol):
    """A model backend or a policy around backends."""

    name: str

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        """One ``chat.completion`` for a Chat Completions request body."""
        ...

    def stream(self, body: Body, ctx: CallContext) -> AsyncIterator[Body]:
        """``chat.completion.chunk`` dicts; errors after the first chunk propagate."""
        ...

    async def embed(self, body: Body, ctx: CallContext) -> Body:
        """An embeddings ``list`` response."""
        ...

    def models(self) -> list[str]:
        """Model names this provider serves."""
        ...


def provider_error(
    message: str,
    *,
    status: int | None,
    code: str | None = None,
    retry_after: float | None = None,
    retryable: bool | None = None,
) -> ProviderError:
    """A ProviderError classified the one way the policies expect."""
    if retryable is None:
        retryable = status is None or status in RETRYABLE_STATUSES
    if code is None:
        if status is None:
            code = "connection_error"
        elif status == 429:
            code = "rate_limited"
        elif status in (401, 403):
            code = "upstream_auth"
        elif status == 529:
            code = "overloaded"
        elif status >= 500:
            code = "upstream_error"
        else:
            code = "invalid_request"
    # What the gateway answers with: upstream 4xx (client faults) keep their status,
    # 429 stays 429, upstream auth problems and 5xx become 502/503 (the caller's key is fine).
    if status is None:
        http = 502 if code != "upstream_timeout" else 504
    elif status == 429:
        http = 429
    elif status in (401, 403):
        http = 502
    elif status in (503, 529):
        http = 503
    elif status >= 500:
        http = 502
    else:
        http = status
    return ProviderError(
        message,
        upstream_status=status,
        retryable=retryable,
        retry_after=retry_after,
        status=http,
        code=code,
    )


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(ra)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())
