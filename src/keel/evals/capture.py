"""Capture the spans an app emits while it answers one eval row (in memory, per row).

An OTel span processor is added once to the SDK tracer provider (one is installed if the
process has none). Each row runs inside a ``keel.eval.row`` span and with a context variable
naming the row, so every span started during the call (also in threads that copy the context)
is collected for that row and handed to evaluators as ``trace``.
"""

from __future__ import annotations

import contextvars
import threading
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("keel_eval_row", default=None)
_lock = threading.Lock()
_capture: SpanCapture | None = None


class SpanCapture(SpanProcessor):
    """A span processor that files ended spans under the row key that was current at start."""

    def __init__(self) -> None:
        self._owner: dict[int, str] = {}
        self._spans: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    # SpanProcessor interface
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        key = _current.get()
        if key is not None:
            with self._lock:
                self._owner[span.context.span_id] = key

    def on_end(self, span: Any) -> None:
        with self._lock:
            key = self._owner.pop(span.context.span_id, None)
            if key is not None:
                self._spans.setdefault(key, []).append(span)

    def shutdown(self) -> None:
        """Nothing to release."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Nothing buffered."""
        return True

    def take(self, key: str) -> list[Span]:
        """The spans captured for ``key`` (removed from the capture), as Keel spans."""
        with self._lock:
            raw = self._spans.pop(key, [])
        return sorted((to_span(s) for s in raw), key=lambda s: (s.start_time_ns, s.span_id))


def install() -> SpanCapture:
    """The process-wide capture, added to the SDK tracer provider on first use."""
    global _capture
    with _lock:
        if _capture is not None:
            return _capture
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider()
            trace.set_tracer_provider(provider)
            provider = trace.get_tracer_provider()
        cap = SpanCapture()
        if isinstance(provider, TracerProvider):
            provider.add_span_processor(cap)
        _capture = cap
        return cap


def set_row(key: str | None) -> contextvars.Token[str | None]:
    """Make ``key`` the row spans are filed under (in this context)."""
    return _current.set(key)


def reset_row(token: contextvars.Token[str | None]) -> None:
    """Undo :func:`set_row`."""
    _current.reset(token)


_KINDS = {
    0: SpanKind.INTERNAL,
    1: SpanKind.SERVER,
    2: SpanKind.CLIENT,
    3: SpanKind.PRODUCER,
    4: SpanKind.CONSUMER,
}
_STATUS = {0: SpanStatus.UNSET, 1: SpanStatus.OK, 2: SpanStatus.ERROR}


def to_span(s: Any) -> Span:
    """An OTel SDK ``ReadableSpan`` as a Keel :class:`Span`."""
    parent = s.parent.span_id if s.parent is not None else None
    kind = getattr(s.kind, "value", 0)
    status = getattr(getattr(s.status, "status_code", None), "value", 0)
    return Span(
        trace_id=format(s.context.trace_id, "032x"),
        span_id=format(s.context.span_id, "016x"),
        parent_span_id=format(parent, "016x") if parent else None,
        name=s.name,
        kind=_KINDS.get(kind, SpanKind.INTERNAL),
        start_time_ns=s.start_time or 0,
        end_time_ns=s.end_time or s.start_time or 0,
        status=_STATUS.get(status, SpanStatus.UNSET),
        status_message=getattr(s.status, "description", None),
        attributes=dict(s.attributes or {}),
        events=[
            SpanEvent(name=e.name, time_ns=e.timestamp, attributes=dict(e.attributes or {}))
            for e in (s.events or ())
        ],
        resource=dict(s.resource.attributes) if s.resource else {},
        scope=s.instrumentation_scope.name if s.instrumentation_scope else None,
    )
