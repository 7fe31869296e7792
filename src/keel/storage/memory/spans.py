"""In-memory spans: the reference implementation of :class:`keel.storage.spans.SpanStore`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from keel.core.spans import Span, Trace
from keel.errors import InvalidInputError, NotFoundError
from keel.storage.spans import (
    IndexRow,
    SortKey,
    SpanFilter,
    SpanPage,
    SpanRecord,
    TraceFilter,
    TracePage,
    TraceSummary,
    decode_cursor,
    encode_cursor,
    index_row,
    matches_joined,
    prompt_needle,
    sort_column,
    summarize,
    summary_from_row,
)


class MemorySpanStore:
    """Implements :class:`keel.storage.spans.SpanStore` in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (project, trace) -> span_id -> (span, index row)
        self._traces: dict[tuple[str, str], dict[str, tuple[Span, IndexRow]]] = {}
        self._summaries: dict[tuple[str, str], dict[str, Any]] = {}

    def add_spans(
        self, records: Sequence[SpanRecord], *, while_waiting: Callable[[], bool] | None = None
    ) -> int:
        new = 0
        with self._lock:
            touched: set[tuple[str, str]] = set()
            for rec in records:
                s = rec.span
                key = (s.project_id, s.trace_id)
                spans = self._traces.setdefault(key, {})
                if s.span_id in spans:
                    continue
                spans[s.span_id] = (s, index_row(rec))
                touched.add(key)
                new += 1
            for key in touched:
                rows = [r for _, r in self._traces[key].values()]
                self._summaries[key] = summarize(key[0], key[1], rows)
        return new

    def get_trace(self, project_id: str, trace_id: str) -> Trace:
        spans = self._traces.get((project_id, trace_id))
        if not spans:
            raise NotFoundError(f"trace {trace_id!r} not found")
        ordered = sorted((s for s, _ in list(spans.values())), key=_span_order)
        return Trace(trace_id=trace_id, spans=ordered)

    def get_trace_summary(self, project_id: str, trace_id: str) -> TraceSummary:
        row = self._summaries.get((project_id, trace_id))
        if row is None:
            raise NotFoundError(f"trace {trace_id!r} not found")
        return summary_from_row(row)

    def list_traces(
        self,
        project_id: str,
        filters: TraceFilter | None = None,
        *,
        sort: SortKey = "start_time",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TracePage:
        col = sort_column(sort)
        f = filters or TraceFilter()
        limit = _check_limit(limit)
        with self._lock:
            rows = [r for (p, _), r in self._summaries.items() if p == project_id]
        rows = [r for r in rows if _trace_matches(r, f)]
        rows.sort(key=lambda r: (r[col], r["trace_id"]), reverse=descending)
        if cursor:
            value, tid = decode_cursor(cursor, sort, descending)
            if descending:
                rows = [r for r in rows if (r[col], r["trace_id"]) < (value, tid)]
            else:
                rows = [r for r in rows if (r[col], r["trace_id"]) > (value, tid)]
        page = rows[: limit + 1]
        nxt = None
        if len(page) > limit:
            page = page[:limit]
            last = page[-1]
            nxt = encode_cursor(sort, descending, last[col], last["trace_id"])
        return TracePage(items=[summary_from_row(r) for r in page], next_cursor=nxt)

    def find_span(self, project_id: str, trace_id: str, span_id: str) -> Span | None:
        hit = self._traces.get((project_id, trace_id), {}).get(span_id)
        return hit[0] if hit else None

    def list_spans(
        self,
        project_id: str,
        filters: SpanFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SpanPage:
        f = filters or SpanFilter()
        limit = _check_limit(limit, 1000)
        with self._lock:
            if f.trace_id:
                pools = [self._traces.get((project_id, f.trace_id), {})]
            else:
                pools = [v for (p, _), v in self._traces.items() if p == project_id]
            items = [(s, r) for pool in pools for s, r in pool.values()]
        items = [(s, r) for s, r in items if _span_matches(s, r, f)]
        items.sort(key=lambda x: (x[0].start_time_ns, x[0].span_id), reverse=True)
        if cursor:
            value, sid = decode_cursor(cursor, "spans", True)
            items = [x for x in items if (x[0].start_time_ns, x[0].span_id) < (value, sid)]
        page = items[: limit + 1]
        nxt = None
        if len(page) > limit:
            page = page[:limit]
            last = page[-1][0]
            nxt = encode_cursor("spans", True, last.start_time_ns, last.span_id)
        return SpanPage(items=[s for s, _ in page], next_cursor=nxt)

    def count_spans(self, project_id: str | None = None) -> int:
        with self._lock:
            return sum(len(v) for (p, _), v in self._traces.items() if project_id in (None, p))


def _span_order(s: Span) -> tuple[int, str]:
    return (s.start_time_ns, s.span_id)


def _check_limit(limit: int, most: int = 500) -> int:
    if not 1 <= limit <= most:
        raise InvalidInputError(f"limit must be between 1 and {most}")
    return limit


def _trace_matches(r: dict[str, Any], f: TraceFilter) -> bool:
    if f.start_from_ns is not None and r["start_ns"] < f.start_from_ns:
        return False
    if f.start_to_ns is not None and r["start_ns"] >= f.start_to_ns:
        return False
    if f.service is not None and not matches_joined(r["services"], f.service):
        return False
    if f.model is not None and not matches_joined(r["models"], f.model):
        return False
    if f.provider is not None and not matches_joined(r["providers"], f.provider):
        return False
    if f.route is not None and not matches_joined(r["routes"], f.route):
        return False
    if (
        f.prompt_name is not None
        and prompt_needle(f.prompt_name, f.prompt_version) not in (r["prompts"])
    ):
        return False
    if f.status is not None and r["status"] != f.status:
        return False
    if f.min_cost_usd is not None and (not r["priced"] or r["cost_usd"] < f.min_cost_usd):
        return False
    if f.min_duration_ms is not None and r["duration_ns"] < f.min_duration_ms * 1e6:
        return False
    return not (f.text is not None and f.text.lower() not in r["names"].lower())


def _span_matches(s: Span, r: IndexRow, f: SpanFilter) -> bool:
    if f.name is not None and f.name.lower() not in s.name.lower():
        return False
    if f.model is not None and f.model not in (r.request_model, r.response_model):
        return False
    if f.status is not None and r.status != f.status:
        return False
    if f.llm_only and not r.is_llm:
        return False
    if f.operation is not None and r.operation != f.operation:
        return False
    if f.start_from_ns is not None and s.start_time_ns < f.start_from_ns:
        return False
    return not (f.start_to_ns is not None and s.start_time_ns >= f.start_to_ns)
