"""Helpers: stored LLM spans in the GenAI v1.41 dialect, for curation tests."""

from __future__ import annotations

import json

from keel.core.spans import Span
from keel.otlp.dialects import to_llm_call
from keel.storage.spans import SpanRecord


def spans_for(project_id: str, n: int, model: str = "gpt-4o-mini") -> list[SpanRecord]:
    """``n`` one-span traces with a chat call each."""
    out = []
    for i in range(1, n + 1):
        s = Span(
            trace_id=f"{i:032x}",
            span_id=f"{i:016x}",
            name=f"chat {model}",
            start_time_ns=1_900_000_000_000_000_000 + i,
            end_time_ns=1_900_000_000_000_000_000 + i + 5,
            project_id=project_id,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": f"q{i}"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": f"a{i}"}]}]
                ),
            },
        )
        out.append(SpanRecord(s, to_llm_call(s)))
    return out
