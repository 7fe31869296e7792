"""Route-decision spans, built and written off the hot path.

The request path appends one small tuple to a bounded deque (no Span model, no I/O); a
background task turns pending tuples into :class:`~keel.core.spans.Span` records every
``interval_s`` and hands them to the sink (the tracing writer, or the store) in a worker
thread. When the queue is full, new records are dropped and counted: telemetry never slows or
fails a response (reliability.md §1.9 rule 7).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from keel.core import semconv
from keel.core.spans import (
    LlmCall,
    Message,
    Span,
    SpanKind,
    SpanStatus,
    ToolCall,
    construct_trusted,
)
from keel.gateway.provider import Body, CallContext, Decision

log = logging.getLogger("keel.gateway")

Sink = Callable[[Sequence[Any]], Any]
# (kind, ctx, request, response or accumulated stream summary, error, start_ns, end_ns, parent ids)
Pending = tuple[str, CallContext, Body, Body | None, str | None, int, int, str | None, str | None]

ATTR_ROUTE_WEIGHTS = "keel.route.weights"
ATTR_HOPS = "keel.route.fallback_hops"
ATTR_HOP_ERRORS = "keel.route.fallback_errors"
ATTR_RETRIES = "keel.route.retries"
ATTR_CACHE_HIT = "keel.cache.hit"
ATTR_CACHE_SIMILARITY = "keel.cache.similarity"
ATTR_CACHE_ENCODER = "keel.cache.encoder"
ATTR_MIRROR = "keel.route.mirror_target"
ATTR_GUARDRAILS = "keel.guardrails.verdicts"
ATTR_COST = "keel.cost.usd"
ATTR_TTFT_MS = "keel.ttft_ms"
ATTR_CONFIG_HASH = "keel.gateway.config_hash"
ATTR_API_KEY = "keel.api_key.id"
ATTR_MIRROR_OF = "keel.mirror.of_span"


_rand = random.Random(int.from_bytes(os.urandom(16), "big"))
if hasattr(os, "register_at_fork"):  # forked workers must not repeat each other's ids
    os.register_at_fork(after_in_child=lambda: _rand.seed(int.from_bytes(os.urandom(16), "big")))


def _hex(nbytes: int) -> str:
    # OTel-style ids (as the OTel SDK does): a PRNG seeded from the OS, not a getrandom(2)
    # syscall per id; never all zeros (invalid in OTLP)
    bits = nbytes * 8
    v = _rand.getrandbits(bits) or 1
    return format(v, f"0{nbytes * 2}x")


def _opt_str(v: Any) -> str | None:
    return v if v is None or isinstance(v, str) else str(v)


def _opt_int(v: Any) -> int | None:
    if v is None or (isinstance(v, int) and not isinstance(v, bool)):
        return v
    return int(v) if isinstance(v, float) and v.is_integer() else None  # as pydantic's lax mode


def _opt_float(v: Any) -> float | None:
    if v is None or isinstance(v, float):
        return v
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else None


# Messages and the typed view are built from request/response bodies the gateway already
# parsed, with each value coerced to its field's type here, so the pydantic models are made
# without validation (construct_trusted): validating three models per request was ~30 % of the
# span thread's work. The JSON of the message attributes is made from the same plain dicts
# (what ``model_dump(exclude_none=True)`` gave).


def _tool_calls(raw: Any) -> tuple[list[ToolCall], list[dict[str, Any]]]:
    models: list[ToolCall] = []
    dumps: list[dict[str, Any]] = []
    for t in raw or ():
        if not isinstance(t, dict):
            continue
        fn = t.get("function")
        if not isinstance(fn, dict):
            fn = {}
        tid, name, args = _opt_str(t.get("id")), str(fn.get("name", "")), fn.get("arguments")
        models.append(
            construct_trusted(
                ToolCall, {"id": tid, "name": name, "arguments": args, "result": None}
            )
        )
        d: dict[str, Any] = {"name": name} if tid is None else {"id": tid, "name": name}
        if args is not None:
            d["arguments"] = args
        dumps.append(d)
    return models, dumps


def _message(
    role: str,
    content: str | None,
    raw_tools: Any,
    tool_call_id: str | None = None,
    finish_reason: str | None = None,
) -> tuple[Message, dict[str, Any]]:
    tools, tool_dumps = _tool_calls(raw_tools)
    m = construct_trusted(
        Message,
        {
            "role": role,
            "content": content,
            "tool_calls": tools,
            "tool_call_id": tool_call_id,
            "name": None,
            "finish_reason": finish_reason,
        },
    )
    d: dict[str, Any] = {"role": role}
    if content is not None:
        d["content"] = content
    d["tool_calls"] = tool_dumps
    if tool_call_id is not None:
        d["tool_call_id"] = tool_call_id
    if finish_reason is not None:
        d["finish_reason"] = finish_reason
    return m, d


def _messages(body: Body) -> tuple[list[Message], list[dict[str, Any]]]:
    out, dumps = [], []
    for m in body.get("messages") or ():
        if not isinstance(m, dict):
            continue
        c = m.get("content")
        if isinstance(c, list):
            c = " ".join(str(p.get("text", "")) for p in c if isinstance(p, dict))
        msg, d = _message(
            str(m.get("role", "user")),
            c if isinstance(c, str) else None,
            m.get("tool_calls"),
            tool_call_id=_opt_str(m.get("tool_call_id")),
        )
        out.append(msg)
        dumps.append(d)
    return out, dumps


def _outputs(resp: Body | None) -> tuple[list[Message], list[dict[str, Any]], list[str]]:
    if not resp:
        return [], [], []
    msgs, dumps, reasons = [], [], []
    for ch in resp.get("choices") or ():
        if not isinstance(ch, dict):
            continue
        m = ch.get("message")
        if not isinstance(m, dict):
            m = {}
        reason = ch.get("finish_reason")
        reasons.append(str(reason))
        c = m.get("content")
        msg, d = _message(
            "assistant",
            c if c is None or isinstance(c, str) else str(c),
            m.get("tool_calls"),
            finish_reason=_opt_str(reason),
        )
        msgs.append(msg)
        dumps.append(d)
    return msgs, dumps, reasons


_LLM_DEFAULTS = {k: f.default for k, f in LlmCall.model_fields.items() if f.default_factory is None}
_LLM_LISTS = tuple(k for k, f in LlmCall.model_fields.items() if f.default_factory is not None)


def _llm_call(values: dict[str, Any]) -> LlmCall:
    """An :class:`LlmCall` of ``values`` (each already of its field's type) and defaults."""
    d = dict(_LLM_DEFAULTS)
    for k in _LLM_LISTS:
        d[k] = []
    d.update(values)
    return construct_trusted(LlmCall, d)


def build_span(p: Pending, service: str = "keel-gateway") -> tuple[Span, LlmCall]:
    """The span and typed view for one recorded request."""
    kind, ctx, req, resp, err, start, end, trace_id, parent = p
    d: Decision = ctx.decision
    op = "embeddings" if kind == "embeddings" else "chat"
    inputs, input_dumps = _messages(req) if op == "chat" else ([], [])
    outputs, output_dumps, reasons = _outputs(resp) if op == "chat" else ([], [], [])
    attrs: dict[str, Any] = {
        semconv.GEN_AI_OPERATION: op,
        semconv.GEN_AI_REQUEST_MODEL: str(req.get("model")) if kind != "mirror" else d.model,
        semconv.ROUTE: d.route,
        semconv.ROUTE_TARGET: d.target,
        ATTR_RETRIES: d.retries,
        ATTR_CACHE_HIT: d.cache_hit,
        ATTR_CONFIG_HASH: d.config_hash,
        ATTR_GUARDRAILS: orjson.dumps(d.guardrails).decode(),
        semconv.PROJECT: ctx.project_id,
    }
    if d.provider:
        attrs[semconv.GEN_AI_PROVIDER] = d.provider
    if resp and resp.get("model"):
        attrs[semconv.GEN_AI_RESPONSE_MODEL] = resp.get("model")
    if d.weights:
        attrs[ATTR_ROUTE_WEIGHTS] = orjson.dumps(d.weights).decode()
    if d.hops:
        attrs[ATTR_HOPS] = list(d.hops)
        attrs[ATTR_HOP_ERRORS] = list(d.errors)
    if d.cache_similarity is not None:
        attrs[ATTR_CACHE_SIMILARITY] = d.cache_similarity
    if d.cache_encoder:
        attrs[ATTR_CACHE_ENCODER] = d.cache_encoder
    if d.mirror_target:
        attrs[ATTR_MIRROR] = d.mirror_target
    if d.input_tokens is not None:
        attrs[semconv.GEN_AI_INPUT_TOKENS] = d.input_tokens
    if d.output_tokens is not None:
        attrs[semconv.GEN_AI_OUTPUT_TOKENS] = d.output_tokens
    if d.cached_tokens:
        attrs[semconv.GEN_AI_CACHE_READ_TOKENS] = d.cached_tokens
    if d.cost_usd is not None:
        attrs[ATTR_COST] = d.cost_usd
    if d.ttft_ms is not None:
        attrs[ATTR_TTFT_MS] = d.ttft_ms
        attrs[semconv.GEN_AI_TTFC] = d.ttft_ms / 1000.0
    if d.prompt_name:
        attrs[semconv.PROMPT_NAME] = d.prompt_name
        if d.prompt_version is not None:
            attrs[semconv.PROMPT_VERSION] = d.prompt_version
        if d.prompt_label:
            attrs[semconv.PROMPT_LABEL] = d.prompt_label
    if ctx.key_id:
        attrs[ATTR_API_KEY] = ctx.key_id
    if reasons:
        attrs["gen_ai.response.finish_reasons"] = reasons
    if inputs:
        attrs[semconv.GEN_AI_INPUT_MESSAGES] = orjson.dumps(input_dumps).decode()
    if outputs:
        attrs[semconv.GEN_AI_OUTPUT_MESSAGES] = orjson.dumps(output_dumps).decode()
    if err:
        attrs[semconv.ERROR_TYPE] = err.split(":", 1)[0]
    name = f"{op} {attrs.get(semconv.GEN_AI_REQUEST_MODEL)}"
    if kind == "mirror":
        name = f"mirror {d.target}"
        attrs[ATTR_MIRROR_OF] = parent
    # every value is of its field's type by construction (ids from _hex or a parsed
    # traceparent, ints from the clock, str name/scope/project), so no pydantic validation
    span = construct_trusted(
        Span,
        {
            "trace_id": trace_id or _hex(16),
            "span_id": _hex(8),
            "parent_span_id": parent,
            "name": name,
            "kind": SpanKind.SERVER if kind != "mirror" else SpanKind.CLIENT,
            "start_time_ns": int(start),
            "end_time_ns": int(end),
            "status": SpanStatus.ERROR if err else SpanStatus.OK,
            "status_message": err,
            "attributes": {k: v for k, v in attrs.items() if v is not None},
            "events": [],
            "resource": {"service.name": service},
            "scope": "keel.gateway",
            "project_id": str(ctx.project_id),
        },
    )
    in_tok, out_tok = _opt_int(d.input_tokens), _opt_int(d.output_tokens)
    cost = _opt_float(d.cost_usd)
    llm = _llm_call(
        {
            "operation": op,
            "provider": _opt_str(d.provider),
            "request_model": _opt_str(attrs.get(semconv.GEN_AI_REQUEST_MODEL)),
            "response_model": _opt_str(attrs.get(semconv.GEN_AI_RESPONSE_MODEL)),
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "cached_tokens": _opt_int(d.cached_tokens),
            "total_tokens": in_tok + (out_tok or 0) if in_tok is not None else None,
            "cost_usd": cost,
            "cost_source": "genai-prices" if cost is not None else None,
            "ttft_ms": _opt_float(d.ttft_ms),
            "finish_reasons": reasons,
            "input_messages": inputs,
            "output_messages": outputs,
            "prompt_name": _opt_str(d.prompt_name),
            "prompt_version": _opt_int(d.prompt_version),
            "prompt_label": _opt_str(d.prompt_label),
            "route": _opt_str(d.route),
            "error_type": _opt_str(attrs.get(semconv.ERROR_TYPE)),
            "dialect": "keel-gateway",
        }
    )
    return span, llm


class SpanEmitter:
    """Bounded, batched, off-thread span writing."""

    def __init__(
        self,
        sink: Sink | None,
        *,
        max_pending: int = 50_000,
        interval_s: float = 0.2,
        batch: int = 2000,
    ) -> None:
        self.sink = sink
        self.pending: deque[Pending] = deque()
        self.max_pending = max_pending
        self.interval_s = interval_s
        self.batch = batch
        self.dropped = 0
        self.written = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    def record(self, p: Pending) -> None:
        """Queue one record (O(1); drops when full)."""
        if self.sink is None:
            return
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(p)

    def start(self) -> None:
        """Start the flush loop in the running event loop."""
        if self._task is None and self.sink is not None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self._flush_once()

    async def _flush_once(self) -> None:
        # one hop to the worker thread per interval, whatever arrives meanwhile waits
        items = [self.pending.popleft() for _ in range(min(self.batch * 4, len(self.pending)))]
        if not items or self.sink is None:
            return
        try:
            await asyncio.to_thread(self._write, items)
        except Exception:
            self.failed += len(items)
            log.warning(
                "gateway spans could not be written (%d dropped)", len(items), exc_info=True
            )

    async def flush(self) -> None:
        """Write everything pending now."""
        while self.pending and self.sink is not None:
            await self._flush_once()

    def _write(self, items: list[Pending]) -> None:
        recs = []
        for p in items:
            try:
                recs.append(build_span(p))
            except Exception:
                self.failed += 1
        if recs and self.sink is not None:
            self.sink(recs)
            self.written += len(recs)

    async def close(self) -> None:
        """Stop the loop and flush what is left (bounded wait)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), 10.0)
        except (TimeoutError, Exception):
            log.warning("gateway span flush at shutdown did not finish")


def now_ns() -> int:
    """Wall clock in ns."""
    return time.time_ns()
