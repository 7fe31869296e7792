"""One eval run from a suite, end to end: resolve, run, store, gate.

:func:`run_suite` is what ``keel eval run`` and the pytest plugin call. It creates (or resumes)
an :class:`EvalRun` pinned to the prompt version, dataset version, model or route, evaluator
versions and the suite's config hash; runs it; finds the baseline; applies the gate; and
stores the verdict. :func:`compare_runs` is ``keel eval compare``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.core.evals import EvalRowResult, EvalRun, EvaluatorRef, GateVerdict
from keel.core.hashing import content_hash
from keel.core.ids import new_id
from keel.errors import ConfigError, NotFoundError, UnavailableError
from keel.evals.gates import (
    GateSpec,
    PairedComparison,
    RegressionRule,
    evaluate_gate,
    evaluator_stats,
    flipped_rows,
)
from keel.evals.runner import EvalRunner, RunnerOptions, RunProgress
from keel.evals.suite import Suite, split_ref
from keel.evals.targets import build_evaluators, build_target, load_dataset


@dataclass
class RunOutcome:
    """Everything a report needs."""

    run: EvalRun
    results: list[EvalRowResult]
    verdict: GateVerdict
    comparisons: list[PairedComparison] = field(default_factory=list)
    baseline: EvalRun | None = None
    baseline_results: list[EvalRowResult] | None = None
    progress: RunProgress | None = None
    links: str | None = None


def run_suite(
    suite: Suite,
    store: Any,
    *,
    project_id: str,
    settings: Any = None,
    resume: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    on_start: Callable[[EvalRun, int], None] | None = None,
) -> RunOutcome:
    """Run (or resume) a suite and gate it. Raises ConfigError / NotFoundError (usage),
    UnavailableError / StoreError (runtime)."""
    return asyncio.run(
        run_suite_async(
            suite,
            store,
            project_id=project_id,
            settings=settings,
            resume=resume,
            on_progress=on_progress,
            on_start=on_start,
        )
    )


async def run_suite_async(
    suite: Suite,
    store: Any,
    *,
    project_id: str,
    settings: Any = None,
    resume: str | None = None,
    on_progress: Callable[[RunProgress], None] | None = None,
    on_start: Callable[[EvalRun, int], None] | None = None,
) -> RunOutcome:
    """The async form of :func:`run_suite`."""
    evaluators = build_evaluators(suite.evaluators)
    dataset = load_dataset(suite.dataset, store, project_id)
    resolved = build_target(suite.target, store=store, project_id=project_id, settings=settings)
    refs = [
        EvaluatorRef(
            name=e.name,
            version=e.evaluator.version,
            config_hash=content_hash(_jsonable(e.evaluator.config_dict())),
        )
        for e in evaluators
    ]
    # The config hash pins what decides results: the suite, the resolved versions, the rows.
    config_hash = content_hash(
        {
            "suite": suite.config_hash(),
            "prompt": [resolved.prompt_name, resolved.prompt_version],
            "dataset": [dataset.name, dataset.version, dataset.content_hash],
            "evaluators": [r.model_dump(mode="json") for r in refs],
        }
    )
    if resume:
        run = store.evals.get_run(resume)
        if run.project_id != project_id:
            raise NotFoundError(f"eval run {resume!r} not found in this project")
        if run.config_hash != config_hash:
            raise ConfigError(
                f"run {resume} was made with another configuration (suite, prompt, dataset or evaluators changed)",
                hint="resume with the same suite and flags, or start a new run",
            )
        run.status = "running"
        run.finished_at = None
        store.evals.put_run(run)
    else:
        run = EvalRun(
            id=new_id("run"),
            project_id=project_id,
            suite=suite.name,
            status="running",
            target=resolved.target.name,
            prompt_name=resolved.prompt_name,
            prompt_version=resolved.prompt_version,
            dataset_name=dataset.name,
            dataset_version=dataset.version,
            route=resolved.route,
            model=resolved.model,
            evaluators=refs,
            config_hash=config_hash,
            summary={"rows": len(dataset.rows), "repeat": suite.run.repeat},
            created_at=store.clock.now(),
        )
        store.evals.add_run(run)
    if on_start:
        on_start(run, len(dataset.rows) * suite.run.repeat)
    r = suite.run
    runner = EvalRunner(
        store.evals,
        resolved.target,
        evaluators,
        RunnerOptions(
            concurrency=r.concurrency,
            repeat=r.repeat,
            retries=r.retries,
            backoff_s=r.backoff_s,
            timeout_s=r.timeout_s,
            rate_limits=r.rate_limits,
            cache=r.cache,
            max_cost_usd=r.max_cost_usd,
            evaluator_threads=r.evaluator_threads,
        ),
        on_progress=on_progress,
    )
    try:
        progress = await runner.run(run.id, dataset.rows)
    except UnavailableError as e:
        run.status = "failed"
        run.summary = {**run.summary, "error": e.message}
        run.finished_at = store.clock.now()
        store.evals.put_run(run)
        raise
    results = await asyncio.to_thread(store.evals.list_results, run.id)
    baseline, base_results = _find_baseline(suite, store, run)
    cost = sum(x.cost_usd or 0.0 for x in results)
    verdict, comparisons = evaluate_gate(
        suite.gate,
        results,
        baseline=base_results,
        baseline_run_id=baseline.id if baseline else None,
        total_cost_usd=cost,
    )
    complete = len({(x.row_id, x.repeat) for x in results}) >= len(dataset.rows) * r.repeat
    if not complete:
        verdict = GateVerdict(
            passed=False,
            checks=[
                *verdict.checks,
                {
                    "kind": "complete",
                    "name": "all rows ran",
                    "passed": False,
                    "detail": "the run stopped early (cost cap reached); resume it to finish",
                },
            ],
            summary="gate failed: run incomplete (cost cap)",
        )
    stats = evaluator_stats(results)
    run.verdict = verdict
    run.status = "completed" if complete else "aborted"
    run.finished_at = store.clock.now()
    run.summary = {
        **run.summary,
        "results": len(results),
        "errors": sum(1 for x in results if x.error),
        "cached": sum(1 for x in results if x.cached),
        "cost_usd": round(cost, 6),
        "evaluators": {k: v.summary() for k, v in stats.items()},
        "baseline_run": baseline.id if baseline else None,
        "passed": verdict.passed,
    }
    store.evals.put_run(run)
    return RunOutcome(
        run=run,
        results=results,
        verdict=verdict,
        comparisons=comparisons,
        baseline=baseline,
        baseline_results=base_results,
        progress=progress,
        links=suite.links or _public_url(settings),
    )


def _public_url(settings: Any) -> str | None:
    server = getattr(settings, "server", None)
    return getattr(server, "public_url", None) if server else None


def _jsonable(d: dict[str, Any]) -> Any:
    import orjson

    return orjson.loads(orjson.dumps(d, default=str))


def _find_baseline(
    suite: Suite, store: Any, run: EvalRun
) -> tuple[EvalRun | None, list[EvalRowResult] | None]:
    if not suite.baseline:
        return None, None
    base = resolve_baseline(suite.baseline, store, run)
    if base is None:
        return None, None
    if (base.dataset_name, base.dataset_version) != (run.dataset_name, run.dataset_version):
        raise ConfigError(
            f"baseline run {base.id} ran on dataset {base.dataset_name}@{base.dataset_version}, "
            f"this run on {run.dataset_name}@{run.dataset_version}",
            hint="a regression check pairs rows of the same dataset version",
        )
    return base, store.evals.list_results(base.id)


def resolve_baseline(ref: str, store: Any, run: EvalRun) -> EvalRun | None:
    """A run id, ``latest`` (the suite's previous completed run), or a prompt label.

    For a label (``production``), the baseline is the newest completed run of the version that
    label points at, on the same dataset version. None when there is no such run yet (the
    regression check is then reported as skipped).
    """
    if ref.startswith("run_"):
        base: EvalRun = store.evals.get_run(ref)
        if base.project_id != run.project_id:
            raise NotFoundError(f"eval run {ref!r} not found in this project")
        return base
    if ref == "latest":
        for r in store.evals.list_runs(
            run.project_id,
            suite=run.suite,
            dataset_name=run.dataset_name,
            dataset_version=run.dataset_version,
            status="completed",
            limit=50,
        ):
            if r.id != run.id:
                return r
        return None
    if not run.prompt_name:
        raise ConfigError(
            f"baseline {ref!r} is a prompt label, but this run's target has no prompt",
            hint="give a run id as --baseline",
        )
    name, label = (run.prompt_name, ref) if "@" not in ref else split_ref(ref, "baseline")
    assert label is not None
    lab = store.prompts.find_label(run.project_id, name, label)
    if lab is None:
        raise NotFoundError(f"prompt {name!r} has no label {label!r} to use as the baseline")
    for r in store.evals.list_runs(
        run.project_id,
        prompt_name=name,
        prompt_version=lab.version,
        dataset_name=run.dataset_name,
        dataset_version=run.dataset_version,
        status="completed",
        limit=50,
    ):
        if r.id != run.id:
            return r
    return None


@dataclass
class Comparison:
    """``keel eval compare A B``: per-evaluator deltas and the rows that flipped."""

    a: EvalRun
    b: EvalRun
    evaluators: list[dict[str, Any]]
    flipped: list[dict[str, Any]]


def compare_runs(store: Any, run_a: str, run_b: str, *, seed: int = 0) -> Comparison:
    """Compare B (candidate) against A (baseline), paired by row."""
    a, b = store.evals.get_run(run_a), store.evals.get_run(run_b)
    ra, rb = store.evals.list_results(a.id), store.evals.list_results(b.id)
    _, comps = evaluate_gate(
        GateSpec(regression=RegressionRule(seed=seed, min_pairs=1)), rb, baseline=ra
    )
    sa, sb = evaluator_stats(ra), evaluator_stats(rb)
    evs = []
    for c in comps:
        evs.append(
            {
                **c.as_dict(),
                "baseline_pass_rate": sa[c.evaluator].metric("pass_rate"),
                "candidate_pass_rate": sb[c.evaluator].metric("pass_rate"),
                "significant_drop": c.significant_drop,
                "significant_gain": c.ci_low > 0,
            }
        )
    return Comparison(a=a, b=b, evaluators=evs, flipped=flipped_rows(rb, ra))
