"""``keel eval``: run a suite in CI and gate on it; list, show and compare stored runs.

Exit codes of ``keel eval run``: 0 the gate passed, 1 the gate failed, 2 a usage or config
error, 3 a runtime error (provider or store down). Gates come from the suite file or
``--gate`` flags, never from environment variables alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from keel.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RUNTIME,
    console,
    emit_json,
    err_console,
    handle_errors,
    open_cli_store,
    state,
    table,
)

eval_app = typer.Typer(
    help="Run eval suites, gate on them, and inspect stored runs.", no_args_is_help=True
)


def _project_id(store: Any, name: str) -> str:
    p = store.projects.find_project_by_name(name)
    if p is None:
        from keel.errors import ConflictError

        try:
            p = store.projects.add_project(name)
        except ConflictError:
            p = store.projects.find_project_by_name(name)
    return str(p.id)


def _write(path: str | None, text: str) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


@eval_app.command("run")
@handle_errors
def run(
    ctx: typer.Context,
    suite_file: str = typer.Argument(..., metavar="SUITE.yaml", help="the suite file"),
    target: list[str] = typer.Option(
        None,
        "--target",
        "-t",
        help="prompt:NAME@REF, model:NAME, route:NAME, python:mod:fn, base_url:URL",
    ),
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="NAME@VERSION"),
    gate: list[str] = typer.Option(
        None, "--gate", "-g", help="e.g. groundedness.mean>=0.8 (repeatable)"
    ),
    baseline: str | None = typer.Option(
        None, "--baseline", "-b", help="run id, latest, or a prompt label"
    ),
    concurrency: int | None = typer.Option(None, "--concurrency", "-c", min=1, max=4096),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0, help="USD cap; stop sending beyond it"
    ),
    repeat: int | None = typer.Option(
        None, "--repeat", min=1, max=100, help="run each row N times"
    ),
    junit: str | None = typer.Option(None, "--junit", help="write JUnit XML here"),
    markdown: str | None = typer.Option(None, "--markdown", help="write a Markdown report here"),
    json_out: str | None = typer.Option(None, "--json", help="write a JSON report here"),
    resume: str | None = typer.Option(None, "--resume", help="continue a killed run (RUN_ID)"),
    project: str = typer.Option("default", "--project", "-p"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="live progress bar"),
) -> None:
    """Run a suite, store the run, apply the gate, write reports; exit 0/1/2/3."""
    from keel.errors import KeelError
    from keel.evals.ci import run_suite
    from keel.evals.reports import json_report, junit_xml, markdown_report, print_terminal
    from keel.evals.suite import apply_overrides, load_suite

    st = state(ctx)
    suite = load_suite(suite_file)
    suite = apply_overrides(
        suite,
        target=target or None,
        dataset=dataset,
        gates=gate or None,
        baseline=baseline,
        concurrency=concurrency,
        max_cost=max_cost,
        repeat=repeat,
    )
    settings = st.settings
    store = open_cli_store(ctx)
    store.ping()
    pid = _project_id(store, project)
    bar = _ProgressBar(enabled=progress and not st.json)
    try:
        outcome = run_suite(
            suite,
            store,
            project_id=pid,
            settings=settings,
            resume=resume,
            on_progress=bar.update,
            on_start=bar.start,
        )
    except KeelError:
        raise
    except Exception as e:  # a bug or a foreign error: a runtime failure, never "gate failed"
        bar.stop()
        err_console.print(f"[bold red]error:[/] {type(e).__name__}: {e}")
        raise typer.Exit(EXIT_RUNTIME)
    finally:
        bar.stop()
    _write(junit, junit_xml(outcome))
    _write(markdown, markdown_report(outcome))
    if json_out:
        import orjson

        _write(json_out, orjson.dumps(json_report(outcome), option=orjson.OPT_INDENT_2).decode())
    if st.json:
        emit_json(json_report(outcome))
    else:
        print_terminal(outcome, console)
    raise typer.Exit(EXIT_OK if outcome.verdict.passed else EXIT_FAILED)


class _ProgressBar:
    """A rich progress bar with live pass rate, cost and throughput (on stderr)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._p: Any = None
        self._task: Any = None

    def start(self, run: Any, total: int) -> None:
        err_console.print(f"eval run [cyan]{run.id}[/] ({total} row(s) × evaluators)")
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("pass {task.fields[pass_rate]}"),
            TextColumn("${task.fields[cost]}"),
            TextColumn("{task.fields[rate]} rows/s"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task("eval", total=None, pass_rate="–", cost="0.0000", rate="–")

    def update(self, pr: Any) -> None:
        if self._p is None:
            return
        import time

        el = max(time.monotonic() - pr.started, 1e-6)
        self._p.update(
            self._task,
            total=pr.total,
            completed=pr.done,
            pass_rate="–" if pr.pass_rate is None else f"{pr.pass_rate:.1%}",
            cost=f"{pr.cost_usd:.4f}",
            rate=f"{pr.done / el:.0f}",
        )

    def stop(self) -> None:
        if self._p is not None:
            self._p.stop()
            self._p = None


@eval_app.command("list")
@handle_errors
def list_runs(
    ctx: typer.Context,
    suite: str | None = typer.Option(None, "--suite"),
    prompt: str | None = typer.Option(None, "--prompt", help="NAME or NAME@VERSION"),
    dataset: str | None = typer.Option(None, "--dataset"),
    limit: int = typer.Option(20, "--limit", min=1, max=1000),
    project: str = typer.Option("default", "--project", "-p"),
) -> None:
    """Stored runs, newest first."""
    store = open_cli_store(ctx)
    pid = _project_id(store, project)
    pname, pver = (None, None)
    if prompt:
        pname, _, v = prompt.partition("@")
        pver = int(v) if v.isdigit() else None
    runs = store.evals.list_runs(
        pid, suite=suite, prompt_name=pname, prompt_version=pver, dataset_name=dataset, limit=limit
    )
    if state(ctx).json:
        emit_json([r.model_dump(mode="json") for r in runs])
        return
    table(
        "eval runs",
        ["id", "suite", "status", "gate", "target", "dataset", "rows", "created"],
        [
            (
                r.id,
                r.suite,
                r.status,
                "–" if r.verdict is None else ("passed" if r.verdict.passed else "FAILED"),
                r.target,
                f"{r.dataset_name or 'inline'}@{r.dataset_version or '-'}",
                r.summary.get("results"),
                r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            )
            for r in runs
        ],
    )


@eval_app.command("show")
@handle_errors
def show(
    ctx: typer.Context,
    run_id: str = typer.Argument(...),
    rows: bool = typer.Option(False, "--rows", help="list every row's scores"),
) -> None:
    """One run: its pins, verdict and per-evaluator figures (``--rows`` for every row)."""
    store = open_cli_store(ctx)
    run = store.evals.get_run(run_id)
    results = store.evals.list_results(run_id) if rows or state(ctx).json else []
    if state(ctx).json:
        emit_json(
            {
                "run": run.model_dump(mode="json"),
                "results": [r.model_dump(mode="json") for r in results],
            }
        )
        return
    pins = [
        ("suite", run.suite),
        ("status", run.status),
        ("target", run.target),
        ("prompt", f"{run.prompt_name}@{run.prompt_version}" if run.prompt_name else None),
        ("model / route", run.model or run.route),
        ("dataset", f"{run.dataset_name}@{run.dataset_version}" if run.dataset_name else "inline"),
        ("evaluators", ", ".join(f"{e.name}@{e.version}" for e in run.evaluators)),
        ("config hash", run.config_hash),
        ("gate", None if run.verdict is None else run.verdict.summary),
        ("cost (USD)", run.summary.get("cost_usd")),
    ]
    table(f"run {run.id}", ["field", "value"], pins)
    evs = run.summary.get("evaluators") or {}
    table(
        "evaluators",
        ["evaluator", "rows", "mean", "pass rate", "p10", "errors"],
        [
            (k, v.get("rows"), v.get("mean"), v.get("pass_rate"), v.get("p10"), v.get("errors"))
            for k, v in evs.items()
        ],
    )
    if rows:
        table(
            "rows",
            ["row", "repeat", "error", *[e.name for e in run.evaluators]],
            [
                (
                    r.row_id,
                    r.repeat,
                    r.error,
                    *[_score_cell(r.score_for(e.name)) for e in run.evaluators],
                )
                for r in results
            ],
        )


def _score_cell(s: Any) -> str:
    if s is None:
        return ""
    if s.error:
        return "error"
    return f"{s.value:.3f} {'✓' if s.passed else '✗'}"


@eval_app.command("compare")
@handle_errors
def compare(
    ctx: typer.Context,
    run_a: str = typer.Argument(..., help="baseline run"),
    run_b: str = typer.Argument(..., help="candidate run"),
) -> None:
    """Per-evaluator deltas (B - A, paired by row, with a bootstrap CI) and rows that flipped."""
    from keel.evals.ci import compare_runs
    from keel.evals.reports import comparison_json

    store = open_cli_store(ctx)
    c = compare_runs(store, run_a, run_b)
    if state(ctx).json:
        emit_json(comparison_json(c))
        return
    table(
        f"{c.b.id} vs {c.a.id}",
        ["evaluator", "pairs", "baseline", "candidate", "Δ", "95% CI", "p", "verdict"],
        [
            (
                e["evaluator"],
                e["n_pairs"],
                f"{e['baseline_mean']:.3f}",
                f"{e['candidate_mean']:.3f}",
                f"{e['mean_delta']:+.3f}",
                f"[{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]",
                f"{e['p_value']:.4f}",
                "significant drop"
                if e["significant_drop"]
                else ("significant gain" if e["significant_gain"] else "no significant change"),
            )
            for e in c.evaluators
        ],
    )
    table(
        f"rows that flipped ({len(c.flipped)})",
        ["row", "evaluator", "was", "now", "values"],
        [
            (
                f["row_id"],
                f["evaluator"],
                "pass" if f["baseline_passed"] else "fail",
                "pass" if f["candidate_passed"] else "fail",
                f"{f['baseline_value']:.3f} -> {f['candidate_value']:.3f}",
            )
            for f in c.flipped
        ],
    )
