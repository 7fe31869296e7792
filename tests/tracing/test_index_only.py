"""The ingest path's index-only LLM view agrees with the full view on every indexed field."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.otlp.decode import decode_request
from keel.otlp.dialects import to_llm_call

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures" / "otlp").glob("*/*.pb"))
INDEXED = (
    "operation",
    "provider",
    "request_model",
    "response_model",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "cost_source",
    "route",
    "prompt_name",
    "prompt_version",
    "error_type",
    "ttft_ms",
    "agent_step",
    "dialect",
)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_index_only_matches_full_view(path: Path) -> None:
    spans = decode_request(path.read_bytes(), "application/x-protobuf").spans
    assert spans
    seen_llm = False
    for span in spans:
        full, idx = to_llm_call(span), to_llm_call(span, index_only=True)
        assert (full is None) == (idx is None)
        if full is None or idx is None:
            continue
        seen_llm = True
        for f in INDEXED:
            assert getattr(idx, f) == getattr(full, f), (span.name, f)
        assert idx.input_messages == [] or full.input_messages
    assert seen_llm
