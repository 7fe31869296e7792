"""Curation from traces: turn the LLM spans of stored traces into dataset rows with back-links.

The selection uses the span store's trace filters (time range, route, prompt name/version,
model, status, …) and, per span, the same model/route/prompt filters again (a trace can hold
several LLM calls). Each row keeps a :class:`~keel.core.datasets.RowSource`: trace and span id,
prompt name and version, route, model, and the evaluator scores the span carried at that time
(``gen_ai.evaluation.result`` events on the span or its direct children).

Rows are content-addressed including their source, so curating the same span twice adds
nothing, while two traces with the same text stay two rows (they are two pieces of evidence).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from keel.core.datasets import Row, RowSource
from keel.core.spans import LlmCall, Span, Trace
from keel.datasets.service import PushResult, ensure_dataset, push_rows
from keel.errors import InvalidInputError
from keel.otlp.dialects import to_llm_call
from keel.storage.spans import TraceFilter

EVAL_EVENT = "gen_ai.evaluation.result"
EVAL_NAME = "gen_ai.evaluation.name"
EVAL_SCORE = "gen_ai.evaluation.score.value"
_SKIP_OPERATIONS = frozenset(
    {"embeddings", "execute_tool", "retrieval", "invoke_agent", "create_agent"}
)
MAX_ROWS = 100_000


@dataclass
class CurationFilter:
    """Which traces and spans become rows.

    ``scores_below`` maps an evaluator name to a threshold: only spans that carry a score for
    that evaluator strictly below it are taken (scores are read from the span's evaluation
    events).
    """

    traces: TraceFilter = field(default_factory=TraceFilter)
    scores_below: dict[str, float] = field(default_factory=dict)
    limit: int = 1000
    split: str | None = None
    tags: list[str] = field(default_factory=list)


def span_scores(span: Span, trace: Trace | None = None) -> dict[str, float]:
    """Evaluator scores recorded on ``span`` (or on its direct children) as evaluation events."""
    spans = [span]
    if trace is not None:
        spans += [s for s in trace.spans if s.parent_span_id == span.span_id]
    out: dict[str, float] = {}
    for s in spans:
        for ev in s.events:
            if ev.name != EVAL_EVENT:
                continue
            name = ev.attributes.get(EVAL_NAME)
            value = ev.attributes.get(EVAL_SCORE)
            if (
                isinstance(name, str)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                out[name] = float(value)
    return out


def _message(m: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        d["tool_calls"] = [
            {"id": t.id, "name": t.name, "arguments": t.arguments} for t in m.tool_calls
        ]
    if m.tool_call_id:
        d["tool_call_id"] = m.tool_call_id
    return d


def row_from_span(span: Span, llm: LlmCall, trace: Trace | None = None) -> Row:
    """One row from one LLM span: input messages, observed output, context, tool steps."""
    outputs = [_message(m) for m in llm.output_messages]
    if len(outputs) == 1 and not outputs[0].get("tool_calls"):
        expected: Any = outputs[0]["content"]
    else:
        expected = outputs or None
    meta: dict[str, Any] = {"span_name": span.name}
    for key in ("operation", "provider", "request_model", "response_model", "prompt_label"):
        v = getattr(llm, key)
        if v is not None:
            meta[key] = v
    if span.status.value == "error":
        meta["status"] = "error"
    return Row(
        input=[_message(m) for m in llm.input_messages],
        expected_output=expected,
        context=[d.content for d in llm.documents],
        agent_steps=[
            {"tool": t.name, "arguments": t.arguments, "result": t.result} for t in llm.tool_calls
        ],
        metadata=meta,
        source=RowSource(
            trace_id=span.trace_id,
            span_id=span.span_id,
            prompt_name=llm.prompt_name,
            prompt_version=llm.prompt_version,
            route=llm.route,
            model=llm.response_model or llm.request_model,
            scores=span_scores(span, trace),
        ),
    )


def _span_matches(llm: LlmCall, f: TraceFilter) -> bool:
    if f.model and f.model not in (llm.request_model, llm.response_model):
        return False
    if f.route and llm.route != f.route:
        return False
    if f.prompt_name and llm.prompt_name != f.prompt_name:
        return False
    if f.prompt_version is not None and llm.prompt_version != f.prompt_version:
        return False
    return not (f.provider and llm.provider != f.provider)


def iter_curated_rows(store: Any, project_id: str, f: CurationFilter) -> Iterator[Row]:
    """Rows for the matching LLM spans, newest traces first, at most ``f.limit``."""
    if not 1 <= f.limit <= MAX_ROWS:
        raise InvalidInputError(f"limit must be between 1 and {MAX_ROWS}")
    n = 0
    cursor = None
    while True:
        page = store.spans.list_traces(project_id, f.traces, limit=100, cursor=cursor)
        for summary in page.items:
            trace = store.spans.get_trace(project_id, summary.trace_id)
            for span in trace.spans:
                llm = to_llm_call(span)
                if llm is None or llm.operation in _SKIP_OPERATIONS:
                    continue
                if not (llm.input_messages or llm.output_messages):
                    continue
                if not _span_matches(llm, f.traces):
                    continue
                row = row_from_span(span, llm, trace)
                if f.scores_below:
                    scores = row.source.scores if row.source else {}
                    if not all(
                        name in scores and scores[name] < limit
                        for name, limit in f.scores_below.items()
                    ):
                        continue
                if f.split or f.tags:
                    row = row.model_copy(
                        update={"split": f.split or row.split, "tags": [*row.tags, *f.tags]}
                    )
                yield row
                n += 1
                if n >= f.limit:
                    return
        cursor = page.next_cursor
        if cursor is None:
            return


def add_from_traces(
    store: Any,
    project_id: str,
    dataset: str,
    f: CurationFilter,
    *,
    message: str | None = None,
    author: str | None = None,
) -> PushResult:
    """Append the curated rows to ``dataset`` (created if missing) as a new version."""
    ds = ensure_dataset(store, project_id, dataset)
    return push_rows(
        store,
        ds,
        iter_curated_rows(store, project_id, f),
        append=True,
        message=message or "add from traces",
        author=author,
    )
