"""Traces over REST: ``GET /api/traces`` (filtered, sorted, cursor-paginated list) and
``GET /api/traces/{trace_id}`` (the span tree, each LLM span with its typed ``llm`` view).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from keel.core.spans import LlmCall, Span
from keel.errors import InvalidInputError
from keel.server.auth import AuthContext
from keel.server.deps import AppContext, get_context, require_auth
from keel.server.ingest import _load_pricer, understand
from keel.storage.spans import TraceFilter, TraceSummary

router = APIRouter(prefix="/api", tags=["traces"])

MAX_DEPTH = 100


class TraceListItem(BaseModel):
    """One trace in the list."""

    trace_id: str
    root_name: str
    root_span_id: str | None = None
    service: str | None = None
    start_time: datetime
    start_time_ns: int
    duration_ms: float
    span_count: int
    error_count: int
    llm_count: int
    status: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None
    models: list[str] = []
    providers: list[str] = []
    routes: list[str] = []
    prompts: list[str] = []


class TraceList(BaseModel):
    """A page of traces; pass ``next_cursor`` as ``cursor`` for the next page."""

    data: list[TraceListItem]
    next_cursor: str | None = None


class SpanNode(BaseModel):
    """A span in the tree, with its children and, for LLM/agent steps, the typed view."""

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: str
    start_time_ns: int
    end_time_ns: int
    duration_ms: float
    status: str
    status_message: str | None = None
    service: str | None = None
    scope: str | None = None
    attributes: dict[str, Any] = {}
    events: list[dict[str, Any]] = []
    resource: dict[str, Any] = {}
    llm: LlmCall | None = None
    children: list[SpanNode] = Field(default_factory=list)


class TraceDetail(BaseModel):
    """A trace: its summary and its span tree (roots first, children by start time)."""

    trace_id: str
    summary: TraceListItem
    spans: list[SpanNode]


def _item(s: TraceSummary) -> TraceListItem:
    from datetime import UTC

    return TraceListItem(
        trace_id=s.trace_id,
        root_name=s.root_name,
        root_span_id=s.root_span_id,
        service=s.service,
        start_time=datetime.fromtimestamp(s.start_time_ns / 1e9, UTC),
        start_time_ns=s.start_time_ns,
        duration_ms=s.duration_ms,
        span_count=s.span_count,
        error_count=s.error_count,
        llm_count=s.llm_count,
        status=s.status,
        input_tokens=s.input_tokens,
        output_tokens=s.output_tokens,
        cost_usd=s.cost_usd,
        models=s.models,
        providers=s.providers,
        routes=s.routes,
        prompts=s.prompts,
    )


def _ns(value: datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        from datetime import UTC

        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1_000_000) * 1000


def _check_trace_id(trace_id: str) -> str:
    tid = trace_id.lower()
    if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
        raise InvalidInputError("trace_id must be 32 hex characters")
    return tid


@router.get("/traces", response_model=TraceList, summary="List traces")
async def list_traces(
    start_from: datetime | None = Query(None, description="traces starting at or after (ISO 8601)"),
    start_to: datetime | None = Query(None, description="traces starting before (ISO 8601)"),
    service: str | None = Query(None, max_length=512),
    model: str | None = Query(None, max_length=512, description="request or response model"),
    provider: str | None = Query(None, max_length=256),
    route: str | None = Query(None, max_length=512),
    prompt_name: str | None = Query(None, max_length=512),
    prompt_version: int | None = Query(None, ge=0),
    status: Literal["ok", "error", "unset"] | None = None,
    min_cost_usd: float | None = Query(None, ge=0, le=1e12, allow_inf_nan=False),
    min_duration_ms: float | None = Query(None, ge=0, le=1e12, allow_inf_nan=False),
    q: str | None = Query(None, max_length=512, description="text in any span name"),
    sort: Literal["start_time", "duration", "cost", "tokens", "span_count"] = "start_time",
    order: Literal["asc", "desc"] = "desc",
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=2048),
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> TraceList:
    """Traces of the caller's project, newest first by default."""
    auth.require_scope("traces:read")
    if prompt_version is not None and prompt_name is None:
        raise InvalidInputError("prompt_version needs prompt_name")
    f = TraceFilter(
        start_from_ns=_ns(start_from),
        start_to_ns=_ns(start_to),
        service=service,
        model=model,
        provider=provider,
        route=route,
        prompt_name=prompt_name,
        prompt_version=prompt_version,
        status=status,
        min_cost_usd=min_cost_usd,
        min_duration_ms=min_duration_ms,
        text=q or None,
    )
    page = await anyio.to_thread.run_sync(
        lambda: ctx.store.spans.list_traces(
            auth.project_id,
            f,
            sort=sort,
            descending=order == "desc",
            limit=limit,
            cursor=cursor,
        )
    )
    return TraceList(data=[_item(s) for s in page.items], next_cursor=page.next_cursor)


def span_tree(spans: list[Span], pricer: Any = None) -> list[SpanNode]:
    """Nest spans under their parents (orphans become roots), children by start time."""
    nodes: dict[str, SpanNode] = {}
    for s in spans:
        svc = s.resource.get("service.name")
        nodes[s.span_id] = SpanNode(
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent_span_id,
            name=s.name,
            kind=str(s.kind.value if hasattr(s.kind, "value") else s.kind),
            start_time_ns=s.start_time_ns,
            end_time_ns=s.end_time_ns,
            duration_ms=s.duration_ms,
            status=str(s.status.value if hasattr(s.status, "value") else s.status),
            status_message=s.status_message,
            service=svc if isinstance(svc, str) else None,
            scope=s.scope,
            attributes=s.attributes,
            events=[
                {"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in s.events
            ],
            resource=s.resource,
            llm=understand(s, pricer),
        )
    depth: dict[str, int] = {}

    def depth_of(span_id: str) -> int:
        # iterative walk up the parent chain; cycles and missing parents end it
        chain: list[str] = []
        cur: str | None = span_id
        while cur is not None and cur in nodes and cur not in depth and cur not in chain:
            chain.append(cur)
            cur = nodes[cur].parent_span_id
        base = depth.get(cur, -1) if cur is not None and cur not in chain else -1
        for sid in reversed(chain):
            base += 1
            depth[sid] = base
        return depth[span_id]

    roots: list[SpanNode] = []
    for s in spans:
        node = nodes[s.span_id]
        parent = nodes.get(s.parent_span_id) if s.parent_span_id else None
        # Very deep chains are cut into several roots so the JSON stays shallow.
        if parent is not None and parent is not node and depth_of(s.span_id) % MAX_DEPTH:
            parent.children.append(node)
        else:
            roots.append(node)
    return roots


@router.get("/traces/{trace_id}", response_model=TraceDetail, summary="One trace as a span tree")
async def get_trace(
    trace_id: str,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> TraceDetail:
    """The spans of a trace as a tree; LLM spans carry ``llm`` (the typed ``LlmCall`` view)."""
    auth.require_scope("traces:read")
    tid = _check_trace_id(trace_id)

    def load() -> TraceDetail:
        summary = ctx.store.spans.get_trace_summary(auth.project_id, tid)
        trace = ctx.store.spans.get_trace(auth.project_id, tid)
        return TraceDetail(
            trace_id=tid, summary=_item(summary), spans=span_tree(trace.spans, _load_pricer())
        )

    return await anyio.to_thread.run_sync(load)
