"""The ingest fast path of the index-only LLM view equals the general reader, or steps aside.

``keel.otlp.dialects._index_fast`` reads plain GenAI-convention spans in one pass over their
keys; it must return exactly what ``_build(attrs, span, index_only=True)`` returns, or
``_FALLBACK``. Checked on the real-library fixture corpus, on Keel's own agent traces (which
must take the fast path), on random spans mixing every key either reader knows, and statically:
every attribute key ``_build`` can read on the index-only path is either read by the fast path
or makes it step aside.
"""

from __future__ import annotations

import ast
import inspect
import math
import re
from pathlib import Path
from typing import Any

import pytest
from _ingest_helpers import T0, agent_trace, hexid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.core import semconv
from keel.core.spans import LlmCall, Span, SpanEvent, SpanKind, SpanStatus
from keel.otlp import dialects as D
from keel.otlp.decode import decode_request

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "otlp").glob("*/*.pb"))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, LlmCall) and isinstance(b, LlmCall):
        return a.__dict__.keys() == b.__dict__.keys() and all(
            _same(a.__dict__[k], b.__dict__[k]) for k in a.__dict__
        )
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as e:  # to_llm_call turns either reader's exception into None
        return ("raised", type(e).__name__)


def _check(span: Span) -> bool:
    """Assert fast == general for ``span``; True when the fast path answered."""
    attrs = span.attributes
    fast = _outcome(lambda: D._index_fast(attrs, span))
    if fast is D._FALLBACK:
        return False
    slow = _outcome(lambda: D._build(attrs, span, True))
    assert _same(fast, slow), (span.name, attrs, fast, slow)
    return True


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_fixture_corpus(path: Path) -> None:
    for span in decode_request(path.read_bytes(), "application/x-protobuf").spans:
        if D._is_candidate(span.attributes):
            _check(span)
            full = D.to_llm_call(span, index_only=True)
            assert _same(full, _outcome(lambda s=span: D._build(s.attributes, s, True)))


def test_agent_traces_take_the_fast_path() -> None:
    spans = agent_trace("t1")
    spans[1].attributes.update(
        {
            semconv.ROUTE: "support",
            "gen_ai.prompt.name": "sys",
            "gen_ai.prompt.version": "v4",
            "gen_ai.usage.cache_read.input_tokens": 3,
            "gen_ai.response.time_to_first_chunk": 0.25,
            "error.type": "<class 'TimeoutError'>",
        }
    )
    answered = [_check(s) for s in spans if D._is_candidate(s.attributes)]
    assert answered and all(answered)
    llm = D.to_llm_call(spans[1], index_only=True)
    assert llm is not None
    assert (llm.route, llm.prompt_name, llm.prompt_version, llm.error_type, llm.ttft_ms) == (
        "support",
        "sys",
        4,
        "TimeoutError",
        250.0,
    )


def test_a_foreign_key_makes_it_step_aside() -> None:
    span = agent_trace("t2")[1]
    span.attributes["llm.token_count.prompt"] = 7
    assert D._index_fast(span.attributes, span) is D._FALLBACK
    assert D.to_llm_call(span, index_only=True) == D._build(span.attributes, span, True)


# ----------------------------------------------------------------------------- random spans

_KEYS = [
    *sorted(D._FAST_KEYS),
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.response.finish_reasons",
    "http.method",
    "llm.token_count.prompt",
    "openinference.span.kind",
    "gen_ai.usage.cost",
    "telemetry.sdk.name",
    "llm.provider",
]
_VALUES = st.sampled_from(
    [
        "",
        "3",
        "v3",
        "V12",
        "x",
        "nan",
        "1e3",
        0,
        7,
        -2,
        2.5,
        True,
        ["stop"],
        "chat",
        "execute_tool",
        "gpt-4o",
        "OpenAI",
        "azure",
        "<class 'ValueError'>",
        "openlit",
    ]
)
_SCOPES = st.sampled_from(
    [
        None,
        "",
        "keel.bench",
        "opentelemetry.instrumentation.openai_v2",
        "opentelemetry.instrumentation.openai.v1",
        "openlit.otel.tracing",
        "traceai.openai",
        "langfuse-sdk",
        "openinference.instrumentation.openai",
        "logfire",
    ]
)
_EVENTS = st.lists(
    st.sampled_from(
        [
            SpanEvent(name="exception", time_ns=T0 + 5, attributes={"exception.type": "E"}),
            SpanEvent(name="exception", time_ns=T0 + 5, attributes={}),
            SpanEvent(name="gen_ai.content.completion.chunk", time_ns=T0 + 2_000_000),
            SpanEvent(name="First Token Stream Event", time_ns=T0 - 10),
            SpanEvent(name="other", time_ns=T0 + 1),
        ]
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=12),
    scope=_SCOPES,
    name=st.sampled_from(["chat gpt-4o", "embeddings text-embedding-3", "agent", ""]),
    status=st.sampled_from(list(SpanStatus)),
    message=st.sampled_from([None, "", "Error code: 429 - slow down", "boom"]),
    events=_EVENTS,
    openlit_resource=st.booleans(),
)
def test_random_spans(
    attrs: dict[str, Any],
    scope: str | None,
    name: str,
    status: SpanStatus,
    message: str | None,
    events: list[SpanEvent],
    openlit_resource: bool,
) -> None:
    span = Span(
        trace_id=hexid("r", 16),
        span_id=hexid("s", 8),
        name=name,
        kind=SpanKind.CLIENT,
        start_time_ns=T0,
        end_time_ns=T0 + 10**9,
        status=status,
        status_message=message,
        attributes=attrs,
        events=events,
        resource={"telemetry.sdk.name": "openlit"} if openlit_resource else {},
        scope=scope,
    )
    _check(span)


# ----------------------------------------------------------------------------- static coverage

_KEY_RE = re.compile(r"^[a-z_]+(\.[a-z0-9_]+)+$")
# dotted strings _build compares with event names and event attribute keys, not span keys
_NOT_SPAN_KEYS = {"gen_ai.content.completion.chunk", "llm.first_token", "exception.type"}


class _Keys(ast.NodeVisitor):
    """Dotted string constants (and semconv names) on ``_build``'s index-only path."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        t = node.test
        skip_body = (isinstance(t, ast.Name) and t.id in ("need_messages", "lf_usage")) or (
            isinstance(t, ast.UnaryOp)
            and isinstance(t.op, ast.Not)
            and isinstance(t.operand, ast.Name)
            and t.operand.id == "index_only"
        )
        self.visit(t)
        if not skip_body:
            for n in node.body:
                self.visit(n)
        for n in node.orelse:
            self.visit(n)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "index_only":
            self.visit(node.body)  # the index-only branch only
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id == "_tool_definitions":
            return  # only reached when not index_only (see the IfExp above)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _KEY_RE.match(node.value):
            self.keys.add(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "semconv":
            self.keys.add(getattr(semconv, node.attr))
        self.generic_visit(node)


def test_fast_path_tables_cover_every_key_build_reads() -> None:
    v = _Keys()
    for fn in (D._build, D._operation, D._error_type, D._ttft_ms, D._usage_details, D._dialect):
        v.visit(ast.parse(inspect.getsource(fn)))
    known = set(D._FAST_KEYS) | set(D._FAST_FALLBACK)
    missing = v.keys - known - _NOT_SPAN_KEYS
    assert not missing, f"add these to _FAST_KEYS (and _index_fast) or _FAST_FALLBACK: {missing}"
    assert not set(D._FAST_KEYS) & set(D._FAST_FALLBACK)
    assert "gen_ai.input.messages" not in v.keys  # the walk does skip the message readers
