"""Scores, evaluator references and eval runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EvaluatorRef(BaseModel):
    """Names an evaluator at a version, with the config it ran with."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    config_hash: str | None = None


class Score(BaseModel):
    """One evaluator's verdict on one row or span."""

    evaluator: str
    evaluator_version: str = "1"
    value: float | None = Field(
        default=None, description="in [0, 1]; None when the evaluation errored"
    )
    passed: bool | None = None
    threshold: float | None = None
    reason: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    judge_model: str | None = None
    judge_prompt_hash: str | None = Field(
        default=None, description="content hash of the judge prompt version, when a judge ran"
    )
    error: str | None = None
    latency_ms: float | None = None
    target_kind: Literal["row", "span", "trace", "adhoc"] = "adhoc"
    target_id: str | None = None

    @property
    def score(self) -> float | None:
        """Alias of ``value`` (the name users of peer libraries expect)."""
        return self.value


class GateVerdict(BaseModel):
    """The outcome of a gate: passed or not, and each rule's evidence."""

    passed: bool
    checks: list[dict[str, Any]] = Field(default_factory=list)
    summary: str = ""


class EvalRun(BaseModel):
    """A stored evaluation run, pinned to everything that determines its result."""

    id: str
    project_id: str
    suite: str | None = None
    status: Literal["running", "completed", "failed", "aborted"] = "running"
    target: str | None = None
    prompt_name: str | None = None
    prompt_version: int | None = None
    dataset_name: str | None = None
    dataset_version: int | None = None
    route: str | None = None
    model: str | None = None
    evaluators: list[EvaluatorRef] = Field(default_factory=list)
    config_hash: str | None = None
    verdict: GateVerdict | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    finished_at: datetime | None = None


class EvalRowResult(BaseModel):
    """One row × repeat of an eval run: the target's output and every evaluator's score.

    ``error`` is set when the target failed on this row (the run goes on); an evaluator's own
    failure is recorded on its Score instead.
    """

    run_id: str
    row_id: str
    repeat: int = 0
    row_index: int = 0
    input: Any = None
    expected_output: Any = None
    output: Any = None
    error: str | None = None
    scores: list[Score] = Field(default_factory=list)
    latency_ms: float | None = None
    cost_usd: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached: bool = False
    request_hash: str | None = None
    trace_id: str | None = None
    created_at: datetime | None = None

    def score_for(self, evaluator: str) -> Score | None:
        """This row's score from ``evaluator`` (by name), if any."""
        return next((s for s in self.scores if s.evaluator == evaluator), None)
