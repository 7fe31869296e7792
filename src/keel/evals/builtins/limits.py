"""Latency, cost and token thresholds over a row's or span's measurements.

Each passes when the measurement is at or under its limit; the value is ``min(1, limit /
measured)`` so a run's mean shows how far over budget rows went.
"""

from __future__ import annotations

from typing import Any, ClassVar

from keel.evals.base import EvalResult, Evaluator


def _ratio(limit: float, measured: float) -> float:
    if measured <= 0:
        return 1.0
    return min(1.0, limit / measured)


class LatencyThreshold(Evaluator):
    """``latency_ms <= max_ms``."""

    name = "LatencyThreshold"
    aliases = ("Latency", "MaxLatency")
    required_inputs = frozenset({"latency_ms"})
    short_arg: ClassVar[str] = "max_ms"

    def __init__(self, max_ms: float, *, threshold: float | None = None) -> None:
        super().__init__(threshold=threshold, max_ms=float(max_ms))
        self.max_ms = float(max_ms)

    def _evaluate(self, *, latency_ms: Any, **_: Any) -> EvalResult:
        v = float(latency_ms)
        ok = v <= self.max_ms
        return EvalResult(
            _ratio(self.max_ms, v),
            f"latency {v:.0f} ms {'<=' if ok else '>'} {self.max_ms:.0f} ms",
            {"latency_ms": v},
            passed=ok,
        )


class CostThreshold(Evaluator):
    """``cost_usd <= max_usd``."""

    name = "CostThreshold"
    aliases = ("Cost", "MaxCost")
    required_inputs = frozenset({"cost_usd"})
    short_arg: ClassVar[str] = "max_usd"

    def __init__(self, max_usd: float, *, threshold: float | None = None) -> None:
        super().__init__(threshold=threshold, max_usd=float(max_usd))
        self.max_usd = float(max_usd)

    def _evaluate(self, *, cost_usd: Any, **_: Any) -> EvalResult:
        v = float(cost_usd)
        ok = v <= self.max_usd
        return EvalResult(
            _ratio(self.max_usd, v),
            f"cost ${v:.6f} {'<=' if ok else '>'} ${self.max_usd:.6f}",
            {"cost_usd": v},
            passed=ok,
        )


class TokenThreshold(Evaluator):
    """Input, output and/or total tokens under their limits (each limit optional)."""

    name = "TokenThreshold"
    aliases = ("Tokens", "MaxTokens")
    optional_inputs = frozenset({"input_tokens", "output_tokens"})
    short_arg: ClassVar[str] = "max_total"

    def __init__(
        self,
        max_total: int | None = None,
        *,
        max_input: int | None = None,
        max_output: int | None = None,
        threshold: float | None = None,
    ) -> None:
        if max_total is None and max_input is None and max_output is None:
            raise ValueError("TokenThreshold needs max_total, max_input or max_output")
        super().__init__(
            threshold=threshold, max_total=max_total, max_input=max_input, max_output=max_output
        )
        self.limits = {"total": max_total, "input": max_input, "output": max_output}

    def _evaluate(
        self, *, input_tokens: Any = None, output_tokens: Any = None, **_: Any
    ) -> EvalResult:
        measured: dict[str, float] = {}
        if input_tokens is not None:
            measured["input"] = float(input_tokens)
        if output_tokens is not None:
            measured["output"] = float(output_tokens)
        if measured:
            measured["total"] = sum(measured.values())
        checked = {
            k: (lim, measured[k])
            for k, lim in self.limits.items()
            if lim is not None and k in measured
        }
        if not checked:
            raise ValueError("TokenThreshold needs the token counts its limits name")
        over = [f"{k} {m:.0f} > {lim}" for k, (lim, m) in checked.items() if m > lim]
        value = min(_ratio(lim, m) for lim, m in checked.values())
        return EvalResult(
            value, "; ".join(over) or "within token limits", {"tokens": measured}, passed=not over
        )


EVALUATORS = [LatencyThreshold, CostThreshold, TokenThreshold]
