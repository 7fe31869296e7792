"""The evaluator contract: a small class with a name, a version, declared inputs and a threshold.

Usage::

    Contains(value="refund").evaluate(response=answer)   # -> Score(.score, .passed, .reason)

Subclasses implement :meth:`Evaluator._evaluate` and return a value in [0, 1] (higher is better
unless ``higher_is_better`` is False) plus a reason and details; the base class validates
inputs, applies the threshold, times the call and turns exceptions into a recorded error on the
Score (never NaN, never an abort). Evaluators are synchronous; batch helpers run them on a
thread pool (see :mod:`keel.evals.evaluate`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from keel.core.evals import EvaluatorRef, Score
from keel.core.hashing import content_hash
from keel.errors import InvalidInputError

# The inputs an evaluator may declare; batch rows and spans are mapped onto these names.
INPUT_NAMES = frozenset(
    {
        "query",
        "response",
        "context",
        "expected_output",
        "tool_calls",
        "expected_tool_calls",
        "available_tools",
        "messages",
        "trace",
        "latency_ms",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "metadata",
    }
)


@dataclass
class EvalResult:
    """What an evaluator computes before the base class wraps it into a Score.

    ``error`` marks a failed evaluation that still carries evidence (for example a judge that
    answered garbage three times): the Score gets ``value=None`` and the error text.
    """

    value: float | None
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    judge_model: str | None = None
    judge_prompt_hash: str | None = None
    passed: bool | None = None  # set to override the threshold rule
    error: str | None = None


class Evaluator:
    """Base class of every evaluator.

    Class attributes describe the evaluator (``name``, ``version``, ``required_inputs``,
    ``optional_inputs``, ``default_threshold``, ``higher_is_better``); constructor keywords
    configure one instance (``threshold=`` plus evaluator-specific options, kept in
    ``self.config`` and hashed into eval runs).
    """

    name: ClassVar[str] = "evaluator"
    version: ClassVar[str] = "1"
    required_inputs: ClassVar[frozenset[str]] = frozenset()
    optional_inputs: ClassVar[frozenset[str]] = frozenset()
    default_threshold: ClassVar[float] = 0.5
    higher_is_better: ClassVar[bool] = True

    def __init__(self, *, threshold: float | None = None, **config: Any) -> None:
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        self.config = config

    @property
    def id(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"

    def config_dict(self) -> dict[str, Any]:
        """The configuration that determines results (hashed into eval runs)."""
        return {
            "name": self.name,
            "version": self.version,
            "threshold": self.threshold,
            **self.config,
        }

    def ref(self) -> EvaluatorRef:
        """An :class:`EvaluatorRef` naming this evaluator, its version and its config hash."""
        try:
            h: str | None = content_hash(self.config_dict())
        except (TypeError, ValueError):
            h = None
        return EvaluatorRef(name=self.name, version=self.version, config_hash=h)

    @property
    def inputs(self) -> frozenset[str]:
        """Every input this evaluator reads (required and optional)."""
        return self.required_inputs | self.optional_inputs

    # Subclasses define ``_evaluate(self, *, <their inputs>, **_)``; declared as a callable
    # attribute so each may name its own keyword inputs.
    _evaluate: Callable[..., EvalResult]

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(inputs) - INPUT_NAMES
        if unknown:
            raise InvalidInputError(
                f"{self.name} got unknown input(s) {sorted(unknown)}",
                hint=f"inputs are {sorted(INPUT_NAMES)}",
            )
        missing = [k for k in self.required_inputs if inputs.get(k) is None]
        if missing:
            raise InvalidInputError(
                f"{self.name} needs {sorted(missing)}",
                hint=f"pass {', '.join(sorted(missing))}=...",
            )
        allowed = self.inputs
        return {k: v for k, v in inputs.items() if k in allowed and v is not None}

    def _error_score(self, error: str, t0: float, res: EvalResult | None = None) -> Score:
        return Score(
            evaluator=self.name,
            evaluator_version=self.version,
            value=None,
            passed=None,
            threshold=self.threshold,
            reason=res.reason if res else None,
            details=res.details if res else {},
            judge_model=res.judge_model if res else None,
            judge_prompt_hash=res.judge_prompt_hash if res else None,
            error=error,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )

    def evaluate(self, **inputs: Any) -> Score:
        """Evaluate one example. Missing inputs raise; evaluator failures become ``Score.error``."""
        clean = self._check_inputs(inputs)
        t0 = time.perf_counter()
        try:
            res = self._evaluate(**clean)
        except InvalidInputError:
            raise
        except Exception as e:  # recorded on the row, never an aborted run
            return self._error_score(f"{type(e).__name__}: {e}", t0)
        if res.error is not None:
            return self._error_score(res.error, t0, res)
        if res.value is None or not math.isfinite(float(res.value)):
            return self._error_score(
                f"evaluator returned a non-finite value {res.value!r}", t0, res
            )
        value = min(1.0, max(0.0, float(res.value)))
        if res.passed is not None:
            passed = res.passed
        elif self.higher_is_better:
            passed = value >= self.threshold
        else:
            passed = value <= self.threshold
        return Score(
            evaluator=self.name,
            evaluator_version=self.version,
            value=value,
            passed=passed,
            threshold=self.threshold,
            reason=res.reason,
            details=res.details,
            judge_model=res.judge_model,
            judge_prompt_hash=res.judge_prompt_hash,
            latency_ms=(time.perf_counter() - t0) * 1000,
        )

    def evaluate_many(self, rows: Iterable[Mapping[str, Any]]) -> list[Score]:
        """Evaluate many examples (each a mapping of inputs); see also :func:`keel.evals.evaluate.evaluate_rows`."""
        return [self.evaluate(**dict(r)) for r in rows]

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}(threshold={self.threshold}{extra})"
