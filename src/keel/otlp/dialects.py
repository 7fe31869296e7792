"""Dialect normalization: read any instrumentation's span attributes as a typed ``LlmCall``.

Teams send spans from whatever instrumentation they already run, and each library spells the same
facts differently. This module reads them all into one view, :class:`keel.core.spans.LlmCall`;
the span keeps its raw attributes, the view is derived.

Understood dialects (see ``docs/tracing-dialects.md`` for the attribute tables):

* OTel GenAI semantic conventions: v1.41 names (``gen_ai.provider.name``, JSON
  ``gen_ai.input.messages``/``gen_ai.output.messages``, ``gen_ai.usage.*``, ``gen_ai.tool.*``,
  agent and retrieval spans), the 2026 genai-repo renames (``cache_write``, ``gen_ai.prompt.name``,
  ``gen_ai.retrieval.*``) and the legacy names (``gen_ai.system``, ``prompt_tokens``,
  ``gen_ai.prompt``/``gen_ai.completion``, message events on the span);
* OpenInference (``openinference.span.kind``, ``llm.*``, flattened ``llm.input_messages.N.…``,
  ``retrieval.documents.N.…``, ``tool.*``, ``input.value``/``output.value``);
* OpenLLMetry/Traceloop (indexed ``gen_ai.prompt.N.*``/``gen_ai.completion.N.*``, ``llm.usage.*``,
  ``llm.request.functions.N.*``, ``traceloop.*``);
* OpenLIT (``gen_ai.usage.cost``, ``gen_ai.server.time_to_first_token``, ``gen_ai.tool.args``,
  ``role: text`` prompt strings), Logfire (GenAI names plus ``logfire.*``), FutureAGI traceAI
  (OpenInference shapes under ``gen_ai.*``: ``gen_ai.span.kind``, ``gen_ai.input.messages.N.…``);
* Langfuse (``langfuse.observation.*``) and Keel's own ``keel.*`` names
  (:mod:`keel.core.semconv`).

:func:`to_llm_call` runs at ingest for every span, so it first decides in one pass over the
attribute keys whether the span is an LLM/agent step at all, and otherwise returns ``None``
without further work. Everything else is dictionary look-ups; flattened lists are walked by
probing indexed keys, never by scanning all keys again.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from keel._accel import use_compiled
from keel.core import semconv
from keel.core.spans import (
    Document,
    LlmCall,
    Message,
    Span,
    SpanStatus,
    ToolCall,
    construct_trusted,
)

__all__ = ["MODEL_OPERATIONS", "detect_dialect", "to_llm_call"]

_log = logging.getLogger(__name__)

try:  # orjson is a base dependency and several times faster than the stdlib parser
    from orjson import loads as _orjson_loads

    def _loads(s: str) -> Any:
        try:
            return _orjson_loads(s)
        except ValueError:  # NaN/Infinity literals: only the stdlib accepts them
            return json.loads(s)

except ImportError:  # pragma: no cover
    _loads = json.loads

# A span is looked at only if one of its keys starts with one of these.
_TRIGGERS = (
    "gen_ai.",
    "llm.",
    "openinference.span.kind",
    "langfuse.observation.",
    "traceloop.span.kind",
    "fi.span.kind",
    "keel.prompt.",
    "keel.route",
    "keel.span.kind",
    "retrieval.documents.",
    "tool.name",
    "agent.trajectory.step",
    "mcp.method.name",
    "embedding.model_name",
)

_OI_KIND_OP = {
    "LLM": "chat",
    "EMBEDDING": "embeddings",
    "TOOL": "execute_tool",
    "AGENT": "invoke_agent",
    "RETRIEVER": "retrieval",
    "RERANKER": "rerank",
    "GUARDRAIL": "apply_guardrail",
    "EVALUATOR": "evaluate",
    "CHAIN": "invoke_workflow",
}
_LANGFUSE_OP = {
    "generation": "chat",
    "embedding": "embeddings",
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "retriever": "retrieval",
    "chain": "invoke_workflow",
    "guardrail": "apply_guardrail",
    "evaluator": "evaluate",
}
_TRACELOOP_KIND_OP = {
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "workflow": "invoke_workflow",
}
_TRACELOOP_REQUEST_OP = {
    "chat": "chat",
    "completion": "text_completion",
    "embedding": "embeddings",
    "rerank": "rerank",
}
_KEEL_KIND_OP = {
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "retriever": "retrieval",
    "llm": "chat",
    "chain": "invoke_workflow",
}
_PROVIDER_ALIASES = {
    "az.ai.inference": "azure.ai.inference",
    "az.ai.openai": "azure.ai.openai",
    "azure": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai",
    "vertexai": "gcp.vertex_ai",
    "gemini": "gcp.gemini",
    "google": "gcp.gen_ai",
    "xai": "x_ai",
    "mistralai": "mistral_ai",
    "mistral": "mistral_ai",
    "bedrock": "aws.bedrock",
    "aws": "aws.bedrock",
    "amazon": "aws.bedrock",
    "watsonx": "ibm.watsonx.ai",
}
# Operations that are model calls (the rest are agent/tool/retrieval steps).
MODEL_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
_LLM_OPS_WITHOUT_KIND = MODEL_OPERATIONS
_LLM_SCOPES = (
    "openlit",
    "openinference.instrumentation",
    "opentelemetry.instrumentation.openai",
    "opentelemetry.instrumentation.anthropic",
    "opentelemetry.util.genai",
    "traceai",
    "logfire.openai",
    "logfire.anthropic",
    "langfuse",
)
_SPAN_NAME_OP = re.compile(r"^(chat|text_completion|generate_content|embeddings) (\S+)$")
_STATUS_CODE = re.compile(r"(?:Error code|status(?: code)?):? (\d{3})\b", re.I)
_CLASS_REPR = re.compile(r"^<class '([^']+)'>$")
_ROLE_LINE = re.compile(r"^(system|user|assistant|tool|developer|function): ?", re.M)


# ---------------------------------------------------------------------------------------------
# small readers
# ---------------------------------------------------------------------------------------------
def _int(v: Any) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        try:
            return int(float(v))
        except (TypeError, ValueError, OverflowError):
            return None


def _float(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _str(v: Any) -> str | None:
    if v is None:
        return None
    s = v if isinstance(v, str) else str(v)
    return s or None


def _json(v: Any) -> Any:
    """Parse a JSON string attribute; non-strings pass through; bad JSON gives None."""
    if isinstance(v, str):
        s = v.strip()
        if not s or s[0] not in '[{"0123456789-tfn':
            return None
        try:
            return _loads(s)
        except ValueError:
            return None
    return v


def _maybe_json(v: Any) -> Any:
    """Arguments and results: parsed when they are JSON objects/arrays, else kept as they are."""
    if isinstance(v, str):
        s = v.strip()
        if s[:1] in ("{", "["):
            try:
                return _loads(s)
            except ValueError:
                return v
    return v


def _first(get: Callable[[str], Any], *keys: str) -> Any:
    for k in keys:
        v = get(k)
        if v is not None and v != "":
            return v
    return None


def _strings(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        parsed = _json(v) if v.startswith("[") else None
        return [str(x) for x in parsed] if isinstance(parsed, list) else [v]
    if isinstance(v, Sequence):
        return [str(x) for x in v]
    return [str(v)]


def _provider(v: Any) -> str | None:
    s = _str(v)
    if s is None:
        return None
    s = s.lower()
    return _PROVIDER_ALIASES.get(s, s)


def _content_text(content: Any) -> str | None:
    """Text of a message content in any shape: string, OpenAI parts, GenAI parts."""
    if content is None:
        return None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for p in content:
            if isinstance(p, str):
                texts.append(p)
            elif isinstance(p, Mapping):
                t = p.get("text", p.get("content"))
                if isinstance(t, str) and p.get("type", "text") in (
                    "text",
                    "input_text",
                    "output_text",
                ):
                    texts.append(t)
        return "\n".join(texts) if texts else None
    if isinstance(content, Mapping):
        return _content_text(content.get("text", content.get("content")))
    return str(content)


# ---------------------------------------------------------------------------------------------
# message shapes
# ---------------------------------------------------------------------------------------------
def _tool_call_from(obj: Mapping[str, Any]) -> ToolCall | None:
    """A tool call from OpenAI (``function.name``), GenAI part or Anthropic ``tool_use`` shape."""
    fn = obj.get("function")
    if isinstance(fn, Mapping):
        name, args = fn.get("name"), fn.get("arguments")
    else:
        name = obj.get("name")
        args = obj.get("arguments", obj.get("input", obj.get("args")))
    if not name:
        return None
    return ToolCall(id=_str(obj.get("id")), name=str(name), arguments=_maybe_json(args))


def _genai_messages(raw: Any) -> list[Message]:
    """``gen_ai.input.messages`` / ``gen_ai.output.messages`` (parts schema) → messages.

    Also accepts plain ``[{"role", "content"}]`` (OpenAI) lists, which several libraries emit.
    """
    data = _json(raw) if isinstance(raw, str) else raw
    if isinstance(data, Mapping):
        data = data.get("messages", [data])
    if not isinstance(data, list):
        return []
    out: list[Message] = []
    for m in data:
        if not isinstance(m, Mapping):
            continue
        role = str(m.get("role") or "user")
        texts: list[str] = []
        calls: list[ToolCall] = []
        tool_call_id = _str(m.get("tool_call_id"))
        parts = m.get("parts")
        if isinstance(parts, list):
            for p in parts:
                if not isinstance(p, Mapping):
                    continue
                t = p.get("type")
                if t in ("text", "reasoning") or (t is None and "content" in p):
                    if t != "reasoning" and isinstance(p.get("content"), str):
                        texts.append(p["content"])
                elif t == "tool_call":
                    tc = _tool_call_from(p)
                    if tc:
                        calls.append(tc)
                elif t == "tool_call_response":
                    tool_call_id = _str(p.get("id")) or tool_call_id
                    r = p.get("response", p.get("result"))
                    texts.append(r if isinstance(r, str) else json.dumps(r))
        else:
            text = _content_text(m.get("content"))
            if text is not None:
                texts.append(text)
            for tc_raw in m.get("tool_calls") or []:
                if isinstance(tc_raw, Mapping):
                    tc = _tool_call_from(tc_raw)
                    if tc:
                        calls.append(tc)
        out.append(
            Message(
                role=role,
                content="\n".join(texts) if texts else None,
                tool_calls=calls,
                tool_call_id=tool_call_id,
                name=_str(m.get("name")),
                finish_reason=_str(m.get("finish_reason")),
            )
        )
    return out


def _system_instructions(raw: Any) -> Message | None:
    data = _json(raw) if isinstance(raw, str) and raw[:1] in "[{" else raw
    text = _content_text(data) if not isinstance(data, str) else data
    return Message(role="system", content=text) if text else None


def _indexed_messages(
    get: Callable[[str], Any], prefix: str, mid: str, tc_mid: str, fn: str
) -> list[Message]:
    """Flattened messages: ``{prefix}{i}{mid}role`` … (OpenInference, traceAI, Traceloop).

    OpenInference: prefix ``llm.input_messages.``, mid ``.message.``, tool calls under
    ``tool_calls.{k}.tool_call.function.name``; Traceloop: prefix ``gen_ai.prompt.``, mid ``.``,
    tool calls under ``tool_calls.{k}.name``.
    """
    out: list[Message] = []
    i = 0
    while True:
        base = f"{prefix}{i}{mid}"
        role = get(base + "role")
        content = get(base + "content")
        # Traceloop may skip the role; OpenInference may use contents.N only.
        if (
            role is None
            and content is None
            and get(base + "contents.0.message_content.text") is None
            and get(base + "tool_calls.0" + tc_mid + fn + "name") is None
        ):
            break
        text = _content_text(content) if content is not None else None
        if text is None:
            parts = []
            j = 0
            while (t := get(f"{base}contents.{j}.message_content.text")) is not None or get(
                f"{base}contents.{j}.message_content.type"
            ) is not None:
                if t is not None:
                    parts.append(str(t))
                j += 1
            text = "\n".join(parts) if parts else None
        calls = []
        k = 0
        while (name := get(f"{base}tool_calls.{k}{tc_mid}{fn}name")) is not None:
            calls.append(
                ToolCall(
                    id=_str(get(f"{base}tool_calls.{k}{tc_mid}id")),
                    name=str(name),
                    arguments=_maybe_json(get(f"{base}tool_calls.{k}{tc_mid}{fn}arguments")),
                )
            )
            k += 1
        out.append(
            Message(
                role=str(role or "user"),
                content=text,
                tool_calls=calls,
                tool_call_id=_str(get(base + "tool_call_id")),
                name=_str(get(base + "name")),
                finish_reason=_str(get(base + "finish_reason")),
            )
        )
        i += 1
    return out


def _role_lines(text: str, default_role: str) -> list[Message]:
    """``"user: hi\\nassistant: hello"`` (OpenLIT) → messages; plain text → one message."""
    marks = list(_ROLE_LINE.finditer(text))
    if not marks or marks[0].start() != 0:
        return [Message(role=default_role, content=text)]
    out = []
    for n, m in enumerate(marks):
        end = marks[n + 1].start() if n + 1 < len(marks) else len(text)
        out.append(Message(role=m.group(1), content=text[m.end() : end].rstrip("\n")))
    return out


def _legacy_text_messages(raw: Any, default_role: str) -> list[Message]:
    """Legacy ``gen_ai.prompt``/``gen_ai.completion``: JSON messages or plain text."""
    if raw is None:
        return []
    if isinstance(raw, str):
        s = raw.strip()
        if s[:1] in "[{":
            msgs = _genai_messages(s)
            if msgs:
                return msgs
        return _role_lines(raw, default_role) if s else []
    return _genai_messages(raw)


def _event_messages(events: Sequence[Any]) -> tuple[list[Message], list[Message]]:
    """Deprecated GenAI message events on the span and the v1.41 details event."""
    ins: list[Message] = []
    outs: list[Message] = []
    for ev in events:
        name = ev.name
        a = ev.attributes
        if name == "gen_ai.client.inference.operation.details":
            ins.extend(_genai_messages(a.get("gen_ai.input.messages")))
            outs.extend(_genai_messages(a.get("gen_ai.output.messages")))
        elif name in (
            "gen_ai.system.message",
            "gen_ai.user.message",
            "gen_ai.assistant.message",
            "gen_ai.tool.message",
        ):
            role = name.split(".")[1]
            body = _json(a.get("gen_ai.event.content")) or {}
            if not isinstance(body, Mapping):
                body = {}
            content = a.get("content", body.get("content"))
            calls = [
                tc
                for tc_raw in (_json(a.get("tool_calls")) or body.get("tool_calls") or [])
                if isinstance(tc_raw, Mapping) and (tc := _tool_call_from(tc_raw))
            ]
            ins.append(
                Message(
                    role=str(a.get("role") or body.get("role") or role),
                    content=_content_text(content),
                    tool_calls=calls,
                    tool_call_id=_str(a.get("id", body.get("id"))) if role == "tool" else None,
                )
            )
        elif name == "gen_ai.choice":
            body = _json(a.get("gen_ai.event.content")) or {}
            if not isinstance(body, Mapping):
                body = {}
            msg = _json(a.get("message")) or body.get("message") or {}
            if not isinstance(msg, Mapping):
                msg = {"content": msg}
            calls = [
                tc
                for tc_raw in (msg.get("tool_calls") or [])
                if isinstance(tc_raw, Mapping) and (tc := _tool_call_from(tc_raw))
            ]
            outs.append(
                Message(
                    role=str(msg.get("role") or "assistant"),
                    content=_content_text(msg.get("content")),
                    tool_calls=calls,
                    finish_reason=_str(a.get("finish_reason", body.get("finish_reason"))),
                )
            )
        elif name == "gen_ai.content.prompt" and not ins:
            ins.extend(_legacy_text_messages(a.get("gen_ai.prompt"), "user"))
        elif name == "gen_ai.content.completion" and not outs:
            outs.extend(_legacy_text_messages(a.get("gen_ai.completion"), "assistant"))
    return ins, outs


# ---------------------------------------------------------------------------------------------
# documents and tools
# ---------------------------------------------------------------------------------------------
def _oi_documents(get: Callable[[str], Any], prefix: str) -> list[Document]:
    docs = []
    i = 0
    while True:
        base = f"{prefix}{i}.document."
        content = get(base + "content")
        did = get(base + "id")
        if content is None and did is None:
            break
        meta = _json(get(base + "metadata"))
        docs.append(
            Document(
                id=_str(did),
                content=str(content or ""),
                score=_float(get(base + "score")),
                metadata=dict(meta) if isinstance(meta, Mapping) else {},
            )
        )
        i += 1
    return docs


def _json_documents(raw: Any) -> list[Document]:
    data = _json(raw)
    if not isinstance(data, list):
        return []
    docs = []
    for d in data:
        if isinstance(d, Mapping):
            meta = d.get("metadata")
            docs.append(
                Document(
                    id=_str(d.get("id")),
                    content=str(d.get("content", d.get("text", "")) or ""),
                    score=_float(d.get("score")),
                    metadata=dict(meta) if isinstance(meta, Mapping) else {},
                )
            )
        elif isinstance(d, str):
            docs.append(Document(content=d))
    return docs


def _tool_definitions(get: Callable[[str], Any]) -> list[dict[str, Any]]:
    raw = _json(get("gen_ai.tool.definitions"))
    if isinstance(raw, list):
        return [d for d in raw if isinstance(d, dict)]
    out: list[dict[str, Any]] = []
    for prefix in ("llm.tools.", "gen_ai.tool.definitions."):
        i = 0
        while (schema := get(f"{prefix}{i}.tool.json_schema")) is not None:
            d = _json(schema)
            if isinstance(d, dict):
                out.append(d)
            i += 1
        if out:
            return out
    i = 0
    while (name := get(f"llm.request.functions.{i}.name")) is not None:
        d = {"name": name}
        if (desc := get(f"llm.request.functions.{i}.description")) is not None:
            d["description"] = desc
        if (params := _json(get(f"llm.request.functions.{i}.parameters"))) is not None:
            d["parameters"] = params
        out.append(d)
        i += 1
    return out


# ---------------------------------------------------------------------------------------------
# dialect detection
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _scope_dialect(scope: str) -> str | None:
    """The dialect an instrumentation scope name implies, if any (a pure function of it)."""
    s = scope.lower()
    if s.startswith("openinference"):
        return "openinference"
    if s.startswith("traceai") or s.startswith("fi_instrumentation"):
        return "traceai"
    if s.startswith("langfuse"):
        return "langfuse"
    if s.startswith("logfire"):
        return "logfire"
    if s.startswith("openlit"):
        return "openlit"
    if (
        s.startswith("opentelemetry.instrumentation.")
        and not s.startswith("opentelemetry.instrumentation.openai_v2")
        and ".v1" in s
    ):
        return "openllmetry"
    if s.startswith("keel"):
        return "keel"
    return None


def _dialect(attrs: Mapping[str, Any], scope: str | None, resource: Mapping[str, Any]) -> str:
    if scope:
        d = _scope_dialect(scope)
        if d is not None:
            return d
    if "langfuse.observation.type" in attrs:
        return "langfuse"
    if "openinference.span.kind" in attrs:
        return "openinference"
    if "gen_ai.span.kind" in attrs or "fi.span.kind" in attrs:
        return "traceai"
    if (
        attrs.get("telemetry.sdk.name") == "openlit"
        or resource.get("telemetry.sdk.name") == "openlit"
    ):
        return "openlit"
    if "logfire.msg_template" in attrs or "logfire.span_type" in attrs:
        return "logfire"
    if (
        "llm.request.type" in attrs
        or "traceloop.span.kind" in attrs
        or "gen_ai.prompt.0.role" in attrs
        or "gen_ai.prompt.0.content" in attrs
        or "gen_ai.completion.0.role" in attrs
    ):
        return "openllmetry"
    if "keel.span.kind" in attrs:
        return "keel"
    if "llm.model_name" in attrs or "llm.input_messages.0.message.role" in attrs:
        return "openinference"
    return "otel_genai"


def detect_dialect(span: Span | Mapping[str, Any]) -> str | None:
    """Name of the instrumentation dialect of a span, or None for a non-LLM span."""
    attrs = span.attributes if isinstance(span, Span) else span
    if not _is_candidate(attrs):
        return None
    if isinstance(span, Span):
        return _dialect(attrs, span.scope, span.resource)
    return _dialect(attrs, None, {})


def _llm_scope_span(span: Span) -> bool:
    """A span from an LLM instrumentation that carries no attributes (OpenLIT on errors)."""
    return bool(
        span.scope
        and span.scope.startswith(_LLM_SCOPES)
        and _SPAN_NAME_OP.match(span.name) is not None
    )


def _is_candidate(attrs: Mapping[str, Any]) -> bool:
    for k in attrs:  # noqa: SIM110 - a plain loop is faster than any() on the hot path
        if k.startswith(_TRIGGERS):
            return True
    return False


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------
def to_llm_call(span: Span | Mapping[str, Any], *, index_only: bool = False) -> LlmCall | None:
    """The ``LlmCall`` view of a span, or None when the span is not an LLM/agent step.

    ``span`` is a :class:`Span` (events, status, scope and timing are then used too) or a plain
    mapping of its attributes. ``index_only`` skips messages, tool calls, documents and tool
    definitions (the ingest path stores only the scalar fields; it is several times faster).
    """
    sp = span if isinstance(span, Span) else None
    attrs: Mapping[str, Any] = span.attributes if isinstance(span, Span) else span
    if not _is_candidate(attrs) and not (sp is not None and _llm_scope_span(sp)):
        return None
    try:
        if index_only and sp is not None:
            fast = _index_fast(attrs, sp)
            if fast is not _FALLBACK:
                return fast  # type: ignore[return-value]
        return _build(attrs, sp, index_only)
    except Exception:  # a hostile or odd attribute must never break ingest
        _log.warning("could not read the LLM view of a span", exc_info=True)
        return None


def _operation(get: Callable[[str], Any], dialect: str, span: Span | None) -> str | None:
    op = _str(get("gen_ai.operation.name"))
    if op:
        return op
    kind = _str(get("openinference.span.kind") or get("gen_ai.span.kind") or get("fi.span.kind"))
    if kind:
        mapped = _OI_KIND_OP.get(kind.upper())
        if mapped == "chat" and get("llm.prompts.0.prompt.text") is not None:
            return "text_completion"
        if mapped:
            return mapped
    lf = _str(get("langfuse.observation.type"))
    if lf:
        return _LANGFUSE_OP.get(lf.lower())
    rt = _str(get("llm.request.type"))
    if rt:
        return _TRACELOOP_REQUEST_OP.get(rt.lower(), rt.lower())
    tk = _str(get("traceloop.span.kind"))
    if tk:
        return _TRACELOOP_KIND_OP.get(tk.lower())
    kk = _str(get(semconv.SPAN_KIND))
    if kk:
        return _KEEL_KIND_OP.get(kk.lower())
    mcp = _str(get("mcp.method.name"))
    if mcp:
        return "execute_tool" if mcp == "tools/call" else None
    if get("tool.name") is not None:
        return "execute_tool"
    if get("retrieval.documents.0.document.content") is not None:
        return "retrieval"
    if get("embedding.model_name") is not None:
        return "embeddings"
    return None


def _error_type(get: Callable[[str], Any], span: Span | None) -> str | None:
    et = _str(get("error.type"))
    if et:
        m = _CLASS_REPR.match(et)
        return m.group(1) if m else et
    if span is None:
        if _str(get("langfuse.observation.level")) == "ERROR":
            return "_OTHER"
        return None
    for ev in span.events:
        if ev.name == "exception":
            t = _str(ev.attributes.get("exception.type"))
            if t:
                return t
    if span.status == SpanStatus.ERROR or _str(get("langfuse.observation.level")) == "ERROR":
        msg = span.status_message or _str(get("langfuse.observation.status_message")) or ""
        m = _STATUS_CODE.search(msg)
        return m.group(1) if m else "_OTHER"
    return None


def _ttft_ms(get: Callable[[str], Any], span: Span | None) -> float | None:
    s = _float(
        _first(
            get,
            "gen_ai.response.time_to_first_chunk",
            "gen_ai.server.time_to_first_token",
            "gen_ai.response.time_to_first_token",
        )
    )
    if s is not None:
        return s * 1000.0
    ms = _float(get("llm.time_to_first_token_ms"))
    if ms is not None:
        return ms
    if span is None:
        return None
    cst = get("langfuse.observation.completion_start_time")
    if cst is not None:
        v = _json(cst) if isinstance(cst, str) and cst.startswith('"') else cst
        try:
            ts = datetime.fromisoformat(str(v).replace("Z", "+00:00")).timestamp()
        except ValueError:
            ts = None
        if ts is not None:
            return max(0.0, ts * 1000.0 - span.start_time_ns / 1e6)
    for ev in span.events:
        if ev.name in (
            "First Token Stream Event",
            "gen_ai.content.completion.chunk",
            "llm.first_token",
        ):
            return max(0.0, (ev.time_ns - span.start_time_ns) / 1e6)
    return None


def _usage_details(get: Callable[[str], Any]) -> dict[str, Any]:
    u = _json(get("langfuse.observation.usage_details"))
    return u if isinstance(u, dict) else {}


def _nested(d: Mapping[str, Any], *path: str) -> Any:
    cur: Any = d
    for p in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(p)
    return cur


# ---------------------------------------------------------------------------------------------
# the ingest fast path: the index-only view of a plain GenAI-convention span in one pass
# ---------------------------------------------------------------------------------------------
# ``_build(..., index_only=True)`` reads ~90 keys through ``_first``. For the common shape of a
# span (GenAI semantic-convention names only) ``_index_fast`` reads the same view from one pass
# over the span's own keys, from the table below. Every other key ``_build`` may read on the
# index-only path (other dialects' spellings, markers, parameters, reported costs …) is listed
# in ``_FAST_FALLBACK``: a span carrying any of them, or any case the fast path does not cover,
# goes to ``_build``. So the result is ``_build``'s by construction (property-tested in
# tests/tracing/test_index_fast.py; a test also checks these tables cover every key _build reads).
_FAST_KEYS: dict[str, int] = {
    "gen_ai.operation.name": 0,
    "gen_ai.request.model": 1,
    "gen_ai.response.model": 2,
    "gen_ai.usage.input_tokens": 3,
    "gen_ai.usage.output_tokens": 4,
    "gen_ai.usage.cache_read.input_tokens": 5,
    "gen_ai.usage.cache_write.input_tokens": 6,
    "gen_ai.usage.reasoning.output_tokens": 7,
    "gen_ai.usage.total_tokens": 8,
    "gen_ai.provider.name": 9,
    "gen_ai.system": 10,
    "gen_ai.tool.name": 11,
    semconv.PROMPT_NAME: 12,
    "gen_ai.prompt.name": 13,
    semconv.PROMPT_VERSION: 14,
    "gen_ai.prompt.version": 15,
    semconv.PROMPT_LABEL: 16,
    semconv.ROUTE: 17,
    semconv.AGENT_STEP: 18,
    "gen_ai.agent.step": 19,
    "error.type": 20,
    "gen_ai.response.time_to_first_chunk": 21,
}
_FAST_FALLBACK = frozenset(
    {
        # dialect markers
        "langfuse.observation.type",
        "openinference.span.kind",
        "gen_ai.span.kind",
        "fi.span.kind",
        "telemetry.sdk.name",
        "logfire.msg_template",
        "logfire.span_type",
        "llm.request.type",
        "traceloop.span.kind",
        "gen_ai.prompt.0.role",
        "gen_ai.prompt.0.content",
        "gen_ai.completion.0.role",
        semconv.SPAN_KIND,
        "llm.model_name",
        "llm.input_messages.0.message.role",
        # operation
        "llm.prompts.0.prompt.text",
        "mcp.method.name",
        "tool.name",
        "retrieval.documents.0.document.content",
        "embedding.model_name",
        # parameters and Langfuse usage
        "llm.invocation_parameters",
        "gen_ai.request.parameters",
        "langfuse.observation.model.parameters",
        "langfuse.observation.usage_details",
        # models
        "llm.request.model_name",
        "llm.response.model_name",
        "langfuse.observation.model.name",
        # tokens (other spellings)
        "gen_ai.usage.prompt_tokens",
        "llm.token_count.prompt",
        "llm.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
        "llm.usage.completion_tokens",
        "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
        "gen_ai.usage.cached_tokens",
        "gen_ai.usage.cache_creation.input_tokens",
        "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
        "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
        "llm.usage.total_tokens",
        "llm.token_count.total",
        # reported costs
        "gen_ai.usage.cost",
        "llm.cost.total",
        "gen_ai.cost.total",
        "operation.cost",
        "langfuse.observation.cost_details",
        # prompts
        "langfuse.observation.prompt.name",
        "traceloop.prompt.key",
        "prompt.id",
        "langfuse.observation.prompt.version",
        "traceloop.prompt.version",
        "llm.prompt_template.version",
        # providers
        "llm.provider",
        "llm.system",
        # time to first token
        "gen_ai.server.time_to_first_token",
        "gen_ai.response.time_to_first_token",
        "llm.time_to_first_token_ms",
        "langfuse.observation.completion_start_time",
        # errors
        "langfuse.observation.level",
        "langfuse.observation.status_message",
    }
)
_FAST_KEY_ORDER = tuple(sorted(_FAST_KEYS, key=_FAST_KEYS.__getitem__))
_FALLBACK = object()


def _nz(a: Any, b: Any) -> Any:
    """``_first`` over two values already read: the first that is neither None nor ""."""
    return a if a is not None and a != "" else (b if b is not None and b != "" else None)


_TTFT_EVENTS = ("First Token Stream Event", "gen_ai.content.completion.chunk", "llm.first_token")


def _index_fast(attrs: Mapping[str, Any], span: Span) -> LlmCall | object | None:
    """``_build(attrs, span, index_only=True)`` for plain GenAI-convention spans, or
    ``_FALLBACK`` when the span needs the general reader."""
    if not _FAST_FALLBACK.isdisjoint(attrs):  # both loops run in C
        return _FALLBACK
    # vals[i]: the value of the key in slot i (None when absent). _str/_int/_float read "" as
    # None, as _first skips it; where _first picks between two keys, _nz() does the same.
    vals = list(map(attrs.get, _FAST_KEY_ORDER))
    scope = span.scope
    dialect = _scope_dialect(scope) if scope else None
    if dialect is None:
        dialect = (
            "openlit" if span.resource.get("telemetry.sdk.name") == "openlit" else "otel_genai"
        )
    elif dialect == "traceai" or dialect == "langfuse":
        return _FALLBACK

    op = _str(vals[0])
    request_model = _str(vals[1])
    response_model = _str(vals[2])
    if op is None and (m := _SPAN_NAME_OP.match(span.name)):
        op = m.group(1)
        request_model = request_model or m.group(2)
    input_tokens = _int(vals[3])
    output_tokens = _int(vals[4])
    if op is None and input_tokens is None and (request_model or response_model) is not None:
        return _FALLBACK  # _build would parse messages to decide the operation
    total = _int(vals[8])
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens

    raw_version = _nz(vals[14], vals[15])
    prompt_version = _int(raw_version)
    prompt_label = _str(vals[16])
    if prompt_version is None and raw_version is not None:
        s = str(raw_version)
        if s[:1] in "vV" and s[1:].isdigit():
            prompt_version = int(s[1:])
        elif not prompt_label:
            prompt_label = s

    # time to first token: the attribute, else a first-token event
    ttft = _float(vals[21])
    if ttft is not None:
        ttft *= 1000.0
    else:
        for ev in span.events:
            if ev.name in _TTFT_EVENTS:
                ttft = max(0.0, (ev.time_ns - span.start_time_ns) / 1e6)
                break

    # error type: the attribute, else an exception event, else an error status
    error_type = _str(vals[20])
    if error_type:
        em = _CLASS_REPR.match(error_type)
        if em:
            error_type = em.group(1)
    else:
        error_type = None
        for ev in span.events:
            if ev.name == "exception":
                t = _str(ev.attributes.get("exception.type"))
                if t:
                    error_type = t
                    break
        if error_type is None and span.status == SpanStatus.ERROR:
            sm = _STATUS_CODE.search(span.status_message or "")
            error_type = sm.group(1) if sm else "_OTHER"

    return construct_trusted(
        LlmCall,
        dict(
            operation=op
            or ("chat" if (request_model or response_model) and input_tokens is not None else None),
            provider=_provider(_nz(vals[9], vals[10])),
            request_model=request_model,
            response_model=response_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=_int(vals[5]),
            cache_write_tokens=_int(vals[6]),
            reasoning_tokens=_int(vals[7]),
            total_tokens=total,
            cost_usd=None,
            cost_source=None,
            ttft_ms=ttft,
            temperature=None,
            max_tokens=None,
            finish_reasons=[],
            input_messages=[],
            output_messages=[],
            tool_calls=[],
            available_tools=[],
            documents=[],
            prompt_name=_str(_nz(vals[12], vals[13])),
            prompt_version=prompt_version,
            prompt_label=prompt_label,
            route=_str(vals[17]),
            agent_name=None,
            agent_step=_int(_nz(vals[18], vals[19])),
            tool_name=_str(vals[11]),
            error_type=error_type,
            response_id=None,
            conversation_id=None,
            dialect=dialect,
        ),
    )


def _build(attrs: Mapping[str, Any], span: Span | None, index_only: bool = False) -> LlmCall | None:
    get = attrs.get
    dialect = _dialect(attrs, span.scope if span else None, span.resource if span else {})
    op = _operation(get, dialect, span)

    # request parameters carried as JSON blobs by some dialects
    params = _json(
        _first(
            get,
            "llm.invocation_parameters",
            "gen_ai.request.parameters",
            "langfuse.observation.model.parameters",
        )
    )
    if not isinstance(params, Mapping):
        params = {}
    lf_usage = _usage_details(get) if dialect == "langfuse" else {}

    # models
    request_model = _str(
        _first(get, "gen_ai.request.model", "llm.request.model_name", "embedding.model_name")
    )
    response_model = _str(_first(get, "gen_ai.response.model", "llm.response.model_name"))
    oi_model = _str(get("llm.model_name"))
    lf_model = _str(get("langfuse.observation.model.name"))
    if dialect == "traceai" and params.get("model"):
        # traceAI writes the *response* model into gen_ai.request.model
        response_model = response_model or request_model
        request_model = _str(params.get("model"))
    if oi_model:
        response_model = response_model or oi_model
        request_model = request_model or _str(params.get("model")) or oi_model
    if lf_model:
        response_model = response_model or lf_model
        request_model = request_model or lf_model
    request_model = request_model or _str(params.get("model"))
    if op is None and span is not None and (m := _SPAN_NAME_OP.match(span.name)):
        # "{operation} {model}" span names (GenAI convention) on attribute-less spans
        op = m.group(1)
        request_model = request_model or m.group(2)

    # tokens
    input_tokens = _int(
        _first(
            get,
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.prompt_tokens",
            "llm.token_count.prompt",
            "llm.usage.prompt_tokens",
        )
    )
    output_tokens = _int(
        _first(
            get,
            "gen_ai.usage.output_tokens",
            "gen_ai.usage.completion_tokens",
            "llm.token_count.completion",
            "llm.usage.completion_tokens",
        )
    )
    cached = _int(
        _first(
            get,
            "gen_ai.usage.cache_read.input_tokens",
            "gen_ai.usage.cache_read_input_tokens",
            "llm.token_count.prompt_details.cache_read",
            "gen_ai.usage.cached_tokens",
        )
    )
    cache_write = _int(
        _first(
            get,
            "gen_ai.usage.cache_write.input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
            "gen_ai.usage.cache_creation_input_tokens",
            "llm.token_count.prompt_details.cache_write",
        )
    )
    reasoning = _int(
        _first(
            get,
            "gen_ai.usage.reasoning.output_tokens",
            "gen_ai.usage.reasoning_tokens",
            "llm.token_count.completion_details.reasoning",
        )
    )
    total = _int(
        _first(get, "gen_ai.usage.total_tokens", "llm.usage.total_tokens", "llm.token_count.total")
    )
    if lf_usage:
        input_tokens = (
            input_tokens
            if input_tokens is not None
            else _int(
                lf_usage.get("input", lf_usage.get("prompt_tokens", lf_usage.get("input_tokens")))
            )
        )
        output_tokens = (
            output_tokens
            if output_tokens is not None
            else _int(
                lf_usage.get(
                    "output", lf_usage.get("completion_tokens", lf_usage.get("output_tokens"))
                )
            )
        )
        if cached is None:
            cached = _int(
                _first(
                    lf_usage.get,
                    "input_cached_tokens",
                    "cache_read_input_tokens",
                    "input_cache_read",
                )
            )
            if cached is None:
                cached = _int(_nested(lf_usage, "prompt_tokens_details", "cached_tokens"))
        total = (
            total
            if total is not None
            else _int(lf_usage.get("total", lf_usage.get("total_tokens")))
        )
    if total is None and input_tokens is not None and output_tokens is not None:
        total = input_tokens + output_tokens

    # cost reported by the instrumentation
    cost, cost_source = None, None
    for key in ("gen_ai.usage.cost", "llm.cost.total", "gen_ai.cost.total", "operation.cost"):
        c = _float(get(key))
        if c is not None:
            cost, cost_source = c, f"span:{key}"
            break
    if cost is None and dialect == "langfuse":
        cd = _json(get("langfuse.observation.cost_details"))
        if isinstance(cd, Mapping) and _float(cd.get("total")) is not None:
            cost, cost_source = _float(cd.get("total")), "span:langfuse.observation.cost_details"
    if cost == 0.0 and (input_tokens or output_tokens):
        # libraries write 0 when they do not know the model's price: not a real figure
        cost, cost_source = None, None

    # messages, tool calls and documents: skipped on the ingest path (index_only), where only
    # the indexed fields are stored and the full view is rebuilt on read.
    input_messages: list[Message] = []
    output_messages: list[Message] = []
    tool_calls: list[ToolCall] = []
    documents: list[Document] = []
    tool_name = _str(_first(get, "gen_ai.tool.name", "tool.name"))
    need_messages = not index_only or (
        op is None and input_tokens is None and (request_model or response_model) is not None
    )
    if need_messages:
        # messages
        input_messages = []
        output_messages = []
        raw_in = get("gen_ai.input.messages")
        if raw_in is not None:
            input_messages = _genai_messages(raw_in)
        elif get("gen_ai.input.messages.0.message.role") is not None:
            input_messages = _indexed_messages(
                get, "gen_ai.input.messages.", ".message.", ".tool_call.", "function."
            )
        elif (
            get("llm.input_messages.0.message.role") is not None
            or get("llm.input_messages.0.message.content") is not None
        ):
            input_messages = _indexed_messages(
                get, "llm.input_messages.", ".message.", ".tool_call.", "function."
            )
        elif get("gen_ai.prompt.0.role") is not None or get("gen_ai.prompt.0.content") is not None:
            input_messages = _indexed_messages(get, "gen_ai.prompt.", ".", ".", "")
        elif get("llm.prompts.0.prompt.text") is not None:
            i, input_messages = 0, []
            while (t := get(f"llm.prompts.{i}.prompt.text")) is not None:
                input_messages.append(Message(role="user", content=str(t)))
                i += 1
        elif dialect == "langfuse" and get("langfuse.observation.input") is not None:
            input_messages = _langfuse_messages(get("langfuse.observation.input"), "user")
        elif get("gen_ai.prompt") is not None:
            input_messages = _legacy_text_messages(get("gen_ai.prompt"), "user")
        si = get("gen_ai.system_instructions")
        if si is not None and not any(m.role == "system" for m in input_messages):
            sm = _system_instructions(si)
            if sm:
                input_messages.insert(0, sm)

        raw_out = get("gen_ai.output.messages")
        if raw_out is not None:
            output_messages = _genai_messages(raw_out)
        elif get("gen_ai.output.messages.0.message.role") is not None:
            output_messages = _indexed_messages(
                get, "gen_ai.output.messages.", ".message.", ".tool_call.", "function."
            )
        elif (
            get("llm.output_messages.0.message.role") is not None
            or get("llm.output_messages.0.message.content") is not None
        ):
            output_messages = _indexed_messages(
                get, "llm.output_messages.", ".message.", ".tool_call.", "function."
            )
        elif (
            get("gen_ai.completion.0.role") is not None
            or get("gen_ai.completion.0.content") is not None
            or get("gen_ai.completion.0.tool_calls.0.name") is not None
        ):
            output_messages = _indexed_messages(get, "gen_ai.completion.", ".", ".", "")
        elif get("llm.choices.0.completion.text") is not None:
            i = 0
            while (t := get(f"llm.choices.{i}.completion.text")) is not None:
                output_messages.append(Message(role="assistant", content=str(t)))
                i += 1
        elif dialect == "langfuse" and get("langfuse.observation.output") is not None:
            output_messages = _langfuse_messages(get("langfuse.observation.output"), "assistant")
        elif get("gen_ai.completion") is not None:
            output_messages = _legacy_text_messages(get("gen_ai.completion"), "assistant")

        if span is not None and span.events and (not input_messages or not output_messages):
            ev_in, ev_out = _event_messages(span.events)
            input_messages = input_messages or ev_in
            output_messages = output_messages or ev_out

        # plain input.value / output.value on model spans (traceAI streams, OpenInference text)
        if op in _LLM_OPS_WITHOUT_KIND and not output_messages:
            ov = get("output.value")
            if isinstance(ov, str) and ov and get("output.mime_type") != "application/json":
                output_messages = [Message(role="assistant", content=ov)]
        if op in _LLM_OPS_WITHOUT_KIND and not input_messages:
            iv = get("input.value")
            if isinstance(iv, str) and iv and get("input.mime_type") != "application/json":
                input_messages = [Message(role="user", content=iv)]

        # tool calls: requested by the model (output messages) or executed by this span
        tool_calls = [tc for m in output_messages for tc in m.tool_calls]
        if op == "execute_tool" or (tool_name and op is None):
            args = _first(get, "gen_ai.tool.call.arguments", "tool.parameters", "gen_ai.tool.args")
            result = get("gen_ai.tool.call.result")
            if args is None and get("openinference.span.kind") is not None:
                args = get("input.value")
                result = result if result is not None else get("output.value")
            if tool_name and not tool_calls:
                tool_calls = [
                    ToolCall(
                        id=_str(_first(get, "gen_ai.tool.call.id", "tool.id", "tool_call.id")),
                        name=tool_name,
                        arguments=_maybe_json(args),
                        result=_maybe_json(result),
                    )
                ]
        elif not tool_calls and tool_name and get("gen_ai.tool.args") is not None:
            # OpenLIT writes the model's requested call as flat attributes on the chat span
            tool_calls = [
                ToolCall(
                    id=_str(get("gen_ai.tool.call.id")),
                    name=tool_name,
                    arguments=_maybe_json(get("gen_ai.tool.args")),
                )
            ]
            if (
                output_messages
                and not output_messages[-1].tool_calls
                and not output_messages[-1].content
            ):
                output_messages[-1] = output_messages[-1].model_copy(
                    update={"tool_calls": tool_calls}
                )
            elif not output_messages:
                output_messages = [Message(role="assistant", tool_calls=tool_calls)]
        if dialect == "openlit" and tool_calls:
            # OpenLIT records an empty completion string for tool-call answers
            output_messages = [
                m for m in output_messages if m.content or m.tool_calls or m.role != "assistant"
            ] or [Message(role="assistant", tool_calls=tool_calls)]
            if not output_messages[-1].tool_calls:
                output_messages[-1] = output_messages[-1].model_copy(
                    update={"tool_calls": tool_calls}
                )

        # retrieved documents
        documents = []
        if (
            get("retrieval.documents.0.document.content") is not None
            or get("retrieval.documents.0.document.id") is not None
        ):
            documents = _oi_documents(get, "retrieval.documents.")
        elif get("gen_ai.retrieval.documents") is not None:
            documents = _json_documents(get("gen_ai.retrieval.documents"))
        elif get("reranker.output_documents.0.document.content") is not None:
            documents = _oi_documents(get, "reranker.output_documents.")

    # prompt, route, agent
    prompt_name = _str(
        _first(
            get,
            semconv.PROMPT_NAME,
            "gen_ai.prompt.name",
            "langfuse.observation.prompt.name",
            "traceloop.prompt.key",
            "prompt.id",
        )
    )
    raw_version = _first(
        get,
        semconv.PROMPT_VERSION,
        "gen_ai.prompt.version",
        "langfuse.observation.prompt.version",
        "traceloop.prompt.version",
        "llm.prompt_template.version",
    )
    prompt_version = _int(raw_version)
    prompt_label = _str(get(semconv.PROMPT_LABEL))
    if prompt_version is None and raw_version is not None:
        s = str(raw_version)
        if s[:1] in "vV" and s[1:].isdigit():
            prompt_version = int(s[1:])
        elif not prompt_label:
            prompt_label = s
    finish: list[str] = []
    agent_name = temperature = max_tokens = None
    if not index_only:  # descriptive fields the span store does not index (rebuilt on read)
        finish = _strings(_first(get, "gen_ai.response.finish_reasons", "llm.finish_reason"))
        if not finish:
            finish = [m.finish_reason for m in output_messages if m.finish_reason]
        agent_name = _str(_first(get, "gen_ai.agent.name", "agent.name", "gen_ai.agent.id"))
        if agent_name is None and op == "invoke_agent":
            agent_name = _str(_first(get, "traceloop.entity.name", "langfuse.observation.name"))
            if agent_name is None and span is not None and dialect not in ("otel_genai",):
                agent_name = span.name
        temperature = _float(_first(get, "gen_ai.request.temperature", "llm.request.temperature"))
        if temperature is None:
            temperature = _float(params.get("temperature"))
        max_tokens = _int(_first(get, "gen_ai.request.max_tokens", "llm.request.max_tokens"))
        if max_tokens is None:
            max_tokens = _int(params.get("max_tokens", params.get("max_completion_tokens")))
        if max_tokens is not None and max_tokens < 0:
            max_tokens = None

    # Every value below is already of its field's type (read through _str/_int/_float, lists
    # of Message/ToolCall/Document models), so the model is built without re-validation: on
    # the ingest path pydantic's validation cost more than the whole reading of the span.
    return construct_trusted(
        LlmCall,
        dict(
            operation=op
            or (
                "chat"
                if (request_model or response_model)
                and (input_tokens is not None or input_messages)
                else None
            ),
            provider=_provider(
                _first(get, "gen_ai.provider.name", "gen_ai.system", "llm.provider", "llm.system")
            ),
            request_model=request_model,
            response_model=response_model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached,
            cache_write_tokens=cache_write,
            reasoning_tokens=reasoning,
            total_tokens=total,
            cost_usd=cost,
            cost_source=cost_source,
            ttft_ms=_ttft_ms(get, span),
            temperature=temperature,
            max_tokens=max_tokens,
            finish_reasons=finish,
            input_messages=input_messages,
            output_messages=output_messages,
            tool_calls=tool_calls,
            available_tools=[] if index_only else _tool_definitions(get),
            documents=documents,
            prompt_name=prompt_name,
            prompt_version=prompt_version,
            prompt_label=prompt_label,
            route=_str(get(semconv.ROUTE)),
            agent_name=agent_name,
            agent_step=_int(_first(get, semconv.AGENT_STEP, "gen_ai.agent.step")),
            tool_name=tool_name,
            error_type=_error_type(get, span),
            response_id=None if index_only else _str(get("gen_ai.response.id")),
            conversation_id=None
            if index_only
            else _str(_first(get, "gen_ai.conversation.id", "session.id")),
            dialect=dialect,
        ),
    )


def _langfuse_messages(raw: Any, role: str) -> list[Message]:
    data = _json(raw) if isinstance(raw, str) else raw
    if data is None:
        if isinstance(raw, str) and raw:
            return [Message(role=role, content=raw)]
        return []
    if isinstance(data, str):
        return [Message(role=role, content=data)]
    if isinstance(data, Mapping) and "messages" not in data and "role" not in data:
        text = _content_text(data.get("content", data.get("text")))
        return [Message(role=role, content=text)] if text else []
    return _genai_messages(data)


use_compiled(globals(), ("to_llm_call",))
