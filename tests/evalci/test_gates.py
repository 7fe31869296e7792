"""Gate statistics: thresholds, quantiles, the paired bootstrap, margin × significance."""

from __future__ import annotations

import random

import numpy as np
import pytest

from keel.core.evals import EvalRowResult, Score
from keel.errors import ConfigError
from keel.evals.gates import (
    GateSpec,
    RegressionRule,
    bootstrap_mean_ci,
    evaluate_gate,
    flipped_rows,
    parse_rule,
    quantile,
)


def rows(
    values: list[float | None],
    name: str = "Groundedness",
    threshold: float = 0.5,
    run: str = "r",
    error_rows: tuple[int, ...] = (),
) -> list[EvalRowResult]:
    out = []
    for i, v in enumerate(values):
        out.append(
            EvalRowResult(
                run_id=run,
                row_id=f"row{i}",
                row_index=i,
                error="boom" if i in error_rows else None,
                cost_usd=0.01,
                scores=[
                    Score(
                        evaluator=name,
                        value=v,
                        passed=None if v is None else v >= threshold,
                        error=None if v is not None else "x",
                    )
                ],
            )
        )
    return out


def test_parse_rule_forms():
    r = parse_rule("groundedness.mean>=0.8")
    assert (r.evaluator, r.metric, r.op, r.value) == ("groundedness", "mean", ">=", 0.8)
    assert parse_rule("exact_match>=0.9").metric == "mean"
    assert parse_rule("exact_match.p10 > 0.25").metric == "p10"
    assert parse_rule("cost_usd<=2").evaluator is None
    assert parse_rule("error_rate<=0.05").metric == "error_rate"
    for bad in ("groundedness.mean", "groundedness.avg>=1", ">=1", "x.mean>=abc"):
        with pytest.raises(ConfigError):
            parse_rule(bad)


def test_quantile_matches_numpy():
    rnd = random.Random(1)
    vals = [rnd.random() for _ in range(101)]
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        assert quantile(vals, q) == pytest.approx(float(np.quantile(vals, q)))


def test_thresholds_mean_pass_rate_quantile_and_names_match_loosely():
    res = rows([1.0, 0.9, 0.8, 0.2, 0.1])
    spec = GateSpec(
        rules=["groundedness.mean>=0.6", "Groundedness.pass_rate>=0.6", "grounded-ness.p10>=0.3"]
    )
    v, _ = evaluate_gate(spec, res)
    by = {c["name"]: c for c in v.checks}
    assert by["groundedness.mean>=0.6"]["passed"] is True  # mean 0.6
    assert by["Groundedness.pass_rate>=0.6"]["passed"] is True  # 3/5
    assert by["grounded-ness.p10>=0.3"]["passed"] is False  # p10 = 0.14
    assert not v.passed and "p10" in v.summary


def test_min_samples_cost_cap_error_rate_and_missing_evaluator():
    res = rows([1.0, 1.0, None, 1.0], error_rows=(2,))
    v, _ = evaluate_gate(GateSpec(rules=["groundedness.mean>=0.5"], min_samples=5), res)
    assert not v.passed and any(c["kind"] == "min_samples" and not c["passed"] for c in v.checks)
    v, _ = evaluate_gate(GateSpec(max_cost_usd=0.03), res)
    assert not v.passed and v.checks[0]["observed"] == pytest.approx(0.04)
    v, _ = evaluate_gate(GateSpec(max_cost_usd=0.05, max_error_rate=0.3), res)
    assert v.passed
    v, _ = evaluate_gate(GateSpec(max_error_rate=0.2), res)
    assert not v.passed
    v, _ = evaluate_gate(GateSpec(rules=["nope.mean>=0"]), res)
    assert not v.passed and "no such evaluator" in str(v.checks)


def test_bootstrap_is_seeded_and_covers_the_mean():
    rnd = random.Random(7)
    d = [rnd.gauss(-0.1, 0.2) for _ in range(400)]
    a = bootstrap_mean_ci(d, seed=3)
    b = bootstrap_mean_ci(d, seed=3)
    assert a == b
    lo, hi, p = a
    assert lo < sum(d) / len(d) < hi
    assert hi < 0 and p < 0.01
    lo2, hi2, _ = bootstrap_mean_ci([0.0] * 50)
    assert lo2 == hi2 == 0.0


def _pair(base: list[float], cand: list[float], **rule) -> dict:
    spec = GateSpec(regression=RegressionRule(**rule))
    v, comps = evaluate_gate(
        spec, rows(cand, run="c"), baseline=rows(base, run="b"), baseline_run_id="run_b"
    )
    checks = [c for c in v.checks if c["kind"] == "regression"]
    assert len(checks) == 1
    return {"verdict": v, **checks[0], "cmp": comps[0] if comps else None}


def test_regression_fails_only_when_large_and_significant():
    rnd = random.Random(0)
    base = [min(1.0, max(0.0, 0.8 + rnd.gauss(0, 0.05))) for _ in range(200)]
    # a clear drop of 0.2 on every row: large and significant
    c = _pair(base, [b - 0.2 for b in base], margin=0.05)
    assert c["passed"] is False and c["drop_exceeds_margin"] and c["significant"]
    assert "regressed" in c["detail"] and c["baseline_run"] == "run_b"
    # a tiny but consistent drop: significant, within margin -> passes, and says so
    c = _pair(base, [b - 0.01 for b in base], margin=0.05)
    assert c["passed"] is True and c["significant"] and not c["drop_exceeds_margin"]
    assert "within margin" in c["detail"]
    # a large drop on average but noise dominates (few rows, huge spread): not significant
    noisy_b = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    noisy_c = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    c = _pair(noisy_b, noisy_c, margin=0.05)
    assert c["drop_exceeds_margin"] is True and c["significant"] is False and c["passed"] is True
    assert "not significant" in c["detail"]
    # improvement
    c = _pair(base, [min(1.0, b + 0.1) for b in base], margin=0.0)
    assert c["passed"] is True and c["mean_delta"] > 0


def test_regression_pairs_by_row_and_needs_min_pairs():
    base = rows([0.9] * 20, run="b")
    cand = rows([0.9] * 5, run="c")  # only 5 rows overlap
    v, comps = evaluate_gate(GateSpec(regression=RegressionRule(min_pairs=10)), cand, baseline=base)
    assert not v.passed and comps[0].n_pairs == 5 and "paired row" in v.summary + str(v.checks)
    v, _ = evaluate_gate(GateSpec(regression=RegressionRule()), cand, baseline=None)
    assert v.passed and v.checks[-1]["skipped"]


def test_repeats_are_averaged_per_row_before_pairing():
    base = rows([1.0, 1.0], run="b")
    cand = [
        *rows([1.0, 1.0], run="c"),
        EvalRowResult(
            run_id="c",
            row_id="row0",
            repeat=1,
            scores=[Score(evaluator="Groundedness", value=0.0, passed=False)],
        ),
    ]
    _, comps = evaluate_gate(GateSpec(regression=RegressionRule(min_pairs=1)), cand, baseline=base)
    assert comps[0].deltas == {"row0": -0.5, "row1": 0.0}


def test_flipped_rows():
    base = rows([0.9, 0.1, 0.9], run="b")
    cand = rows([0.1, 0.9, 0.9], run="c")
    fl = flipped_rows(cand, base)
    assert [(f["row_id"], f["direction"]) for f in fl] == [("row0", "broke"), ("row1", "fixed")]
