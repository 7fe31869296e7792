"""Keel's domain model: pure data and rules, no I/O, imports nothing else of Keel.

Every wire format (OTLP, OpenAI JSON) and every storage row converts to and from these types
by explicit functions at the boundary.
"""

from keel.core.clock import Clock, FixedClock, SystemClock
from keel.core.datasets import Dataset, DatasetVersion, Row, RowSource
from keel.core.evals import EvalRun, EvaluatorRef, GateVerdict, Score
from keel.core.hashing import canonical_json, content_hash
from keel.core.ids import new_id
from keel.core.projects import ApiKey, AuditEvent, Project
from keel.core.prompts import PromptLabel, PromptVersion
from keel.core.releases import Gate, GateRule, Release, ReleaseStep
from keel.core.routes import Route, RouteDecision, Target
from keel.core.spans import (
    Document,
    LlmCall,
    Message,
    Span,
    SpanEvent,
    SpanKind,
    SpanStatus,
    ToolCall,
    Trace,
)

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Clock",
    "Dataset",
    "DatasetVersion",
    "Document",
    "EvalRun",
    "EvaluatorRef",
    "FixedClock",
    "Gate",
    "GateRule",
    "GateVerdict",
    "LlmCall",
    "Message",
    "Project",
    "PromptLabel",
    "PromptVersion",
    "Release",
    "ReleaseStep",
    "Route",
    "RouteDecision",
    "Row",
    "RowSource",
    "Score",
    "Span",
    "SpanEvent",
    "SpanKind",
    "SpanStatus",
    "SystemClock",
    "Target",
    "ToolCall",
    "Trace",
    "canonical_json",
    "content_hash",
    "new_id",
]
