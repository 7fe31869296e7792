"""Send an application's traces to Keel over OpenTelemetry, and mark its own steps.

``keel.init()`` wires the OpenTelemetry SDK (a ``BatchSpanProcessor`` and the OTLP/HTTP
exporter) to Keel's ``/v1/traces``. ``@keel.trace`` and ``keel.span()`` turn the application's
own functions into agent, tool, retriever, LLM or chain spans, written with the OTel GenAI names
and the OpenInference kind so any backend reads them.

Tracing must never break the host application: exporter failures are caught and logged, and an
attribute that cannot be recorded is skipped. With ``strict=True`` (for tests) export errors are
kept and raised by :func:`flush`/:func:`shutdown` instead.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar, overload

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace import Status, StatusCode

from keel.core import semconv

__all__ = ["KeelSpan", "SpanKindName", "flush", "init", "shutdown", "span", "trace"]

_log = logging.getLogger("keel.sdk")

SpanKindName = Literal["agent", "tool", "retriever", "llm", "chain", "embedding"]
DEFAULT_ENDPOINT = "http://127.0.0.1:7400"
MAX_ATTRIBUTE_CHARS = 32_000
TRACER_NAME = "keel.sdk"

_KIND_OPERATION = {
    "agent": "invoke_agent",
    "tool": "execute_tool",
    "retriever": "retrieval",
    "llm": "chat",
    "chain": "invoke_workflow",
    "embedding": "embeddings",
}
_KIND_OPENINFERENCE = {
    "agent": "AGENT",
    "tool": "TOOL",
    "retriever": "RETRIEVER",
    "llm": "LLM",
    "chain": "CHAIN",
    "embedding": "EMBEDDING",
}
_KIND_SPAN_KIND = {"llm": otel_trace.SpanKind.CLIENT, "embedding": otel_trace.SpanKind.CLIENT}


# ---------------------------------------------------------------------------------------------
# setup
# ---------------------------------------------------------------------------------------------
class _SafeExporter(SpanExporter):
    """Wraps the OTLP exporter: failures are logged (once per burst), never raised."""

    def __init__(self, inner: SpanExporter, strict: bool) -> None:
        self._inner = inner
        self._strict = strict
        self._failures = 0
        self.errors: list[BaseException] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception as e:  # never let the exporter reach the application
            result = SpanExportResult.FAILURE
            if self._strict:
                self.errors.append(e)
            self._note_failure(f"{type(e).__name__}: {e}")
            return result
        if result is SpanExportResult.FAILURE:
            if self._strict:
                self.errors.append(RuntimeError(f"export of {len(spans)} spans to Keel failed"))
            self._note_failure("the server did not accept the spans")
        else:
            self._failures = 0
        return result

    def _note_failure(self, why: str) -> None:
        self._failures += 1
        if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
            _log.warning(
                "keel: could not export spans (%s); %d failures so far", why, self._failures
            )

    def shutdown(self) -> None:
        try:
            self._inner.shutdown()
        except Exception:
            _log.debug("keel: exporter shutdown failed", exc_info=True)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        try:
            return bool(self._inner.force_flush(timeout_millis))
        except Exception:
            return False


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.provider: TracerProvider | None = None
        self.processor: BatchSpanProcessor | None = None
        self.exporter: _SafeExporter | None = None
        self.owns_provider = False
        self.config: tuple[Any, ...] | None = None


_state = _State()


def _traces_url(endpoint: str) -> str:
    e = endpoint.rstrip("/")
    return e if e.endswith("/v1/traces") else e + "/v1/traces"


def init(
    endpoint: str | None = None,
    api_key: str | None = None,
    service_name: str | None = None,
    project: str | None = None,
    *,
    exporter: SpanExporter | None = None,
    tracer_provider: TracerProvider | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    schedule_delay_millis: int = 1000,
    export_timeout_seconds: float = 10.0,
    strict: bool = False,
) -> TracerProvider:
    """Send this process's OpenTelemetry spans to Keel. Safe to call more than once.

    Each setting: argument, else environment (``KEEL_ENDPOINT``, ``KEEL_API_KEY``,
    ``OTEL_SERVICE_NAME``, ``KEEL_PROJECT``), else default (``http://127.0.0.1:7400``, no key,
    ``"app"``, the key's project). If the application already installed an SDK
    ``TracerProvider``, Keel adds its processor to it instead of replacing it.
    ``exporter`` replaces the OTLP exporter (tests); ``strict`` raises export errors from
    :func:`flush`/:func:`shutdown` instead of only logging them.
    """
    endpoint = endpoint or os.environ.get("KEEL_ENDPOINT") or DEFAULT_ENDPOINT
    api_key = api_key or os.environ.get("KEEL_API_KEY")
    service_name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "app"
    project = project or os.environ.get("KEEL_PROJECT")
    config = (endpoint, api_key, service_name, project, id(exporter), id(tracer_provider))
    with _state.lock:
        if _state.provider is not None:
            if _state.config != config:
                _log.warning("keel.init() called again with other settings; keeping the first")
            return _state.provider
        try:
            if exporter is None:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
                if project:
                    headers["x-keel-project"] = project
                exporter = OTLPSpanExporter(
                    endpoint=_traces_url(endpoint), headers=headers, timeout=export_timeout_seconds
                )
            safe = _SafeExporter(exporter, strict)
            processor = BatchSpanProcessor(safe, schedule_delay_millis=schedule_delay_millis)
            provider = tracer_provider
            owns = False
            if provider is None:
                current = otel_trace.get_tracer_provider()
                if isinstance(current, TracerProvider):
                    provider = current
                else:
                    attrs: dict[str, Any] = {"service.name": service_name}
                    if project:
                        attrs[semconv.PROJECT] = project
                    attrs.update(resource_attributes or {})
                    provider = TracerProvider(resource=Resource.create(attrs))
                    otel_trace.set_tracer_provider(provider)
                    owns = True
                    if otel_trace.get_tracer_provider() is not provider:
                        # another library won the race to set the global provider
                        g = otel_trace.get_tracer_provider()
                        if isinstance(g, TracerProvider):
                            provider, owns = g, False
            provider.add_span_processor(processor)
        except Exception:
            if strict:
                raise
            _log.warning("keel: tracing setup failed; the application runs untraced", exc_info=True)
            return tracer_provider or TracerProvider()
        _state.provider = provider
        _state.processor = processor
        _state.exporter = safe
        _state.owns_provider = owns
        _state.config = config
        return provider


def _raise_strict() -> None:
    exp = _state.exporter
    if exp is not None and exp._strict and exp.errors:
        err = exp.errors[0]
        exp.errors.clear()
        raise RuntimeError("keel: span export failed") from err


def flush(timeout_millis: int = 30_000) -> bool:
    """Export every finished span now. False if it did not finish in time (or not set up)."""
    proc = _state.processor
    if proc is None:
        return False
    try:
        ok = bool(proc.force_flush(timeout_millis))
    except Exception:
        ok = False
    _raise_strict()
    return ok


def shutdown(timeout_millis: int = 30_000) -> None:
    """Flush and stop Keel's exporter. ``init()`` may be called again afterwards."""
    with _state.lock:
        proc, provider, owns = _state.processor, _state.provider, _state.owns_provider
        exporter = _state.exporter
        _state.provider = _state.processor = _state.exporter = None
        _state.config = None
    if proc is None:
        return
    try:
        proc.force_flush(timeout_millis)
        proc.shutdown()
    except Exception:
        _log.debug("keel: shutdown failed", exc_info=True)
    if owns and provider is not None:
        # our processor is closed; leave the global provider in place for the OTel API
        pass
    if exporter is not None and exporter._strict and exporter.errors:
        err = exporter.errors[0]
        raise RuntimeError("keel: span export failed") from err


# ---------------------------------------------------------------------------------------------
# user spans
# ---------------------------------------------------------------------------------------------
_agent_steps: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "keel_agent_steps", default=None
)


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        s = value
    else:
        try:
            s = json.dumps(value, default=_default, ensure_ascii=False)
        except Exception:
            s = repr(value)
    return s if len(s) <= MAX_ATTRIBUTE_CHARS else s[:MAX_ATTRIBUTE_CHARS] + "…"


def _default(o: Any) -> Any:
    for attr in ("model_dump", "dict", "_asdict"):
        fn = getattr(o, attr, None)
        if callable(fn):
            try:
                return fn()
            except Exception:
                break
    return repr(o)


def _attr_value(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (str, bool, int, float)) for v in value
    ):
        return list(value)
    return _to_text(value)


class KeelSpan:
    """Handle on a span opened by :func:`span`: record what the step saw and produced."""

    def __init__(self, otel_span: OtelSpan, kind: str, name: str) -> None:
        self.otel_span = otel_span
        self.kind = kind
        self.name = name

    def set(self, key: str, value: Any) -> KeelSpan:
        """Set one attribute (non-primitive values are stored as JSON)."""
        try:
            if value is not None:
                self.otel_span.set_attribute(key, _attr_value(value))
        except Exception:
            _log.debug("keel: could not set %s", key, exc_info=True)
        return self

    def set_input(self, value: Any) -> KeelSpan:
        """The step's input (``input.value``; tool arguments on tool spans)."""
        text = _to_text(value)
        self.set("input.value", text)
        self.set("input.mime_type", "text/plain" if isinstance(value, str) else "application/json")
        if self.kind == "tool":
            self.set(semconv.GEN_AI_TOOL_CALL_ARGUMENTS, text)
        elif self.kind == "retriever" and isinstance(value, str):
            self.set(semconv.GEN_AI_RETRIEVAL_QUERY, value)
        return self

    def set_output(self, value: Any) -> KeelSpan:
        """The step's output (``output.value``; the tool result on tool spans)."""
        text = _to_text(value)
        self.set("output.value", text)
        self.set("output.mime_type", "text/plain" if isinstance(value, str) else "application/json")
        if self.kind == "tool":
            self.set(semconv.GEN_AI_TOOL_CALL_RESULT, text)
        return self

    def set_documents(self, documents: Sequence[Any]) -> KeelSpan:
        """Retrieved documents: strings, or mappings with ``content``/``id``/``score``/``metadata``."""
        docs = []
        for i, d in enumerate(documents):
            if isinstance(d, str):
                d = {"content": d}
            elif not isinstance(d, Mapping):
                d = {"content": str(getattr(d, "page_content", getattr(d, "content", d)))}
            base = f"retrieval.documents.{i}.document."
            for key in ("id", "content", "score"):
                if d.get(key) is not None:
                    self.set(base + key, d[key])
            if d.get("metadata"):
                self.set(base + "metadata", _to_text(d["metadata"]))
            docs.append({k: d[k] for k in ("id", "score", "content") if d.get(k) is not None})
        self.set(semconv.GEN_AI_RETRIEVAL_DOCUMENTS, _to_text(docs))
        return self

    def set_llm(
        self,
        *,
        model: str | None = None,
        provider: str | None = None,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cached_tokens: int | None = None,
        input_messages: Sequence[Mapping[str, Any]] | None = None,
        output_messages: Sequence[Mapping[str, Any]] | None = None,
    ) -> KeelSpan:
        """Model call facts, for an ``llm`` span around a client Keel does not instrument."""
        self.set(semconv.GEN_AI_REQUEST_MODEL, model)
        self.set(semconv.GEN_AI_PROVIDER, provider)
        self.set(semconv.GEN_AI_RESPONSE_MODEL, response_model)
        self.set(semconv.GEN_AI_INPUT_TOKENS, input_tokens)
        self.set(semconv.GEN_AI_OUTPUT_TOKENS, output_tokens)
        self.set(semconv.GEN_AI_CACHE_READ_TOKENS, cached_tokens)
        if input_messages is not None:
            self.set(semconv.GEN_AI_INPUT_MESSAGES, _to_text(_as_parts(input_messages)))
        if output_messages is not None:
            self.set(semconv.GEN_AI_OUTPUT_MESSAGES, _to_text(_as_parts(output_messages)))
        return self


def _as_parts(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if "parts" in m:
            out.append(dict(m))
            continue
        parts: list[dict[str, Any]] = []
        if m.get("content") is not None:
            parts.append({"type": "text", "content": m["content"]})
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", tc)
            args = fn.get("arguments")
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except ValueError:
                    pass
            parts.append(
                {"type": "tool_call", "id": tc.get("id"), "name": fn.get("name"), "arguments": args}
            )
        out.append({"role": m.get("role", "user"), "parts": parts})
    return out


@contextmanager
def span(
    name: str,
    kind: SpanKindName = "chain",
    attributes: Mapping[str, Any] | None = None,
    *,
    input: Any = None,
) -> Iterator[KeelSpan]:
    """Open a span for one step of the application: ``with keel.span("plan", kind="agent"):``.

    Writes ``gen_ai.operation.name`` and ``openinference.span.kind`` for the kind, the agent or
    tool name, and ``agent.trajectory.step`` for steps inside an agent span. Exceptions are
    recorded on the span (``error.type``) and re-raised.
    """
    if kind not in _KIND_OPERATION:
        raise ValueError(f"kind must be one of {sorted(_KIND_OPERATION)}, not {kind!r}")
    tracer = otel_trace.get_tracer(TRACER_NAME)
    op = _KIND_OPERATION[kind]
    span_name = name if kind not in ("agent", "tool") else f"{op} {name}"
    with tracer.start_as_current_span(
        span_name,
        kind=_KIND_SPAN_KIND.get(kind, otel_trace.SpanKind.INTERNAL),
        record_exception=False,
        set_status_on_exception=False,
    ) as otel_span:
        ks = KeelSpan(otel_span, kind, name)
        ks.set(semconv.SPAN_KIND, kind)
        ks.set(semconv.GEN_AI_OPERATION, op)
        ks.set(semconv.OPENINFERENCE_SPAN_KIND, _KIND_OPENINFERENCE[kind])
        if kind == "agent":
            ks.set(semconv.GEN_AI_AGENT_NAME, name)
        elif kind == "tool":
            ks.set(semconv.GEN_AI_TOOL_NAME, name)
            ks.set("tool.name", name)
        steps = _agent_steps.get()
        if steps is not None:
            steps[0] += 1
            ks.set(semconv.AGENT_STEP, steps[0])
        for k, v in (attributes or {}).items():
            ks.set(k, v)
        if input is not None:
            ks.set_input(input)
        token = _agent_steps.set([0]) if kind == "agent" else None
        try:
            yield ks
        except BaseException as e:
            if isinstance(e, Exception):
                try:
                    otel_span.record_exception(e)
                    otel_span.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"))
                    otel_span.set_attribute(semconv.ERROR_TYPE, _qualname(type(e)))
                except Exception:
                    pass
            raise
        finally:
            if token is not None:
                _agent_steps.reset(token)


def _qualname(t: type) -> str:
    mod = t.__module__
    return t.__qualname__ if mod in ("builtins", "__main__") else f"{mod}.{t.__qualname__}"


F = TypeVar("F", bound=Callable[..., Any])


def _call_input(
    sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any], named: bool
) -> Any:
    """The call's arguments by name; a lone string argument as itself unless ``named``."""
    if sig is None:
        return {"args": args, "kwargs": kwargs}
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return {"args": args, "kwargs": kwargs}
    values = dict(bound.arguments)
    for drop in ("self", "cls"):
        values.pop(drop, None)
    if len(values) == 1 and not named:
        only = next(iter(values.values()))
        if isinstance(only, str):
            return only
    return values


@overload
def trace(func: F) -> F: ...


@overload
def trace(
    func: None = None,
    *,
    name: str | None = None,
    kind: SpanKindName = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...


def trace(
    func: F | None = None,
    *,
    name: str | None = None,
    kind: SpanKindName = "chain",
    capture_input: bool = True,
    capture_output: bool = True,
    attributes: Mapping[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Trace a function as a step: ``@keel.trace`` or ``@keel.trace(kind="tool")``.

    Works on plain, async, generator and async generator functions. Arguments and the return
    value (for generators: the yielded items) are recorded unless ``capture_input`` /
    ``capture_output`` are false; retriever steps that return a list record it as documents.
    """
    if kind not in _KIND_OPERATION:
        raise ValueError(f"kind must be one of {sorted(_KIND_OPERATION)}, not {kind!r}")

    def decorate(fn: F) -> F:
        span_name: str = name or str(getattr(fn, "__name__", "step"))
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None

        def record_output(ks: KeelSpan, value: Any) -> None:
            if not capture_output:
                return
            if kind == "retriever" and isinstance(value, (list, tuple)):
                ks.set_documents(value)
            ks.set_output(value)

        def open_span(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            inp = None
            if capture_input:
                try:
                    inp = _call_input(sig, args, kwargs, kind == "tool")
                except Exception:  # recording the input must never break the call
                    _log.debug("keel: could not record the input of %s", span_name, exc_info=True)
            return span(span_name, kind, attributes, input=inp)

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                with open_span(args, kwargs) as ks:
                    items: list[Any] = []
                    async for item in fn(*args, **kwargs):
                        if capture_output and len(items) < 1000:
                            items.append(item)
                        yield item
                    record_output(ks, _joined(items))

            return agen_wrapper  # type: ignore[return-value]

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                with open_span(args, kwargs) as ks:
                    items: list[Any] = []
                    result = yield from _collect(fn(*args, **kwargs), items, capture_output)
                    record_output(ks, _joined(items) if result is None else result)
                    return result

            return gen_wrapper  # type: ignore[return-value]

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with open_span(args, kwargs) as ks:
                    result = await fn(*args, **kwargs)
                    record_output(ks, result)
                    return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with open_span(args, kwargs) as ks:
                result = fn(*args, **kwargs)
                record_output(ks, result)
                return result

        return wrapper  # type: ignore[return-value]

    if func is not None:
        return decorate(func)
    return decorate


def _collect(gen: Iterator[Any], items: list[Any], capture: bool) -> Any:
    """``yield from`` that keeps (a bounded number of) the yielded items."""
    it = iter(gen)
    while True:
        try:
            item = next(it)
        except StopIteration as stop:
            return stop.value
        if capture and len(items) < 1000:
            items.append(item)
        yield item


def _joined(items: list[Any]) -> Any:
    if items and all(isinstance(i, str) for i in items):
        return "".join(items)
    return items
