"""The runner: isolation, retries, outage, cache, repeat, concurrency, rate limits, traces."""

from __future__ import annotations

import asyncio
import time

import pytest

from keel.core.clock import FixedClock
from keel.core.datasets import Row
from keel.core.evals import EvalRun
from keel.errors import UnavailableError
from keel.evals.registry import create_evaluator
from keel.evals.runner import EvalRunner, NamedEvaluator, RunnerOptions
from keel.evals.targets import PythonTarget
from keel.storage.memory import MemoryStore

from .helpers import ScriptTarget, SpanCount, agent_answer, async_agent, fatal, retryable


def _rows(n: int) -> list[Row]:
    return [Row(id=f"r{i}", input=f"q{i}", expected_output=f"q{i}") for i in range(n)]


def _store_with_run(run_id: str = "run_1") -> MemoryStore:
    s = MemoryStore(clock=FixedClock())
    s.evals.add_run(EvalRun(id=run_id, project_id="p", created_at=s.clock.now()))
    return s


def _exact() -> list[NamedEvaluator]:
    return [NamedEvaluator(create_evaluator("exact_match"))]


def run(store, target, rows, evals=None, **opt):
    r = EvalRunner(store.evals, target, evals or _exact(), RunnerOptions(backoff_s=0.001, **opt))
    return r, asyncio.run(r.run("run_1", rows))


def test_failures_are_isolated_and_retries_recover():
    s = _store_with_run()
    t = ScriptTarget(
        fail={"r1": [fatal()], "r2": [retryable(), retryable()], "r3": [retryable()] * 5}
    )
    _, pr = run(s, t, _rows(6), retries=3)
    res = {x.row_id: x for x in s.evals.list_results("run_1")}
    assert len(res) == 6
    assert res["r1"].error and "bad request" in res["r1"].error and t.calls.count("r1") == 1
    assert res["r2"].error is None and res["r2"].scores[0].passed and t.calls.count("r2") == 3
    assert res["r3"].error and t.calls.count("r3") == 4  # 1 + 3 retries
    assert res["r1"].scores[0].error == "target failed on this row"
    assert pr.errors == 2 and pr.done == 6


def test_outage_aborts_with_unavailable_and_keeps_completed_rows():
    s = _store_with_run()
    t = ScriptTarget(fail={f"r{i}": [retryable()] * 10 for i in range(3, 40)})
    with pytest.raises(UnavailableError) as ei:
        run(s, t, _rows(40), retries=1, concurrency=1, outage_after=4)
    assert "--resume" in (ei.value.hint or "")
    keys = s.evals.completed_keys("run_1")
    assert {("r0", 0), ("r1", 0), ("r2", 0)} <= keys
    assert len(t.calls) < 40  # stopped early


def test_cache_makes_reruns_free_and_repeat_gets_its_own_entries():
    s = _store_with_run()
    s.evals.add_run(EvalRun(id="run_2", project_id="p", created_at=s.clock.now()))
    t = ScriptTarget()
    run(s, t, _rows(5), repeat=2)
    assert len(t.calls) == 10
    r2 = EvalRunner(s.evals, t, _exact(), RunnerOptions(repeat=2))
    asyncio.run(r2.run("run_2", _rows(5)))
    assert len(t.calls) == 10  # all from the cache
    res = s.evals.list_results("run_2")
    assert len(res) == 10 and all(x.cached and x.cost_usd == 0.0 for x in res)
    assert len({x.request_hash for x in res}) == 10
    s.evals.add_run(EvalRun(id="run_3", project_id="p", created_at=s.clock.now()))
    asyncio.run(EvalRunner(s.evals, t, _exact(), RunnerOptions(cache=False)).run("run_3", _rows(5)))
    assert len(t.calls) == 15


def test_concurrency_is_bounded_and_results_are_persisted_once():
    s = _store_with_run()
    t = ScriptTarget(delay=0.01)
    _, pr = run(s, t, _rows(60), concurrency=7)
    assert t.peak == 7
    assert len(s.evals.list_results("run_1")) == 60 and pr.done == 60
    # a second pass over the same run sends nothing (everything is stored)
    t2 = ScriptTarget()
    _, pr2 = run(s, t2, _rows(60), concurrency=7)
    assert t2.calls == [] and pr2.skipped == 60


def test_rate_limit_per_provider():
    s = _store_with_run()
    t = ScriptTarget()
    t0 = time.monotonic()
    run(s, t, _rows(30), concurrency=30, rate_limits={"script": 20.0})
    # a bucket of 20 tokens refilled at 20/s: the last 10 requests wait about 0.5 s
    assert time.monotonic() - t0 >= 0.45
    t = ScriptTarget()
    s2 = _store_with_run()
    t0 = time.monotonic()
    run(s2, t, _rows(30), concurrency=30, rate_limits={"other": 1.0})
    # another provider's limit does not apply: at 1/s (bucket of 1) 30 rows would take 29 s;
    # the bound leaves room for a loaded CI machine (the run itself is ~0.1 s)
    assert time.monotonic() - t0 < 5.0


def test_python_target_captures_spans_for_each_row():
    s = _store_with_run()
    t = PythonTarget(agent_answer, "tests.evalci.helpers:agent_answer")
    evs = [NamedEvaluator(SpanCount(min_spans=3), alias="spans")]
    run(
        s,
        t,
        [Row(id=f"r{i}", input={"question": f"q{i}"}) for i in range(8)],
        evals=evs,
        concurrency=4,
    )
    res = s.evals.list_results("run_1")
    assert len(res) == 8
    for x in res:
        assert x.output == x.input["question"].upper()
        sc = x.scores[0]
        assert sc.evaluator == "spans" and sc.details["n"] == 3  # root row span + 2 app spans
        assert x.input_tokens == 7 and x.output_tokens == 3 and x.trace_id
    assert len({x.trace_id for x in res}) == 8


def test_python_async_target_and_dict_output():
    s = _store_with_run()
    t = PythonTarget(async_agent, "x:y", capture=False)
    run(s, t, [Row(id="a", input="abc", expected_output="cba")])
    (x,) = s.evals.list_results("run_1")
    assert x.output == "cba" and x.cost_usd == 0.5 and x.scores[0].passed
