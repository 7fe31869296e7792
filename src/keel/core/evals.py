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
