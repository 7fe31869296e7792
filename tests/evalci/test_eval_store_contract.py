"""The eval store contract, on memory, SQLite and Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keel.core.evals import EvalRowResult, EvalRun, EvaluatorRef, GateVerdict, Score
from keel.errors import ConflictError, NotFoundError


def _run(rid: str, minute: int = 0, **kw) -> EvalRun:
    return EvalRun(
        id=rid,
        project_id="prj_1",
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute),
        evaluators=[EvaluatorRef(name="exact_match", version="1")],
        **kw,
    )


def _res(run_id: str, row: str, idx: int, value: float, repeat: int = 0) -> EvalRowResult:
    return EvalRowResult(
        run_id=run_id,
        row_id=row,
        row_index=idx,
        repeat=repeat,
        input={"q": row},
        output=f"answer {row}",
        scores=[Score(evaluator="exact_match", value=value, passed=value >= 0.5)],
    )


def test_runs_roundtrip_filter_and_update(store):
    ev = store.evals
    ev.add_run(
        _run("run_a", 0, prompt_name="p", prompt_version=1, dataset_name="d", dataset_version=1)
    )
    ev.add_run(
        _run("run_b", 1, prompt_name="p", prompt_version=2, dataset_name="d", dataset_version=1)
    )
    ev.add_run(_run("run_c", 2, prompt_name="q", prompt_version=1))
    with pytest.raises(ConflictError):
        ev.add_run(_run("run_a"))
    assert [r.id for r in ev.list_runs("prj_1")] == ["run_c", "run_b", "run_a"]
    assert [r.id for r in ev.list_runs("prj_1", prompt_name="p", prompt_version=2)] == ["run_b"]
    assert [r.id for r in ev.list_runs("prj_1", dataset_name="d", limit=1)] == ["run_b"]
    assert ev.list_runs("prj_other") == []
    run = ev.get_run("run_a")
    assert run.evaluators[0].name == "exact_match"
    run.status = "completed"
    run.verdict = GateVerdict(passed=True, summary="ok")
    ev.put_run(run)
    got = ev.get_run("run_a")
    assert got.status == "completed" and got.verdict and got.verdict.passed
    assert [r.id for r in ev.list_runs("prj_1", status="completed")] == ["run_a"]
    with pytest.raises(NotFoundError):
        ev.get_run("run_zzz")
    with pytest.raises(NotFoundError):
        ev.put_run(_run("run_zzz"))


def test_results_append_once_and_order(store):
    ev = store.evals
    ev.add_run(_run("run_a"))
    ev.add_results([_res("run_a", "r2", 2, 1.0), _res("run_a", "r0", 0, 0.0)])
    ev.add_results([_res("run_a", "r1", 1, 1.0), _res("run_a", "r0", 0, 1.0)])  # r0 kept as first
    ev.add_results([_res("run_a", "r1", 1, 0.0, repeat=1)])
    res = ev.list_results("run_a")
    assert [(r.row_id, r.repeat) for r in res] == [("r0", 0), ("r1", 0), ("r1", 1), ("r2", 0)]
    assert res[0].scores[0].value == 0.0
    assert res[0].created_at is not None
    assert ev.completed_keys("run_a") == {("r0", 0), ("r1", 0), ("r1", 1), ("r2", 0)}
    assert ev.completed_keys("run_none") == set()
    with pytest.raises(NotFoundError):
        ev.add_results([_res("run_nope", "r0", 0, 1.0)])
    with pytest.raises(NotFoundError):
        ev.list_results("run_nope")


def test_output_cache_first_write_wins(store):
    ev = store.evals
    assert ev.get_cached_outputs(["k1"]) == {}
    ev.put_cached_outputs({"k1": {"text": "a", "n": 1}, "k2": {"text": "b"}})
    ev.put_cached_outputs({"k1": {"text": "changed"}})
    assert ev.get_cached_outputs(["k1", "k2", "k3"]) == {
        "k1": {"text": "a", "n": 1},
        "k2": {"text": "b"},
    }
