"""Registry (names, short forms, entry-point plugins), custom evaluators, span/trace/row runs."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from keel.core.spans import Span, Trace
from keel.errors import ConflictError, InvalidInputError, NotFoundError
from keel.evals.base import EvalResult, Evaluator
from keel.evals.custom import keel_evaluator, load_rubric
from keel.evals.evaluate import (
    evaluate_rows,
    evaluate_span,
    evaluate_trace,
    inputs_from_row,
    summarize,
)
from keel.evals.judge import LLMJudge, ScriptedJudgeModel
from keel.evals.registry import EvaluatorRegistry, create_evaluator, default_registry, get_evaluator

BUILTINS = [
    "ExactMatch", "Contains", "Regex", "Levenshtein", "JSONValidation", "ToolSelectionAccuracy",
    "TaskCompletion", "CitationAccuracy", "Refusal", "PII", "Toxicity", "PromptInjection",
    "LatencyThreshold", "CostThreshold", "TokenThreshold", "LLMJudge", "Hybrid",
]  # fmt: skip


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_are_registered(name: str) -> None:
    assert get_evaluator(name).name == name


@pytest.mark.parametrize(
    ("spec", "cls", "attr", "value"),
    [
        ("ExactMatch", "ExactMatch", None, None),
        ("exact_match", "ExactMatch", None, None),
        ({"name": "Contains", "value": "refund"}, "Contains", "value", "refund"),
        ({"Contains": {"value": "refund", "mode": "any"}}, "Contains", "mode", "any"),
        ({"Contains": "refund"}, "Contains", "value", "refund"),
        ({"Regex": r"\d+"}, "Regex", "fullmatch", False),
        ({"MaxLatency": 800}, "LatencyThreshold", "max_ms", 800.0),
        ({"name": "PII", "threshold": 0.5}, "PII", "threshold", 0.5),
    ],
)
def test_specs(spec: Any, cls: str, attr: str | None, value: Any) -> None:
    ev = create_evaluator(spec)
    assert type(ev).name == cls
    if attr:
        assert getattr(ev, attr) == value


@pytest.mark.parametrize(
    ("spec", "err"),
    [
        ("NoSuchEvaluator", NotFoundError),
        ({"Contains": "x", "Regex": "y"}, InvalidInputError),
        ({"name": "Contains", "bogus": 1}, InvalidInputError),
        ({"ExactMatch": "x"}, InvalidInputError),  # no short argument
        (42, InvalidInputError),
    ],
)
def test_bad_specs(spec: Any, err: type[Exception]) -> None:
    with pytest.raises(err):
        create_evaluator(spec)


def test_name_conflicts() -> None:
    reg = EvaluatorRegistry(load_builtins=False, load_entry_points=False)

    class A(Evaluator):
        name = "Same"

    class B(Evaluator):
        name = "same"

    reg.add(A)
    with pytest.raises(ConflictError):
        reg.add(B)
    reg.add(B, replace=True)
    assert reg.get("SAME") is B


def test_entry_point_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party package's evaluators arrive through the keel.evaluators entry points."""
    pkg = tmp_path / "keel_plugin_demo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from keel.evals.base import EvalResult, Evaluator

            class Shouty(Evaluator):
                name = "Shouty"
                required_inputs = frozenset({"response"})

                def _evaluate(self, *, response, **_):
                    return EvalResult(1.0 if response.isupper() else 0.0)

            class Quiet(Evaluator):
                name = "Quiet"
                required_inputs = frozenset({"response"})

                def _evaluate(self, *, response, **_):
                    return EvalResult(1.0 if response.islower() else 0.0)

            def register_evaluators(register):
                register(Quiet)
            """
        )
    )
    dist = tmp_path / "keel_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: keel-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[keel.evaluators]\nshouty = keel_plugin_demo:Shouty\nquiet = keel_plugin_demo:register_evaluators\nbroken = keel_plugin_demo:missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = EvaluatorRegistry()
    assert reg.create("Shouty").evaluate(response="HI").passed is True
    assert reg.create("quiet").evaluate(response="hi").passed is True
    assert "broken" in reg.plugin_errors  # a broken plugin is recorded, not fatal
    assert "ExactMatch" in reg.names()
    sys.modules.pop("keel_plugin_demo", None)


def test_keel_evaluator_decorator() -> None:
    @keel_evaluator(name="MentionsPolicyT", inputs=["response"], optional=["query"], threshold=1.0)
    def mentions_policy(response: str, query: str | None = None) -> Any:
        return ("30 days" in response, "checked the policy window")

    assert mentions_policy().evaluate(response="Refunds within 30 days.").passed is True
    s = create_evaluator("MentionsPolicyT").evaluate(response="Refunds within 60 days.")
    assert s.passed is False and s.reason == "checked the policy window"

    @keel_evaluator(name="BrokenT", inputs=["response"], register=False)
    def broken(response: str) -> Any:
        raise RuntimeError("boom")

    s = broken().evaluate(response="x")
    assert s.error == "RuntimeError: boom" and s.value is None

    @keel_evaluator(name="DictT", inputs=["response"], register=False)
    def as_dict(response: str) -> Any:
        return {"score": 0.25, "reason": "quarter", "details": {"n": 1}}

    s = as_dict().evaluate(response="x")
    assert (s.score, s.passed, s.details) == (0.25, False, {"n": 1})
    with pytest.raises(InvalidInputError):
        keel_evaluator(name="X", inputs=["answer"])


def test_yaml_rubric(tmp_path: Path) -> None:
    f = tmp_path / "rubric.yaml"
    f.write_text(
        "name: PolitenessT\nrubric: The response is polite.\ninputs: [response]\nscale: [1, 3]\nthreshold: 0.9\n"
    )
    (cls,) = load_rubric(f)
    ev = cls(model=ScriptedJudgeModel(['{"score": 2, "reason": "neutral"}']))
    s = ev.evaluate(response="Fine.")
    assert isinstance(ev, LLMJudge) and s.evaluator == "PolitenessT"
    assert s.score == 0.5 and s.passed is False and s.judge_prompt_hash
    assert default_registry().get("PolitenessT") is cls
    with pytest.raises(InvalidInputError):
        load_rubric({"name": "X", "rubric": "r", "colour": "blue"})


def _span(sid: str, parent: str | None, start: int, end: int, attrs: dict[str, Any]) -> Span:
    return Span(
        trace_id="b" * 32,
        span_id=sid,
        parent_span_id=parent,
        name=sid,
        start_time_ns=start,
        end_time_ns=end,
        attributes=attrs,
    )


def test_evaluate_span_through_llmcall_view(monkeypatch: pytest.MonkeyPatch) -> None:
    span = _span(
        "0000000000000001",
        None,
        0,
        250_000_000,
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 900,
            "gen_ai.usage.output_tokens": 200,
        },
    )
    scores = evaluate_span(span, [{"MaxLatency": 200}, {"MaxTokens": 1000}, "ExactMatch"])
    lat, tok, em = scores
    assert lat.passed is False and lat.target_kind == "span" and lat.target_id == "0000000000000001"
    assert tok.passed is False  # 1,100 tokens > 1,000
    assert em.error and "needs" in em.error  # missing inputs are recorded, not raised
    with pytest.raises(InvalidInputError):
        evaluate_span(_span("0000000000000002", None, 0, 1, {"http.method": "GET"}), "ExactMatch")


def test_evaluate_trace() -> None:
    trace = Trace(
        trace_id="b" * 32,
        spans=[
            _span(
                "0000000000000001",
                None,
                0,
                1_000_000_000,
                {"gen_ai.operation.name": "invoke_agent"},
            ),
            _span(
                "0000000000000002",
                "0000000000000001",
                1,
                2,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.usage.input_tokens": 10,
                    "gen_ai.usage.output_tokens": 5,
                },
            ),
            _span(
                "0000000000000003",
                "0000000000000001",
                3,
                4,
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.usage.input_tokens": 20,
                    "gen_ai.usage.output_tokens": 5,
                },
            ),
        ],
    )
    lat, tok = evaluate_trace(trace, [{"MaxLatency": 2000}, {"TokenThreshold": {"max_input": 25}}])
    assert lat.passed is True and lat.target_kind == "trace"
    assert tok.passed is False and tok.details["tokens"]["input"] == 30


def test_evaluate_rows_aliases_mapping_and_summary() -> None:
    rows = [
        {"id": "r1", "question": "capital of France?", "answer": "Paris", "reference": "Paris"},
        {"id": "r2", "question": "capital of Italy?", "answer": "Milan", "reference": "Rome"},
        {"id": "r3", "q": "x", "a": "y", "gold": "y"},
    ]
    out = evaluate_rows(rows[:2], ["ExactMatch", {"Contains": "a"}], concurrency=2)
    assert [r[0].passed for r in out] == [True, False] and out[1][0].target_id == "r2"
    mapped = evaluate_rows(
        rows[2:], "ExactMatch", mapping={"response": "a", "expected_output": "gold"}
    )
    assert mapped[0][0].passed is True
    summary = summarize(s for r in out for s in r)
    assert summary["ExactMatch"] == {"n": 2, "errors": 0, "mean": 0.5, "pass_rate": 0.5}
    assert inputs_from_row({"input": "q", "contexts": ["c"], "agent_steps": []}) == {
        "query": "q",
        "context": ["c"],
    }


class _Pid(Evaluator):
    """Reports which process scored the row (and fails rows whose response says so)."""

    name = "PidT"
    required_inputs = frozenset({"response"})

    def __init__(self, barrier: Any = None) -> None:
        super().__init__()
        self.barrier = barrier
        self.parent = os.getpid()
        self.waited = False

    def _evaluate(self, **inputs: Any) -> EvalResult:
        if self.barrier is not None and os.getpid() != self.parent and not self.waited:
            # each worker's first row waits for the other's: both workers provably take rows
            # (without it one worker may drain every chunk of a job this small)
            self.waited = True
            self.barrier.wait(timeout=30)
        if inputs.get("response") == "boom":
            raise ValueError("boom")
        return EvalResult(1.0, details={"pid": os.getpid(), "response": inputs.get("response")})


def test_evaluate_rows_on_processes_keeps_order_errors_and_ids() -> None:
    rows = [{"id": f"r{i}", "response": "boom" if i == 7 else f"a{i}"} for i in range(40)]
    import multiprocessing

    barrier = multiprocessing.get_context("fork").Barrier(2)
    out = evaluate_rows(rows, [_Pid(barrier), "ExactMatch"], processes=2)
    assert len(out) == 40
    assert [r[0].details.get("response") for r in out if r[0].error is None] == [
        f"a{i}" for i in range(40) if i != 7
    ]
    assert [r[0].target_id for r in out] == [f"r{i}" for i in range(40)]
    assert out[7][0].error and "boom" in out[7][0].error and out[7][0].value is None
    assert out[3][1].error  # ExactMatch without expected_output: an error on the row, not a crash
    pids = {r[0].details["pid"] for r in out if r[0].error is None}
    assert os.getpid() not in pids and len(pids) == 2  # really on two worker processes
    serial = evaluate_rows(rows, [_Pid(), "ExactMatch"])
    assert [[s.value for s in r] for r in serial] == [[s.value for s in r] for r in out]


class _Nan(Evaluator):
    name = "NanT"

    def _evaluate(self, **_: Any) -> EvalResult:
        return EvalResult(float("nan"))


def test_nan_is_an_error_not_a_score() -> None:
    s = _Nan().evaluate()
    assert s.value is None and s.error and "non-finite" in s.error


def test_dataset_row_with_agent_steps() -> None:
    from keel.core.datasets import Row

    row = Row(
        id="row-1",
        input=[{"role": "user", "content": "Where is order A-77?"}],
        agent_steps=[
            {"tool": "lookup_order", "arguments": {"id": "A-77"}, "result": {"status": "shipped"}}
        ],
        metadata={},
    )
    (scores,) = evaluate_rows([row], "TaskCompletion")
    assert scores[0].score == 0.0 and scores[0].reason == "no final answer"
    (scores,) = evaluate_rows(
        [{**row.model_dump(), "response": "Order A-77 has shipped."}], "TaskCompletion"
    )
    assert scores[0].passed is True and scores[0].target_id == "row-1"
    (scores,) = evaluate_rows([{**row.model_dump(), "response": "All good!"}], "TaskCompletion")
    assert scores[0].passed is False  # the tool said "shipped"; the answer ignores it
