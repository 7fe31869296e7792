"""Gates: decide from a run's row results whether a change may ship.

Two kinds of rule:

* **absolute thresholds** per evaluator over the rows: ``mean``, ``pass_rate``, a quantile
  (``p10``, ``p50``, ``p90`` ...), ``min``, ``error_rate``; written ``groundedness.mean>=0.8``;
* **regression against a baseline run** on the same dataset version: rows are paired by id
  (repeats averaged first), the per-row deltas are bootstrapped (seeded, so the verdict is
  reproducible) into a confidence interval of the mean delta, and the rule fails only when the
  drop is **both** larger than the stated margin **and** statistically significant (the whole
  interval lies below zero). The check says which of the two held.

Plus a minimum sample size and a cost cap. Everything here is pure: results in, verdict out.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from keel.core.evals import EvalRowResult, GateVerdict
from keel.errors import ConfigError

Op = Literal[">=", ">", "<=", "<", "=="]
_OPS: dict[str, Any] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: math.isclose(a, b, abs_tol=1e-12),
}
_METRIC_RE = re.compile(r"^(mean|pass_rate|error_rate|min|max|median|p\d{1,2}(\.\d+)?)$")
_RULE_RE = re.compile(
    r"^\s*(?P<lhs>[A-Za-z0-9_\-.]+)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>-?\d+(\.\d+)?(e-?\d+)?)\s*$"
)
RUN_METRICS = frozenset({"cost_usd", "error_rate", "rows"})


class ThresholdRule(BaseModel):
    """``<evaluator>.<metric> <op> <value>``, or a run metric (``cost_usd<=2``, ``error_rate<=0.05``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    evaluator: str | None = Field(
        None, description="evaluator name; None for a run metric (cost_usd, error_rate, rows)"
    )
    metric: str = Field("mean", description="mean, pass_rate, error_rate, min, max, median, pNN")
    op: Op = ">="
    value: float

    @field_validator("metric")
    @classmethod
    def _check_metric(cls, v: str) -> str:
        if not _METRIC_RE.match(v) and v not in RUN_METRICS:
            raise ValueError(
                f"unknown metric {v!r}: use mean, pass_rate, error_rate, min, max, median or pNN"
            )
        return v

    def label(self) -> str:
        """The rule as written: ``groundedness.mean>=0.8``."""
        lhs = self.metric if self.evaluator is None else f"{self.evaluator}.{self.metric}"
        return f"{lhs}{self.op}{self.value:g}"


def parse_rule(text: str) -> ThresholdRule:
    """Parse ``groundedness.mean>=0.8``, ``exact_match>=0.9`` (mean), ``cost_usd<=1``.

    Raises :class:`ConfigError` with the accepted forms when the text does not parse.
    """
    m = _RULE_RE.match(text)
    if not m:
        raise ConfigError(
            f"cannot parse gate {text!r}",
            hint="write EVALUATOR.METRIC>=VALUE, e.g. groundedness.mean>=0.8 or exact_match.pass_rate>=0.9",
        )
    lhs, op, value = m.group("lhs"), m.group("op"), float(m.group("value"))
    if lhs in RUN_METRICS:
        return ThresholdRule(evaluator=None, metric=lhs, op=op, value=value)  # type: ignore[arg-type]
    name, _, metric = lhs.rpartition(".")
    if not name:
        name, metric = lhs, "mean"
    try:
        return ThresholdRule(evaluator=name, metric=metric, op=op, value=value)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConfigError(f"bad gate {text!r}: {e}")


class RegressionRule(BaseModel):
    """Fail when a paired, significant drop larger than ``margin`` appears against the baseline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    evaluators: list[str] | None = Field(None, description="evaluators to compare; None = all")
    metric: Literal["mean", "pass_rate"] = Field(
        "mean", description="per-row quantity compared: score value or pass (1/0)"
    )
    margin: float = Field(0.02, ge=0, description="tolerated drop of the mean (absolute)")
    confidence: float = Field(0.95, gt=0.5, lt=1)
    resamples: int = Field(2000, ge=100, le=100_000)
    seed: int = 0
    min_pairs: int = Field(10, ge=1, description="fewer paired rows than this fails the rule")


class GateSpec(BaseModel):
    """Everything a gate checks."""

    model_config = ConfigDict(extra="forbid")

    rules: list[ThresholdRule] = Field(default_factory=list)
    min_samples: int = Field(1, ge=0, description="rows needed per gated evaluator")
    max_cost_usd: float | None = Field(None, ge=0)
    max_error_rate: float | None = Field(
        None, ge=0, le=1, description="share of rows whose target failed"
    )
    regression: RegressionRule | None = None

    @field_validator("rules", mode="before")
    @classmethod
    def _parse_strings(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [parse_rule(x) if isinstance(x, str) else x for x in v]
        return v


# --------------------------------------------------------------------------- statistics


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), ``q`` in [0, 1]."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class EvaluatorStats:
    """One evaluator's aggregate over a run (repeats averaged per row first)."""

    name: str
    n: int = 0
    errors: int = 0
    row_values: dict[str, float] = field(default_factory=dict)
    row_pass: dict[str, float] = field(default_factory=dict)

    def metric(self, metric: str) -> float:
        """``mean``, ``pass_rate``, ``error_rate``, ``min``, ``max``, ``median`` or ``pNN``."""
        vals = list(self.row_values.values())
        if metric == "error_rate":
            total = self.n + self.errors
            return self.errors / total if total else math.nan
        if not vals:
            return math.nan
        if metric == "mean":
            return sum(vals) / len(vals)
        if metric == "pass_rate":
            p = list(self.row_pass.values())
            return sum(p) / len(p) if p else math.nan
        if metric == "min":
            return min(vals)
        if metric == "max":
            return max(vals)
        if metric == "median":
            return quantile(vals, 0.5)
        if metric.startswith("p"):
            return quantile(vals, float(metric[1:]) / 100.0)
        raise ConfigError(f"unknown metric {metric!r}")

    def summary(self) -> dict[str, Any]:
        """The figures reports show."""
        vals = list(self.row_values.values())
        return {
            "n": self.n,
            "rows": len(vals),
            "errors": self.errors,
            "mean": _clean(self.metric("mean")),
            "pass_rate": _clean(self.metric("pass_rate")),
            "p10": _clean(self.metric("p10")),
            "p50": _clean(self.metric("p50")),
        }


def _clean(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(x, 6)


def evaluator_stats(results: Iterable[EvalRowResult]) -> dict[str, EvaluatorStats]:
    """Per-evaluator stats; each row's repeats are averaged into one value."""
    acc: dict[str, dict[str, list[tuple[float, float]]]] = {}
    errs: dict[str, int] = {}
    counts: dict[str, int] = {}
    for r in results:
        for s in r.scores:
            if s.value is None:
                errs[s.evaluator] = errs.get(s.evaluator, 0) + 1
                acc.setdefault(s.evaluator, {})
                continue
            counts[s.evaluator] = counts.get(s.evaluator, 0) + 1
            passed = 1.0 if s.passed else 0.0
            acc.setdefault(s.evaluator, {}).setdefault(r.row_id, []).append((s.value, passed))
    out: dict[str, EvaluatorStats] = {}
    for name, rows in acc.items():
        st = EvaluatorStats(name=name, n=counts.get(name, 0), errors=errs.get(name, 0))
        for row_id, pairs in rows.items():
            st.row_values[row_id] = sum(v for v, _ in pairs) / len(pairs)
            st.row_pass[row_id] = sum(p for _, p in pairs) / len(pairs)
        out[name] = st
    return out


@dataclass
class PairedComparison:
    """Candidate minus baseline on the rows both runs scored."""

    evaluator: str
    metric: str
    n_pairs: int
    baseline_mean: float
    candidate_mean: float
    mean_delta: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    deltas: dict[str, float]

    @property
    def significant_drop(self) -> bool:
        """The whole confidence interval of the mean delta lies below zero."""
        return self.ci_high < 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly figures (without the per-row deltas)."""
        return {
            "evaluator": self.evaluator,
            "metric": self.metric,
            "n_pairs": self.n_pairs,
            "baseline_mean": round(self.baseline_mean, 6),
            "candidate_mean": round(self.candidate_mean, 6),
            "mean_delta": round(self.mean_delta, 6),
            "ci_low": round(self.ci_low, 6),
            "ci_high": round(self.ci_high, 6),
            "p_value": round(self.p_value, 6),
            "confidence": self.confidence,
        }


def bootstrap_mean_ci(
    deltas: Sequence[float], *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap CI of the mean, and the one-sided p-value of "mean >= 0".

    Seeded: the same inputs give the same interval in every process.
    """
    n = len(deltas)
    if n == 0:
        return math.nan, math.nan, math.nan
    alpha = (1 - confidence) / 2
    try:
        import numpy as np

        arr = np.asarray(deltas, dtype=float)
        rng = np.random.Generator(np.random.PCG64(seed))
        means = np.empty(resamples)
        step = max(1, 2_000_000 // max(n, 1))  # bound memory: step resamples at a time
        for i in range(0, resamples, step):
            k = min(step, resamples - i)
            idx = rng.integers(0, n, size=(k, n))
            means[i : i + k] = arr[idx].mean(axis=1)
        lo, hi = np.quantile(means, [alpha, 1 - alpha])
        p = float(((means >= 0).sum() + 1) / (resamples + 1))
        return float(lo), float(hi), p
    except ImportError:  # pragma: no cover - numpy ships with the server extras
        rnd = random.Random(seed)
        ms = []
        for _ in range(resamples):
            ms.append(sum(deltas[rnd.randrange(n)] for _ in range(n)) / n)
        p = (sum(1 for m in ms if m >= 0) + 1) / (resamples + 1)
        return quantile(ms, alpha), quantile(ms, 1 - alpha), p


def compare_paired(
    candidate: EvaluatorStats, baseline: EvaluatorStats, rule: RegressionRule
) -> PairedComparison:
    """Pair rows by id and bootstrap the mean delta (candidate - baseline)."""
    c_rows = candidate.row_values if rule.metric == "mean" else candidate.row_pass
    b_rows = baseline.row_values if rule.metric == "mean" else baseline.row_pass
    ids = sorted(set(c_rows) & set(b_rows))
    deltas = {i: c_rows[i] - b_rows[i] for i in ids}
    d = [deltas[i] for i in ids]
    if not d:
        nan = math.nan
        return PairedComparison(
            candidate.name, rule.metric, 0, nan, nan, nan, nan, nan, nan, rule.confidence, {}
        )
    lo, hi, p = bootstrap_mean_ci(
        d, confidence=rule.confidence, resamples=rule.resamples, seed=rule.seed
    )
    return PairedComparison(
        evaluator=candidate.name,
        metric=rule.metric,
        n_pairs=len(d),
        baseline_mean=sum(b_rows[i] for i in ids) / len(ids),
        candidate_mean=sum(c_rows[i] for i in ids) / len(ids),
        mean_delta=sum(d) / len(d),
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        confidence=rule.confidence,
        deltas=deltas,
    )


# --------------------------------------------------------------------------- the gate


def norm_name(name: str) -> str:
    """Evaluator names match loosely: ``ExactMatch`` = ``exact_match`` = ``exact-match``."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _lookup(stats: dict[str, EvaluatorStats], name: str) -> EvaluatorStats | None:
    if name in stats:
        return stats[name]
    n = norm_name(name)
    return next((v for k, v in stats.items() if norm_name(k) == n), None)


def evaluate_gate(
    spec: GateSpec,
    results: Sequence[EvalRowResult],
    *,
    baseline: Sequence[EvalRowResult] | None = None,
    baseline_run_id: str | None = None,
    total_cost_usd: float | None = None,
) -> tuple[GateVerdict, list[PairedComparison]]:
    """Check every rule; the verdict passes only when each check passes.

    ``baseline`` must come from a run on the same dataset version (the caller checks the
    pins). Returns the verdict and the paired comparisons (for reports).
    """
    stats = evaluator_stats(results)
    checks: list[dict[str, Any]] = []
    n_rows = len({r.row_id for r in results})
    target_errors = len({r.row_id for r in results if r.error})
    cost = (
        total_cost_usd
        if total_cost_usd is not None
        else sum(r.cost_usd or 0.0 for r in results if not r.cached)
    )

    gated = {r.evaluator for r in spec.rules if r.evaluator} | set(
        (spec.regression.evaluators or stats.keys()) if spec.regression else []
    )
    for name in sorted(gated):
        found = _lookup(stats, name)
        have = len(found.row_values) if found else 0
        if have < spec.min_samples or found is None:
            checks.append(
                {
                    "kind": "min_samples",
                    "name": f"{name}.rows>={spec.min_samples}",
                    "passed": False,
                    "observed": have,
                    "expected": spec.min_samples,
                    "detail": f"{name}: {have} scored row(s), the gate needs {spec.min_samples}"
                    if found is not None
                    else f"{name}: no such evaluator in this run",
                }
            )

    for rule in spec.rules:
        if rule.evaluator is None:
            observed = {
                "cost_usd": cost,
                "error_rate": target_errors / n_rows if n_rows else 0.0,
                "rows": float(n_rows),
            }[rule.metric]
        else:
            st = _lookup(stats, rule.evaluator)
            observed = st.metric(rule.metric) if st else math.nan
        ok = not math.isnan(observed) and bool(_OPS[rule.op](observed, rule.value))
        checks.append(
            {
                "kind": "threshold",
                "name": rule.label(),
                "passed": ok,
                "observed": _clean(observed),
                "expected": f"{rule.op}{rule.value:g}",
                "detail": f"observed {_fmt(observed)}, needs {rule.op}{rule.value:g}",
            }
        )

    if spec.max_cost_usd is not None:
        ok = cost <= spec.max_cost_usd
        checks.append(
            {
                "kind": "cost",
                "name": f"cost_usd<={spec.max_cost_usd:g}",
                "passed": ok,
                "observed": round(cost, 6),
                "expected": f"<={spec.max_cost_usd:g}",
                "detail": f"spent ${cost:.4f} of ${spec.max_cost_usd:g}",
            }
        )
    if spec.max_error_rate is not None:
        rate = target_errors / n_rows if n_rows else 0.0
        ok = rate <= spec.max_error_rate
        checks.append(
            {
                "kind": "errors",
                "name": f"error_rate<={spec.max_error_rate:g}",
                "passed": ok,
                "observed": round(rate, 6),
                "expected": f"<={spec.max_error_rate:g}",
                "detail": f"{target_errors} of {n_rows} row(s) failed in the target",
            }
        )

    comparisons: list[PairedComparison] = []
    if spec.regression is not None:
        reg = spec.regression
        if baseline is None:
            checks.append(
                {
                    "kind": "regression",
                    "name": "regression vs baseline",
                    "passed": True,
                    "skipped": True,
                    "detail": "no baseline run: regression check skipped",
                }
            )
        else:
            bstats = evaluator_stats(baseline)
            for name in sorted(reg.evaluators or stats.keys()):
                cst, bst = _lookup(stats, name), _lookup(bstats, name)
                if cst is None or bst is None:
                    checks.append(
                        {
                            "kind": "regression",
                            "name": f"{name} vs baseline",
                            "passed": False,
                            "detail": f"{name} is missing from the "
                            + ("candidate" if cst is None else "baseline")
                            + " run",
                        }
                    )
                    continue
                cmp = compare_paired(cst, bst, reg)
                comparisons.append(cmp)
                checks.append(_regression_check(cmp, reg, baseline_run_id))

    passed = all(c["passed"] for c in checks)
    failed = [c["name"] for c in checks if not c["passed"]]
    summary = (
        f"gate passed ({len(checks)} check(s))" if passed else f"gate failed: {', '.join(failed)}"
    )
    return GateVerdict(passed=passed, checks=checks, summary=summary), comparisons


def _regression_check(
    cmp: PairedComparison, rule: RegressionRule, baseline_run_id: str | None
) -> dict[str, Any]:
    base = {
        "kind": "regression",
        "name": f"{cmp.evaluator}.{cmp.metric} vs baseline",
        "baseline_run": baseline_run_id,
        "margin": rule.margin,
        **cmp.as_dict(),
    }
    if cmp.n_pairs < rule.min_pairs:
        return {
            **base,
            "passed": False,
            "drop_exceeds_margin": None,
            "significant": None,
            "detail": f"only {cmp.n_pairs} paired row(s) with the baseline; need {rule.min_pairs}",
        }
    drop = -cmp.mean_delta
    exceeds = drop > rule.margin
    significant = cmp.significant_drop
    ci = f"{int(rule.confidence * 100)}% CI [{cmp.ci_low:+.4f}, {cmp.ci_high:+.4f}]"
    if exceeds and significant:
        why = f"regressed: drop {drop:.4f} > margin {rule.margin:g} and significant ({ci}, p={cmp.p_value:.4f})"
    elif exceeds:
        why = f"drop {drop:.4f} > margin {rule.margin:g} but not significant ({ci}); not failing"
    elif significant:
        why = f"significant drop {drop:.4f} ({ci}) but within margin {rule.margin:g}; not failing"
    else:
        why = f"no regression: delta {cmp.mean_delta:+.4f} ({ci})"
    return {
        **base,
        "passed": not (exceeds and significant),
        "drop_exceeds_margin": exceeds,
        "significant": significant,
        "detail": why,
    }


def _fmt(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.4f}"


def flipped_rows(
    candidate: Sequence[EvalRowResult], baseline: Sequence[EvalRowResult]
) -> list[dict[str, Any]]:
    """Rows whose pass/fail changed per evaluator (repeats: majority pass)."""
    cs, bs = evaluator_stats(candidate), evaluator_stats(baseline)
    out = []
    for name in sorted(set(cs) & set(bs)):
        for row_id in sorted(set(cs[name].row_pass) & set(bs[name].row_pass)):
            c, b = cs[name].row_pass[row_id] >= 0.5, bs[name].row_pass[row_id] >= 0.5
            if c != b:
                out.append(
                    {
                        "evaluator": name,
                        "row_id": row_id,
                        "baseline_passed": b,
                        "candidate_passed": c,
                        "baseline_value": round(bs[name].row_values[row_id], 6),
                        "candidate_value": round(cs[name].row_values[row_id], 6),
                        "direction": "fixed" if c else "broke",
                    }
                )
    return out
