"""Registers the judge-backed evaluators (LLMJudge, Hybrid) with the built-ins."""

from __future__ import annotations

from keel.evals.judge import Hybrid, LLMJudge

EVALUATORS = [LLMJudge, Hybrid]
