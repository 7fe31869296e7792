"""Contract for the span store: append spans idempotently, read traces, list them fast.

Spans arrive as :class:`SpanRecord` (the raw :class:`Span` plus the ``LlmCall`` the ingest path
read from it, whose provider, models, tokens, cost, route and prompt become indexed columns).
``add_spans`` is idempotent on ``(project_id, trace_id, span_id)``: a re-sent span is ignored,
the first write wins.

Every backend keeps a per-trace summary (:class:`TraceSummary`) up to date at write time, so
listing traces never aggregates spans. The summary is recomputed from the stored spans of every
trace a batch touches (:func:`summarize`), which keeps it exact under re-sends and out-of-order
arrival. Token and cost totals count a span's usage only when no descendant span carries usage
too, so agent or chain spans that repeat their children's totals are not counted twice.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol

import orjson
from pydantic import BaseModel

from keel.core.spans import LlmCall, Span, Trace
from keel.errors import InvalidInputError

SortKey = Literal["start_time", "duration", "cost", "tokens", "span_count"]
SORT_KEYS: tuple[str, ...] = ("start_time", "duration", "cost", "tokens", "span_count")
MAX_NAMES_CHARS = 2000
SEP = "\n"


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A span and what ingest understood of it (None when it is not an LLM/agent step)."""

    span: Span
    llm: LlmCall | None = None


class TraceSummary(BaseModel):
    """One row of the trace list."""

    project_id: str
    trace_id: str
    root_span_id: str | None = None
    root_name: str
    service: str | None = None
    start_time_ns: int
    end_time_ns: int
    duration_ms: float
    span_count: int
    error_count: int = 0
    llm_count: int = 0
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    models: list[str] = []
    providers: list[str] = []
    routes: list[str] = []
    prompts: list[str] = []


class TracePage(BaseModel):
    """A page of traces and the cursor for the next one (None at the end)."""

    items: list[TraceSummary]
    next_cursor: str | None = None


class SpanPage(BaseModel):
    """A page of spans and the cursor for the next one (None at the end)."""

    items: list[Span]
    next_cursor: str | None = None


@dataclass
class TraceFilter:
    """Filters for :meth:`SpanStore.list_traces`; every set field must hold (AND)."""

    start_from_ns: int | None = None
    start_to_ns: int | None = None
    service: str | None = None
    model: str | None = None
    provider: str | None = None
    route: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    status: str | None = None
    min_cost_usd: float | None = None
    min_duration_ms: float | None = None
    text: str | None = None


@dataclass
class SpanFilter:
    """Filters for :meth:`SpanStore.list_spans`."""

    trace_id: str | None = None
    name: str | None = None
    operation: str | None = None
    model: str | None = None
    status: str | None = None
    llm_only: bool = False
    start_from_ns: int | None = None
    start_to_ns: int | None = None


class SpanStore(Protocol):
    """Spans and per-trace summaries."""

    def add_spans(
        self, records: Sequence[SpanRecord], *, while_waiting: Callable[[], bool] | None = None
    ) -> int:
        """Store spans (any projects, any traces) in one transaction; return how many were new.

        ``while_waiting``, if given, is called (on the calling thread) while another process
        holds the store's write lock, until it returns False: the ingest writer prepares its
        next batch there instead of sleeping. Stores without such a lock never call it.
        """
        ...

    def get_trace(self, project_id: str, trace_id: str) -> Trace:
        """All spans of a trace, by start time; :class:`NotFoundError` if none."""
        ...

    def get_trace_summary(self, project_id: str, trace_id: str) -> TraceSummary:
        """The summary row; :class:`NotFoundError` if absent."""
        ...

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
        """A page of trace summaries; pass ``next_cursor`` back to continue."""
        ...

    def find_span(self, project_id: str, trace_id: str, span_id: str) -> Span | None:
        """One span, or None."""
        ...

    def list_spans(
        self,
        project_id: str,
        filters: SpanFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SpanPage:
        """Spans newest first (by start time)."""
        ...

    def count_spans(self, project_id: str | None = None) -> int:
        """How many spans are stored (in one project, or all)."""
        ...


# ----------------------------------------------------------------------------- shared logic


class IndexRow(NamedTuple):
    """The small per-span fields a summary is computed from."""

    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status: str
    service: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    request_model: str | None
    response_model: str | None
    provider: str | None
    route: str | None
    prompt_name: str | None
    prompt_version: int | None
    is_llm: bool
    operation: str | None


def index_row(rec: SpanRecord) -> IndexRow:
    """The index fields of a record."""
    s, llm = rec.span, rec.llm
    svc = s.resource.get("service.name")
    return IndexRow(
        s.span_id,
        s.parent_span_id,
        s.name,
        s.start_time_ns,
        s.end_time_ns,
        str(s.status.value if hasattr(s.status, "value") else s.status),
        svc if isinstance(svc, str) else None,
        llm.input_tokens if llm else None,
        llm.output_tokens if llm else None,
        llm.cost_usd if llm else None,
        llm.request_model if llm else None,
        llm.response_model if llm else None,
        llm.provider if llm else None,
        llm.route if llm else None,
        llm.prompt_name if llm else None,
        llm.prompt_version if llm else None,
        llm is not None,
        llm.operation if llm else None,
    )


def _join(values: Iterable[str]) -> str:
    """``\\na\\nb\\n``: exact membership is ``instr(col, '\\n' || v || '\\n') > 0``."""
    vals = sorted(set(values))
    return SEP + SEP.join(vals) + SEP if vals else ""


def split_joined(s: str | None) -> list[str]:
    """Inverse of the joined-list encoding."""
    return [x for x in (s or "").split(SEP) if x]


def summarize(project_id: str, trace_id: str, rows: Sequence[IndexRow]) -> dict[str, Any]:
    """The summary row (column → value) of one trace from its spans' index rows."""
    if len(rows) == 1:
        return _summarize_one(project_id, trace_id, rows[0])
    return _summarize_many(project_id, trace_id, rows)


def _one(v: str | None) -> str:
    return SEP + v + SEP if v else ""


def _summarize_one(project_id: str, trace_id: str, r: IndexRow) -> dict[str, Any]:
    """:func:`_summarize_many` of a one-span trace (every gateway request), ~4× faster."""
    # usage is not counted when the span is its own ancestor, as in the general case
    counted = r.parent_span_id != r.span_id or (
        r.input_tokens is None and r.output_tokens is None and r.cost_usd is None
    )
    in_tok = (r.input_tokens or 0) if counted else 0
    out_tok = (r.output_tokens or 0) if counted else 0
    cost = r.cost_usd if counted else None
    error = r.status == "error"
    m1, m2 = r.request_model, r.response_model
    models = _one(m1 or m2)
    if m1 and m2 and m1 != m2:
        models = SEP + SEP.join(sorted((m1, m2))) + SEP
    prompt = None
    if r.prompt_name:
        prompt = f"{r.prompt_name}@{r.prompt_version if r.prompt_version is not None else ''}"
    end = max(r.end_ns, r.start_ns)
    return {
        "project_id": project_id,
        "trace_id": trace_id,
        "root_span_id": r.span_id,
        "root_name": r.name,
        "service": r.service or None,
        "start_ns": r.start_ns,
        "end_ns": end,
        "duration_ns": end - r.start_ns,
        "span_count": 1,
        "error_count": 1 if error else 0,
        "llm_count": 1 if r.is_llm else 0,
        "status": "error" if error else (r.status if r.status == "ok" else "unset"),
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "total_tokens": in_tok + out_tok,
        "cost_usd": 0.0 + cost if cost is not None else 0.0,
        "priced": 0 if cost is None else 1,
        "models": models,
        "providers": _one(r.provider),
        "routes": _one(r.route),
        "prompts": _one(prompt),
        "services": _one(r.service),
        "names": SEP + r.name + SEP if len(r.name) < MAX_NAMES_CHARS else SEP + SEP,
    }


def _summarize_many(project_id: str, trace_id: str, rows: Sequence[IndexRow]) -> dict[str, Any]:
    ids = {r.span_id for r in rows}
    roots = [r for r in rows if not r.parent_span_id or r.parent_span_id not in ids]
    root = min(roots or rows, key=lambda r: (r.start_ns, r.span_id))
    start = min(r.start_ns for r in rows)
    end = max(max(r.end_ns, r.start_ns) for r in rows)
    parent = {r.span_id: r.parent_span_id for r in rows}
    # Spans above another span with usage only repeat their children's totals.
    covered: set[str] = set()
    for r in rows:
        if r.input_tokens is not None or r.output_tokens is not None or r.cost_usd is not None:
            p = r.parent_span_id
            hops = 0
            while p and p not in covered and hops < 10_000:
                covered.add(p)
                p = parent.get(p)
                hops += 1
    in_tok = out_tok = 0
    cost = 0.0
    priced = 0
    errors = 0
    names: list[str] = []
    seen_names: set[str] = set()
    names_len = 0
    for r in rows:
        if r.status == "error":
            errors += 1
        if r.span_id not in covered:
            in_tok += r.input_tokens or 0
            out_tok += r.output_tokens or 0
            if r.cost_usd is not None:
                cost += r.cost_usd
                priced += 1
        if r.name not in seen_names and names_len + len(r.name) < MAX_NAMES_CHARS:
            seen_names.add(r.name)
            names.append(r.name)
            names_len += len(r.name) + 1
    models = {m for r in rows for m in (r.request_model, r.response_model) if m}
    prompts = {
        f"{r.prompt_name}@{r.prompt_version if r.prompt_version is not None else ''}"
        for r in rows
        if r.prompt_name
    }
    status = "error" if errors else (root.status if root.status in ("ok", "error") else "unset")
    return {
        "project_id": project_id,
        "trace_id": trace_id,
        "root_span_id": root.span_id,
        "root_name": root.name,
        "service": root.service or next((r.service for r in rows if r.service), None),
        "start_ns": start,
        "end_ns": end,
        "duration_ns": end - start,
        "span_count": len(rows),
        "error_count": errors,
        "llm_count": sum(1 for r in rows if r.is_llm),
        "status": status,
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "total_tokens": in_tok + out_tok,
        "cost_usd": cost,
        "priced": priced,
        "models": _join(models),
        "providers": _join(r.provider for r in rows if r.provider),
        "routes": _join(r.route for r in rows if r.route),
        "prompts": _join(prompts),
        "services": _join(r.service for r in rows if r.service),
        "names": SEP + SEP.join(names) + SEP,
    }


def summary_from_row(row: Any) -> TraceSummary:
    """A :class:`TraceSummary` from a summary row (mapping or row object with the columns)."""
    g = row.__getitem__ if isinstance(row, dict) else row._mapping.__getitem__
    return TraceSummary(
        project_id=g("project_id"),
        trace_id=g("trace_id"),
        root_span_id=g("root_span_id"),
        root_name=g("root_name"),
        service=g("service"),
        start_time_ns=int(g("start_ns")),
        end_time_ns=int(g("end_ns")),
        duration_ms=int(g("duration_ns")) / 1e6,
        span_count=int(g("span_count")),
        error_count=int(g("error_count")),
        llm_count=int(g("llm_count")),
        status=g("status"),
        input_tokens=int(g("input_tokens")),
        output_tokens=int(g("output_tokens")),
        cost_usd=float(g("cost_usd")) if int(g("priced")) else None,
        models=split_joined(g("models")),
        providers=split_joined(g("providers")),
        routes=split_joined(g("routes")),
        prompts=split_joined(g("prompts")),
    )


SORT_COLUMNS = {
    "start_time": "start_ns",
    "duration": "duration_ns",
    "cost": "cost_usd",
    "tokens": "total_tokens",
    "span_count": "span_count",
}


def sort_column(sort: str) -> str:
    """The summary column behind a sort key; :class:`InvalidInputError` if unknown."""
    try:
        return SORT_COLUMNS[sort]
    except KeyError:
        raise InvalidInputError(f"unknown sort {sort!r}", hint=f"use one of {', '.join(SORT_KEYS)}")


def encode_cursor(sort: str, descending: bool, value: Any, trace_id: str) -> str:
    """An opaque cursor after the row (value, trace_id)."""
    raw = orjson.dumps([sort, descending, value, trace_id])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, sort: str, descending: bool) -> tuple[Any, str]:
    """(value, trace_id) from a cursor made for the same sort; 400 otherwise."""
    try:
        pad = "=" * (-len(cursor) % 4)
        s, d, value, tid = orjson.loads(base64.urlsafe_b64decode(cursor + pad))
        if s != sort or d != descending or not isinstance(tid, str):
            raise ValueError("cursor made for another sort")
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError("bad cursor value")
        return value, tid
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidInputError(
            "invalid cursor", hint="pass next_cursor from the previous page with the same sort"
        )


def matches_joined(joined: str, value: str) -> bool:
    """Exact membership in a joined list."""
    return f"{SEP}{value}{SEP}" in joined


def prompt_needle(name: str, version: int | None) -> str:
    """The substring of the joined prompts column that a prompt filter looks for."""
    return f"{SEP}{name}@{version}{SEP}" if version is not None else f"{SEP}{name}@"
