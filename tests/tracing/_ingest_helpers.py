"""Span factories shared by the ingest and query tests (deterministic ids and times)."""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def hexid(seed: str, nbytes: int) -> str:
    """A deterministic hex id."""
    return hashlib.sha256(seed.encode()).hexdigest()[: nbytes * 2]


def llm_span(
    trace: str,
    name: str,
    *,
    parent: str | None = None,
    start_ms: int = 0,
    dur_ms: int = 100,
    model: str | None = "gpt-4o-mini",
    provider: str = "openai",
    input_tokens: int | None = 10,
    output_tokens: int | None = 5,
    status: SpanStatus = SpanStatus.UNSET,
    service: str = "svc",
    project_id: str = "default",
    extra: dict[str, Any] | None = None,
    events: list[SpanEvent] | None = None,
) -> Span:
    """A GenAI chat span (or a plain span when ``model`` is None)."""
    attrs: dict[str, Any] = {}
    if model is not None:
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
        }
        if input_tokens is not None:
            attrs["gen_ai.usage.input_tokens"] = input_tokens
        if output_tokens is not None:
            attrs["gen_ai.usage.output_tokens"] = output_tokens
    attrs.update(extra or {})
    return Span(
        trace_id=hexid(trace, 16),
        span_id=hexid(f"{trace}/{name}", 8),
        parent_span_id=hexid(f"{trace}/{parent}", 8) if parent else None,
        name=name,
        kind=SpanKind.CLIENT if model else SpanKind.INTERNAL,
        start_time_ns=T0 + start_ms * 1_000_000,
        end_time_ns=T0 + (start_ms + dur_ms) * 1_000_000,
        status=status,
        attributes=attrs,
        events=events or [],
        resource={"service.name": service},
        scope="tests",
        project_id=project_id,
    )


def agent_trace(
    trace: str, *, start_ms: int = 0, service: str = "svc", project_id: str = "default", **kw: Any
) -> list[Span]:
    """A root agent span with two LLM calls and a tool call under it."""
    common: dict[str, Any] = {"service": service, "project_id": project_id}
    return [
        llm_span(trace, "agent", model=None, start_ms=start_ms, dur_ms=1000, **common),
        llm_span(trace, "chat 1", parent="agent", start_ms=start_ms + 10, **common, **kw),
        llm_span(trace, "tool", parent="agent", model=None, start_ms=start_ms + 200, **common),
        llm_span(trace, "chat 2", parent="agent", start_ms=start_ms + 300, **common, **kw),
    ]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
