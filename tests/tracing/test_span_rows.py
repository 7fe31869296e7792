"""The SQL span row builder (hot path of every ingest) equals a plain reference construction.

``keel.storage.sql.spans._row`` reads the LLM view's fields from its ``__dict__`` and maps
kind/status through tables; the reference below is the straightforward attribute-by-attribute
construction it replaced. Checked on every span of the fixture corpus (understood and priced
as ingest does) and on odd spans (NUL characters, plain-string kind/status, no resource).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _ingest_helpers import agent_trace

from keel.core.spans import LlmCall, Span, SpanKind, SpanStatus
from keel.otlp.decode import decode_request
from keel.server.ingest import _load_pricer, understand
from keel.storage.spans import SpanRecord
from keel.storage.sql.rows import blob as _blob
from keel.storage.sql.rows import span_row as _row
from keel.storage.sql.rows import text as _t

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "otlp").glob("*/*.pb"))


def _reference(rec: SpanRecord) -> tuple[Any, ...]:
    s, llm = rec.span, rec.llm
    res = s.resource
    svc = res.get("service.name") if res else None
    events = (
        _blob(
            [{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in s.events]
        )
        if s.events
        else b"[]"
    )
    if llm is None:
        llm_part: tuple[Any, ...] = (0,) + (None,) * 11
    else:
        llm_part = (
            1,
            _t(llm.operation),
            _t(llm.provider),
            _t(llm.request_model),
            _t(llm.response_model),
            llm.input_tokens,
            llm.output_tokens,
            llm.cost_usd,
            _t(llm.cost_source),
            _t(llm.route),
            _t(llm.prompt_name),
            llm.prompt_version,
        )
    return (
        s.project_id,
        s.trace_id,
        s.span_id,
        s.parent_span_id,
        _t(s.name),
        str(s.kind.value if isinstance(s.kind, SpanKind) else s.kind),
        str(s.status.value if isinstance(s.status, SpanStatus) else s.status),
        s.start_time_ns,
        s.end_time_ns,
        _t(svc) if isinstance(svc, str) else None,
        *llm_part,
        _t(s.scope),
        _t(s.status_message),
        _blob(s.attributes),
        events,
        _blob(res) if res else b"{}",
    )


def _records(spans: list[Span]) -> list[SpanRecord]:
    pricer = _load_pricer()
    return [SpanRecord(s, understand(s, pricer, index_only=True)) for s in spans]


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rows_of_the_fixture_corpus(path: Path) -> None:
    recs = _records(decode_request(path.read_bytes(), "application/x-protobuf").spans)
    memo: dict[int, tuple[Any, bytes]] = {}
    for rec in recs:
        want = _reference(rec)
        assert _row(rec, memo) == want
        assert _row(rec) == want


def test_odd_spans() -> None:
    spans = agent_trace("odd")
    spans[0] = spans[0].model_copy(update={"name": "a\x00b", "resource": {}})
    spans[1] = spans[1].model_copy(
        update={"kind": "client", "status": "error", "status_message": "x\x00"}
    )
    recs = _records(spans)
    recs.append(SpanRecord(spans[2], LlmCall(route="r\x00", provider="p", input_tokens=1)))
    for rec in recs:
        assert _row(rec, {}) == _reference(rec)
    assert any(r.llm is not None for r in recs)
