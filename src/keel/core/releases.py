"""Releases move a route or prompt label from a baseline to a candidate through gated ramp steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class GateRule(BaseModel):
    """One metric condition, e.g. ``Groundedness mean > 0.85``."""

    metric: str
    stat: Literal["mean", "pass_rate", "p10", "p50", "p90"] = "mean"
    op: Literal[">", ">=", "<", "<="] = ">="
    threshold: float
    max_regression: float | None = None


class Gate(BaseModel):
    """A multi-metric rule over a window with a minimum sample size and a baseline comparison."""

    rules: list[GateRule]
    window_s: float = 600
    min_samples: int = 30
    compare_to_baseline: bool = True
    confidence: float = 0.95


class ReleaseStep(BaseModel):
    """One ramp step."""

    percent: float
    hold_s: float = 600


class Release(BaseModel):
    """A gated rollout."""

    id: str
    project_id: str
    subject: str  # "route:support" or "prompt:refund-agent"
    baseline: str
    candidate: str
    steps: list[ReleaseStep]
    gate: Gate
    state: Literal["pending", "ramping", "holding", "promoted", "rolled_back", "aborted"] = (
        "pending"
    )
    current_step: int = 0
    created_at: datetime
    details: dict[str, Any] = Field(default_factory=dict)
