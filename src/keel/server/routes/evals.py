"""Eval runs over REST (``/api/evals``): list and show runs, page through their row results,
compare two runs. Runs are written by ``keel eval run`` (or the pytest plugin); the API reads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from keel.core.evals import EvalRowResult, EvalRun
from keel.errors import NotFoundError
from keel.server.auth import AuthContext
from keel.server.deps import AppContext, get_context, require_auth

router = APIRouter(prefix="/api/evals", tags=["evals"])


class RunsPage(BaseModel):
    """Runs, newest first."""

    data: list[EvalRun]


class ResultsPage(BaseModel):
    """A page of a run's row results, in row order."""

    data: list[EvalRowResult]
    total: int
    offset: int
    limit: int


def _run(ctx: AppContext, auth: AuthContext, run_id: str) -> EvalRun:
    run = ctx.store.evals.get_run(run_id)
    if run.project_id != auth.project_id:
        raise NotFoundError(f"eval run {run_id!r} not found")
    return run


@router.get("/runs", response_model=RunsPage, summary="List eval runs")
def list_runs(
    suite: str | None = None,
    prompt: str | None = Query(None, description="NAME or NAME@VERSION"),
    dataset: str | None = Query(None, description="NAME or NAME@VERSION"),
    status: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> RunsPage:
    """Runs of the caller's project, newest first, filtered."""
    auth.require_scope("evals")
    pname, pver = _ref(prompt)
    dname, dver = _ref(dataset)
    runs = ctx.store.evals.list_runs(
        auth.project_id,
        suite=suite,
        prompt_name=pname,
        prompt_version=pver,
        dataset_name=dname,
        dataset_version=dver,
        status=status,
        limit=limit,
    )
    return RunsPage(data=runs)


def _ref(ref: str | None) -> tuple[str | None, int | None]:
    if not ref:
        return None, None
    name, _, v = ref.partition("@")
    return name, int(v) if v.isdigit() else None


@router.get("/runs/{run_id}", response_model=EvalRun, summary="One eval run")
def get_run(
    run_id: str, auth: AuthContext = Depends(require_auth), ctx: AppContext = Depends(get_context)
) -> EvalRun:
    """A run with its pins, gate verdict and per-evaluator summary."""
    auth.require_scope("evals")
    return _run(ctx, auth, run_id)


@router.get("/runs/{run_id}/results", response_model=ResultsPage, summary="A run's row results")
def get_results(
    run_id: str,
    offset: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    failed: bool = Query(False, description="only rows with an error or a failed score"),
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> ResultsPage:
    """Row results (target output, each evaluator's score), in row order."""
    auth.require_scope("evals")
    _run(ctx, auth, run_id)
    rows = ctx.store.evals.list_results(run_id)
    if failed:
        rows = [r for r in rows if r.error or any(s.passed is False or s.error for s in r.scores)]
    return ResultsPage(
        data=rows[offset : offset + limit], total=len(rows), offset=offset, limit=limit
    )


@router.get("/compare", summary="Compare two runs (B against baseline A)")
def compare(
    a: str,
    b: str,
    auth: AuthContext = Depends(require_auth),
    ctx: AppContext = Depends(get_context),
) -> dict[str, Any]:
    """Per-evaluator paired deltas with a bootstrap CI, and the rows that flipped."""
    auth.require_scope("evals")
    _run(ctx, auth, a)
    _run(ctx, auth, b)
    from keel.evals.ci import compare_runs
    from keel.evals.reports import comparison_json

    return comparison_json(compare_runs(ctx.store, a, b))
