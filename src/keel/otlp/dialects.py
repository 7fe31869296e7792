"""Dialect normalization: read any instrumentation's span attributes as a typed ``LlmCall``.

Entry point: :func:`to_llm_call`. (First cut: OTel GenAI core names only; the tracing work
extends this to OpenInference, OpenLLMetry, OpenLIT, Logfire, traceAI and Langfuse.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.core.spans import LlmCall, Span


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def to_llm_call(span: Span | Mapping[str, Any]) -> LlmCall | None:
    """The ``LlmCall`` view of a span, or None when the span is not an LLM/agent step."""
    attrs = span.attributes if isinstance(span, Span) else span
    if not any(k.startswith("gen_ai.") for k in attrs):
        return None
    return LlmCall(
        operation=attrs.get("gen_ai.operation.name"),
        provider=attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system"),
        request_model=attrs.get("gen_ai.request.model"),
        response_model=attrs.get("gen_ai.response.model"),
        input_tokens=_int(attrs.get("gen_ai.usage.input_tokens")),
        output_tokens=_int(attrs.get("gen_ai.usage.output_tokens")),
        dialect="otel_genai",
    )
