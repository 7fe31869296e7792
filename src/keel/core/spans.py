"""Spans and traces, OTel-shaped, plus the typed ``LlmCall`` view of an LLM or agent step.

``Span`` mirrors an OTLP span closely (ids as lowercase hex, times in ns since the epoch) so a
round trip through Keel loses nothing: raw attributes are always kept. ``LlmCall`` is what Keel
*understands* of a span, whichever instrumentation dialect produced it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class SpanKind(StrEnum):
    """OTel span kind."""

    UNSPECIFIED = "unspecified"
    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class SpanStatus(StrEnum):
    """OTel status code."""

    UNSET = "unset"
    OK = "ok"
    ERROR = "error"


class SpanEvent(BaseModel):
    """A timestamped event on a span (exceptions, GenAI message events)."""

    model_config = ConfigDict(frozen=True)

    name: str
    time_ns: int
    attributes: dict[str, Any] = Field(default_factory=dict)


class Span(BaseModel):
    """One OTel span as stored by Keel."""

    model_config = ConfigDict(frozen=True)

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: SpanKind = SpanKind.INTERNAL
    start_time_ns: int
    end_time_ns: int
    status: SpanStatus = SpanStatus.UNSET
    status_message: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[SpanEvent] = Field(default_factory=list)
    resource: dict[str, Any] = Field(default_factory=dict)
    scope: str | None = None
    project_id: str = "default"

    @property
    def duration_ms(self) -> float:
        """Wall time of the span in milliseconds."""
        return max(0, self.end_time_ns - self.start_time_ns) / 1e6

    @property
    def service_name(self) -> str | None:
        """``service.name`` from the resource, if set."""
        v = self.resource.get("service.name")
        return str(v) if v is not None else None


class Message(BaseModel):
    """A chat message as seen in a span (input or output)."""

    role: str
    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    finish_reason: str | None = None


class ToolCall(BaseModel):
    """A tool (function) call requested by a model or executed by an agent."""

    id: str | None = None
    name: str
    arguments: Any = None
    result: Any = None


class Document(BaseModel):
    """A retrieved document (RAG context)."""

    id: str | None = None
    content: str
    score: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class LlmCall(BaseModel):
    """The typed view of an LLM, retrieval, tool or agent span, whatever dialect produced it."""

    operation: str | None = (
        None  # chat, text_completion, embeddings, execute_tool, invoke_agent, retrieval …
    )
    provider: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    total_tokens: int | None = None
    cost_usd: float | None = None
    cost_source: str | None = None
    ttft_ms: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    finish_reasons: list[str] = Field(default_factory=list)
    input_messages: list[Message] = Field(default_factory=list)
    output_messages: list[Message] = Field(default_factory=list)
    tool_calls: list[ToolCall] = Field(default_factory=list)
    available_tools: list[dict[str, Any]] = Field(default_factory=list)
    documents: list[Document] = Field(default_factory=list)
    prompt_name: str | None = None
    prompt_version: int | None = None
    prompt_label: str | None = None
    route: str | None = None
    agent_name: str | None = None
    agent_step: int | None = None
    tool_name: str | None = None
    error_type: str | None = None
    response_id: str | None = None
    conversation_id: str | None = None
    dialect: str | None = None

    @property
    def output_text(self) -> str | None:
        """The text of the last output message, if any."""
        for m in reversed(self.output_messages):
            if m.content:
                return m.content
        return None

    @property
    def input_text(self) -> str | None:
        """The text of the last user input message, if any."""
        for m in reversed(self.input_messages):
            if m.role == "user" and m.content:
                return m.content
        return None


class Trace(BaseModel):
    """All spans sharing one trace id."""

    trace_id: str
    spans: list[Span]

    @property
    def root(self) -> Span | None:
        """The span with no parent inside this trace (earliest if several)."""
        ids = {s.span_id for s in self.spans}
        roots = [s for s in self.spans if not s.parent_span_id or s.parent_span_id not in ids]
        return min(roots, key=lambda s: s.start_time_ns) if roots else None


Message.model_rebuild()


_M = TypeVar("_M", bound=BaseModel)


def construct_trusted(cls: type[_M], values: dict[str, Any]) -> _M:
    """Build a model from ``values`` that already hold every field, checked, with no validation.

    For hot paths (OTLP decoding, reading stored spans) where pydantic's ``model_construct``
    costs more than the rest of the work; ``values`` is used as the instance ``__dict__``.
    """
    m = object.__new__(cls)
    object.__setattr__(m, "__dict__", values)
    object.__setattr__(m, "__pydantic_fields_set__", set(values))
    object.__setattr__(m, "__pydantic_extra__", None)
    object.__setattr__(m, "__pydantic_private__", None)
    return m
