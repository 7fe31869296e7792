"""Every fixture produced by a real instrumentation library normalizes to what crossed the wire.

Fixtures live in ``tests/fixtures/otlp/<dialect>/`` (see ``generate.py`` there). For each
scenario the LLM calls read from the spans must match the fake server's log: models, tokens,
messages, tool calls, errors — except the fields the dialect's library does not emit
(``not_emitted`` in ``expected.json``, checked by hand against the raw attributes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from keel.core.spans import LlmCall, Message
from keel.otlp.dialects import MODEL_OPERATIONS, detect_dialect, to_llm_call

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "otlp"
sys.path.insert(0, str(FIXTURES))

from otlp_decode import decode_spans  # noqa: E402

from keel.otlp.decode import decode_json, decode_protobuf  # noqa: E402

DIALECTS = sorted(p.parent.name for p in FIXTURES.glob("*/expected.json"))
CASES = [
    (d, scen, enc)
    for d in DIALECTS
    for scen in json.loads((FIXTURES / d / "expected.json").read_text())["scenarios"]
    for enc in ("pb", "json")
]


def _msg_view(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.content is not None:
        out["content"] = m.content
    if m.tool_calls:
        out["tool_calls"] = [{"name": t.name, "arguments": t.arguments} for t in m.tool_calls]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    return out


def _model_calls(dialect: str, scen: str, enc: str = "pb") -> list[LlmCall]:
    """Decode the payload with Keel's own OTLP decoder and read the model calls."""
    body = (FIXTURES / dialect / f"{scen}.{enc}").read_bytes()
    batch = decode_protobuf(body) if enc == "pb" else decode_json(body)
    spans = sorted(batch.spans, key=lambda s: s.start_time_ns)
    calls = [c for s in spans if (c := to_llm_call(s)) is not None]
    calls = [c for c in calls if c.operation in MODEL_OPERATIONS]
    return calls


def _completed(c: LlmCall) -> bool:
    return bool(c.output_messages or c.input_tokens is not None or c.error_type)


def test_corpus_is_present() -> None:
    assert {"otel_genai", "openinference", "openllmetry", "langfuse"} <= set(DIALECTS)


@pytest.mark.parametrize(
    ("dialect", "scen", "enc"), CASES, ids=[f"{d}-{s}-{e}" for d, s, e in CASES]
)
def test_fixture_normalizes(dialect: str, scen: str, enc: str) -> None:
    spec = json.loads((FIXTURES / dialect / "expected.json").read_text())["scenarios"][scen]
    skip = set(spec["not_emitted"])
    calls = _model_calls(dialect, scen, enc)
    expected = spec["llm_calls"]
    if len(calls) > len(expected):
        # Logfire writes a request span and, for streams, a separate log span with the answer
        calls = [c for c in calls if _completed(c)]
    assert len(calls) == len(expected)
    for got, want in zip(calls, expected, strict=True):
        assert LlmCall.model_validate(got.model_dump()) == got  # built without validation
        assert got.dialect == (
            dialect.split("_legacy")[0] if dialect != "otel_genai" else "otel_genai"
        )
        view = {
            "operation": got.operation,
            "provider": got.provider,
            "request_model": got.request_model,
            "response_model": got.response_model,
            "input_tokens": got.input_tokens,
            "output_tokens": got.output_tokens,
            "cached_tokens": got.cached_tokens,
            "input_messages": [_msg_view(m) for m in got.input_messages],
            "output_messages": [_msg_view(m) for m in got.output_messages],
            "tool_calls": [{"name": t.name, "arguments": t.arguments} for t in got.tool_calls],
            "error": got.error_type is not None,
        }
        for key, value in want.items():
            if key in skip:
                continue
            assert view[key] == value, f"{dialect}/{scen}: {key}"
        if want["error"]:
            assert (
                got.error_type and "InternalServerError" in got.error_type
            ) or "error_type" in skip


@pytest.mark.parametrize("dialect", DIALECTS)
def test_json_encoding_matches_protobuf(dialect: str) -> None:
    """The OTLP/JSON twin of each payload carries the same spans (ids as hex)."""
    pb = decode_spans((FIXTURES / dialect / "chat.pb").read_bytes())
    js = json.loads((FIXTURES / dialect / "chat.json").read_text())
    spans = [s for rs in js["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert sorted(s["spanId"] for s in spans) == sorted(s.span_id for s in pb)


def test_non_llm_spans_are_skipped() -> None:
    for dialect in DIALECTS:
        spans = decode_spans((FIXTURES / dialect / "tools.pb").read_bytes())
        parents = [s for s in spans if s.name == "weather-agent"]
        assert parents, dialect
        assert to_llm_call(parents[0]) is None
        assert detect_dialect(parents[0]) is None
