"""TaskCompletion over agent traces and CitationAccuracy, with adversarial cases."""

from __future__ import annotations

from typing import Any

import pytest

from keel.core.spans import Span, SpanStatus, Trace
from keel.evals.builtins.agent import TaskCompletion
from keel.evals.builtins.citations import CitationAccuracy


def tool_turn(name: str, args: str, result: str, call_id: str = "t1") -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


GOOD = [
    {"role": "user", "content": "What is the status of order A-77?"},
    *tool_turn(
        "lookup_order",
        '{"id": "A-77"}',
        '{"status": "shipped", "carrier": "Posten", "eta": "2026-12-03"}',
    ),
    {
        "role": "assistant",
        "content": "Order A-77 has shipped with Posten and should arrive on 2026-12-03.",
    },
]

TASK_CASES: list[tuple[str, dict[str, Any], bool]] = [
    ("complete run", {"messages": GOOD, "query": "status of order A-77"}, True),
    (
        "matches expected",
        {"messages": GOOD, "expected_output": "shipped, arriving 2026-12-03"},
        True,
    ),
    (
        "wrong date vs expected",
        {
            "messages": GOOD,
            "expected_output": "shipped, arriving 2026-12-09 via DHL express courier",
        },
        False,
    ),
    ("no final answer", {"messages": GOOD[:-1]}, False),
    (
        "unrecovered tool error",
        {
            "messages": [
                GOOD[0],
                *tool_turn(
                    "lookup_order", '{"id": "A-77"}', "Error: timeout contacting order service"
                ),
                {"role": "assistant", "content": "Order A-77 is on its way."},
            ]
        },
        False,
    ),
    (
        "recovered tool error",
        {
            "messages": [
                GOOD[0],
                *tool_turn("lookup_order", '{"id": "A-77"}', "Error: timeout", "t1"),
                *tool_turn(
                    "lookup_order",
                    '{"id": "A-77"}',
                    '{"status": "shipped", "eta": "2026-12-03"}',
                    "t2",
                ),
                {"role": "assistant", "content": "Order A-77 shipped; expected 2026-12-03."},
            ]
        },
        True,
    ),
    (
        "tool result ignored",
        {
            "messages": [
                GOOD[0],
                *tool_turn(
                    "lookup_order",
                    '{"id": "A-77"}',
                    '{"status": "cancelled", "reason": "payment declined"}',
                ),
                {"role": "assistant", "content": "Everything looks fine, no worries!"},
            ],
            "query": "order status",
        },
        False,
    ),
    (
        "gave up",
        {
            "messages": [
                GOOD[0],
                {"role": "assistant", "content": "I was unable to find that order, sorry."},
            ],
            "query": "status of order A-77",
        },
        False,
    ),
    (
        "response only",
        {
            "response": "Done: the report was emailed to finance.",
            "query": "email the report to finance",
        },
        True,
    ),
]


@pytest.mark.parametrize(("label", "inputs", "expect"), TASK_CASES, ids=[c[0] for c in TASK_CASES])
def test_task_completion(label: str, inputs: dict[str, Any], expect: bool) -> None:
    s = TaskCompletion().evaluate(**inputs)
    assert s.error is None, s.error
    assert s.passed is expect, (s.score, s.reason, s.details)


def _span(
    sid: str,
    parent: str | None,
    t: int,
    attrs: dict[str, Any],
    status: SpanStatus = SpanStatus.UNSET,
) -> Span:
    return Span(
        trace_id="a" * 32,
        span_id=sid,
        parent_span_id=parent,
        name=sid,
        start_time_ns=t,
        end_time_ns=t + 10,
        attributes=attrs,
        status=status,
    )


def test_task_completion_over_a_stored_trace() -> None:
    ok = Trace(
        trace_id="a" * 32,
        spans=[
            _span("0000000000000001", None, 0, {"gen_ai.operation.name": "invoke_agent"}),
            _span(
                "0000000000000002",
                "0000000000000001",
                1,
                {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
            ),
        ],
    )
    s = TaskCompletion().evaluate(trace=ok, response="Found it.")
    assert s.passed is True and s.details["errors"] == []
    failed = Trace(
        trace_id="a" * 32,
        spans=[
            *ok.spans,
            _span(
                "0000000000000003",
                "0000000000000001",
                2,
                {"gen_ai.operation.name": "chat"},
                SpanStatus.ERROR,
            ),
        ],
    )
    s = TaskCompletion().evaluate(trace=failed, response="Found it.")
    assert s.passed is False and s.details["errors"]


DOCS = [
    {
        "id": "policy",
        "content": "Refunds are available within 30 days of purchase for unused items.",
    },
    {"id": "shipping", "content": "Standard shipping takes 3 to 5 business days within Norway."},
]

CITE_CASES: list[tuple[str, str, bool]] = [
    (
        "supported numeric + id",
        "Unused items can be refunded within 30 days of purchase [1]. Shipping takes 3 to 5 business days [shipping].",
        True,
    ),
    ("number changed", "Unused items can be refunded within 60 days of purchase [1].", False),
    ("wrong document cited", "Unused items can be refunded within 30 days of purchase [2].", False),
    ("citation to nothing", "Unused items can be refunded within 30 days [7].", False),
    ("unknown id", "Refunds within 30 days [faq].", False),
    ("no citations", "Refunds are available within 30 days.", False),
    ("multi-citation one bad", "Refunds within 30 days for unused items [1, 2].", False),
    (
        "unsupported appended sentence",
        "Refunds are available within 30 days for unused items [1]. Express shipping is free for members [2].",
        False,
    ),
]


@pytest.mark.parametrize(
    ("label", "response", "expect"), CITE_CASES, ids=[c[0] for c in CITE_CASES]
)
def test_citation_accuracy(label: str, response: str, expect: bool) -> None:
    s = CitationAccuracy().evaluate(response=response, context=DOCS)
    assert s.error is None, s.error
    assert s.passed is expect, (s.score, s.reason)


def test_citation_without_requirement() -> None:
    assert (
        CitationAccuracy(require_citations=False)
        .evaluate(response="No claims.", context=DOCS)
        .passed
        is True
    )


def test_citation_support_through_groundedness() -> None:
    from keel.evals.registry import default_registry

    if "Groundedness" not in default_registry():
        pytest.skip("the Groundedness evaluator is not available")
    ev = CitationAccuracy(support="groundedness")
    ok = ev.evaluate(
        response="Unused items can be refunded within 30 days of purchase [1].", context=DOCS
    )
    bad = ev.evaluate(
        response="Unused items can be refunded within 60 days of purchase [1].", context=DOCS
    )
    assert ok.passed is True and bad.passed is False
