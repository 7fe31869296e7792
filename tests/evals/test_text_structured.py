"""Table-driven tests: string evaluators, JSONValidation, ToolSelectionAccuracy, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from keel.errors import InvalidInputError
from keel.evals.builtins.limits import CostThreshold, LatencyThreshold, TokenThreshold
from keel.evals.builtins.structured import JSONValidation
from keel.evals.builtins.text import Contains, ExactMatch, Levenshtein, Regex, levenshtein
from keel.evals.builtins.tools import ToolSelectionAccuracy

TEXT_CASES: list[tuple[Any, dict[str, Any], dict[str, Any], bool]] = [
    # evaluator, options, inputs, expected pass
    (ExactMatch, {}, {"response": "Paris", "expected_output": "paris."}, True),
    (ExactMatch, {}, {"response": "  Paris \n", "expected_output": ["Lyon", "Paris"]}, True),
    (
        ExactMatch,
        {"case_sensitive": True},
        {"response": "paris", "expected_output": "Paris"},
        False,
    ),
    (ExactMatch, {}, {"response": "Paris, France", "expected_output": "Paris"}, False),
    (ExactMatch, {}, {"response": "42", "expected_output": "24"}, False),  # digits swapped
    (Contains, {"value": "refund"}, {"response": "We will REFUND you."}, True),
    (Contains, {"value": ["refund", "30 days"]}, {"response": "Refunds within 30 days."}, True),
    (Contains, {"value": ["refund", "30 days"]}, {"response": "Refunds within 14 days."}, False),
    (
        Contains,
        {"value": ["refund", "store credit"], "mode": "any"},
        {"response": "store credit only"},
        True,
    ),
    (Contains, {"value": "refund", "negate": True}, {"response": "no refund possible"}, False),
    (Contains, {"value": "cat", "whole_word": True}, {"response": "concatenate"}, False),
    (Contains, {}, {"response": "the answer is 42", "expected_output": "42"}, True),
    (Regex, {"pattern": r"\bORD-\d{4}\b"}, {"response": "Your order ORD-1234 shipped"}, True),
    (Regex, {"pattern": r"\bORD-\d{4}\b"}, {"response": "Your order ORD-123 shipped"}, False),
    (Regex, {"pattern": r"\d+", "fullmatch": True}, {"response": " 123 "}, True),
    (Regex, {"pattern": r"\d+", "fullmatch": True}, {"response": "123 apples"}, False),
    (
        Regex,
        {"pattern": "sorry", "ignore_case": True, "negate": True},
        {"response": "Sorry!"},
        False,
    ),
    (
        Levenshtein,
        {},
        {"response": "The meeting is at 10am", "expected_output": "The meeting is at 10 am"},
        True,
    ),
    (
        Levenshtein,
        {},
        {"response": "completely different", "expected_output": "The meeting is at 10 am"},
        False,
    ),
]


@pytest.mark.parametrize(("cls", "opts", "inputs", "expect"), TEXT_CASES)
def test_text_evaluators(
    cls: Any, opts: dict[str, Any], inputs: dict[str, Any], expect: bool
) -> None:
    s = cls(**opts).evaluate(**inputs)
    assert s.error is None
    assert s.passed is expect, s.reason
    assert 0.0 <= s.score <= 1.0


def test_levenshtein_distance() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("same", "same") == 0


def test_bad_regex_and_missing_input_raise() -> None:
    with pytest.raises(InvalidInputError):
        Regex(pattern="(")
    with pytest.raises(InvalidInputError):
        ExactMatch().evaluate(response="x")  # expected_output missing
    with pytest.raises(InvalidInputError):
        ExactMatch().evaluate(response="x", expected_output="x", bogus=1)


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

JSON_CASES = [
    ('{"name": "Ada", "age": 36}', SCHEMA, True),
    ('```json\n{"name": "Ada", "age": 36}\n```', SCHEMA, True),
    ('Sure! {"name": "Ada", "age": 36}', SCHEMA, True),
    ({"name": "Ada", "age": 36}, SCHEMA, True),
    ('{"name": "Ada", "age": "36"}', SCHEMA, False),  # wrong type
    ('{"name": "Ada", "age": -1}', SCHEMA, False),  # number changed out of range
    ('{"name": "Ada"}', SCHEMA, False),  # missing required
    ('{"name": "Ada", "age": 36, "admin": true}', SCHEMA, False),  # extra property
    ('{"name": "Ada", "age": 36,}', SCHEMA, False),  # trailing comma
    ("{'name': 'Ada', 'age': 36}", SCHEMA, False),  # python repr
    ("", None, False),
    ("[1, 2]", None, True),
]


@pytest.mark.parametrize(("response", "schema", "expect"), JSON_CASES)
def test_json_validation(response: Any, schema: Any, expect: bool) -> None:
    s = JSONValidation(schema=schema).evaluate(response=response)
    assert s.passed is expect, s.reason
    if not expect and schema and s.details.get("parsed"):
        assert s.details["errors"]


def test_json_validation_strict_mode_and_bad_schema() -> None:
    assert JSONValidation(extract=False).evaluate(response='x {"a": 1}').passed is False
    with pytest.raises(InvalidInputError):
        JSONValidation(schema={"type": "no-such-type"})


def call(name: str, **args: Any) -> dict[str, Any]:
    return {
        "id": "c1",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "refund_order",
            "description": "Refund a customer order",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    },
]

TOOL_CASES: list[tuple[list[Any], Any, Any, dict[str, Any], bool]] = [
    (
        [call("get_weather", city="Oslo")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {},
        True,
    ),
    (
        [call("get_weather", city="Bergen")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {},
        False,
    ),  # entity swapped
    (
        [call("refund_order", order_id="A1")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {},
        False,
    ),
    ([], [{"name": "get_weather"}], None, {}, False),
    (
        [call("get_weather", city="Oslo"), call("get_weather", city="Rome")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {},
        False,
    ),
    (
        [call("get_weather", city="Oslo"), call("get_weather", city="Rome")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {"allow_extra": True},
        True,
    ),
    (
        [call("get_weather", city="Oslo", unit="c")],
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        None,
        {"arguments": "exact"},
        False,
    ),
    (
        [call("refund_order", order_id="A1"), call("get_weather", city="Oslo")],
        [{"name": "get_weather"}, {"name": "refund_order"}],
        None,
        {"ordered": True},
        False,
    ),
    (
        [call("refund_order", order_id="A1"), call("get_weather", city="Oslo")],
        [{"name": "get_weather"}, {"name": "refund_order"}],
        None,
        {},
        True,
    ),
    ([], [], None, {}, True),
    ([call("get_weather", city="Oslo")], None, "weather in Oslo?", {}, True),
    ([call("get_weather")], None, "weather in Oslo?", {}, False),  # required argument missing
    ([call("delete_db")], None, "weather in Oslo?", {}, False),  # not an available tool
    (
        [call("get_weather", city="Oslo")],
        None,
        "Refund my order 77 please, the customer order",
        {},
        False,
    ),  # wrong tool for the query
]


@pytest.mark.parametrize(("calls", "expected", "query", "opts", "expect"), TOOL_CASES)
def test_tool_selection(
    calls: list[Any], expected: Any, query: Any, opts: dict[str, Any], expect: bool
) -> None:
    ev = ToolSelectionAccuracy(**opts)
    if expected is not None:
        s = ev.evaluate(tool_calls=calls, expected_tool_calls=expected)
    else:
        s = ev.evaluate(tool_calls=calls, available_tools=TOOLS, query=query)
    assert s.error is None, s.error
    assert s.passed is expect, s.reason


def test_tool_selection_partial_credit_and_no_reference() -> None:
    s = ToolSelectionAccuracy().evaluate(
        tool_calls=[call("get_weather", city="Oslo")],
        expected_tool_calls=[
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "refund_order"},
        ],
    )
    assert s.score == pytest.approx(0.5)
    s = ToolSelectionAccuracy().evaluate(tool_calls=[call("x")])
    assert s.error is not None and s.value is None  # recorded, not raised


LIMIT_CASES: list[tuple[Any, dict[str, Any], bool]] = [
    (LatencyThreshold(500), {"latency_ms": 320}, True),
    (LatencyThreshold(500), {"latency_ms": 501}, False),
    (CostThreshold(0.01), {"cost_usd": 0.002}, True),
    (CostThreshold(0.01), {"cost_usd": 0.02}, False),
    (TokenThreshold(1000), {"input_tokens": 600, "output_tokens": 300}, True),
    (TokenThreshold(1000), {"input_tokens": 800, "output_tokens": 300}, False),
    (TokenThreshold(max_output=100), {"input_tokens": 5000, "output_tokens": 99}, True),
]


@pytest.mark.parametrize(("ev", "inputs", "expect"), LIMIT_CASES)
def test_limits(ev: Any, inputs: dict[str, Any], expect: bool) -> None:
    s = ev.evaluate(**inputs)
    assert s.passed is expect
    assert s.score == (1.0 if expect else pytest.approx(s.score))
    if not expect:
        assert s.score < 1.0
