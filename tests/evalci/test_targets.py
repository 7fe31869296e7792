"""Suite targets end to end in process: routes through the gateway, prompts, files, pins."""

from __future__ import annotations

import json

import pytest

from keel.core.prompts import PromptContent, PromptMessage
from keel.errors import ConfigError
from keel.evals.ci import run_suite
from keel.evals.suite import parse_suite
from keel.prompts.registry import PromptRegistry
from keel.settings import Settings
from keel.storage import open_store

from . import helpers


@pytest.fixture
def store():
    s = open_store("memory://")
    yield s
    s.close()


def _suite(**kw):
    base = {"name": "t", "dataset": {"rows": [{"id": "a", "input": "hi", "expected_output": "hi"}]}, "evaluators": ["exact_match"]}
    return parse_suite({**base, **kw})


def test_route_target_goes_through_the_gateway(store):
    st = Settings(gateway={"routes": {"support": {"targets": [{"provider": "fake", "model": "fake:echo"}]}}})
    o = run_suite(_suite(target={"route": "support"}), store, project_id="p", settings=st)
    assert o.results[0].output == "hi" and o.run.route == "support" and o.verdict.passed
    with pytest.raises(ConfigError, match="cannot serve route 'nope'"):
        run_suite(_suite(target={"route": "nope"}), store, project_id="p", settings=st)


def test_prompt_rendering_variables_mapping_and_row_errors(store):
    pid = "p"
    PromptRegistry(store, guards=[]).push(
        pid,
        "greet",
        PromptContent(
            type="chat",
            messages=[PromptMessage(role="user", content="{{greeting}} {{name}}")],
            model_config={"temperature": 0, "model": "ignored"},
        ),
    )
    rows = {"rows": [
        {"id": "ok", "input": {"name": "Ada"}, "expected_output": "Hello Ada", "metadata": {"g": "Hello"}},
        {"id": "bad", "input": {}, "expected_output": "x", "metadata": {"g": "Hi"}},
    ]}
    s = parse_suite({
        "name": "p",
        "target": {"prompt": "greet", "model": "fake:echo", "variables": {"greeting": "metadata.g"}, "params": {"max_tokens": 5}},
        "dataset": rows,
        "evaluators": ["exact_match"],
        "gate": ["error_rate<=0.5"],
    })
    o = run_suite(s, store, project_id=pid)
    by = {r.row_id: r for r in o.results}
    assert by["ok"].output == "Hello Ada" and by["ok"].scores[0].passed
    assert by["bad"].error and "name" in by["bad"].error  # missing variable: recorded on the row
    assert o.run.prompt_name == "greet" and o.run.prompt_version == 1 and o.verdict.passed


def test_file_dataset_messages_input_and_repeat(store, tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": "m", "input": [{"role": "system", "content": "s"}, {"role": "user", "content": "yo"}], "expected_output": "yo"},
        {"input": "no id", "expected_output": "no id"},
    ]))
    o = run_suite(
        _suite(target={"model": "fake:echo"}, dataset={"path": str(f)}, run={"repeat": 3}),
        store,
        project_id="p",
    )
    assert len(o.results) == 6 and all(r.scores[0].passed for r in o.results)
    ids = {r.row_id for r in o.results}
    assert "m" in ids and len(ids) == 2  # the row without an id got a content-hash id
    assert o.run.summary["evaluators"]["ExactMatch"]["n"] == 6


def test_stored_dataset_version_is_pinned(store):
    from keel.core.datasets import Row
    from keel.datasets.service import ensure_dataset, push_rows

    ds = ensure_dataset(store, "p", "cases")
    push_rows(store, ds, [Row(input="a", expected_output="a")])
    ds = store.datasets.get_dataset("p", "cases")  # fresh: append starts from its latest version
    push_rows(store, ds, [Row(input="b", expected_output="b")], append=True)
    o = run_suite(_suite(target={"model": "fake:echo"}, dataset="cases@1"), store, project_id="p")
    assert (o.run.dataset_name, o.run.dataset_version, len(o.results)) == ("cases", 1, 1)
    o = run_suite(_suite(target={"model": "fake:echo"}, dataset="cases"), store, project_id="p")
    assert (o.run.dataset_version, len(o.results)) == (2, 2)
    assert o.run.config_hash and o.run.evaluators[0].config_hash


def test_cost_cap_stops_sending_and_fails_the_gate(store):
    s = parse_suite({
        "name": "cost",
        "target": {"python": f"{helpers.__name__}:async_agent", "capture_traces": False},
        "dataset": {"rows": [{"id": f"r{i}", "input": f"q{i}"} for i in range(10)]},
        "evaluators": [{"name": "contains", "value": "q", "threshold": 0}],
        "run": {"concurrency": 1, "max_cost_usd": 1.0},
        "gate": {"max_cost_usd": 1.0},
    })
    o = run_suite(s, store, project_id="p")
    assert len(o.results) == 2 and o.run.status == "aborted"  # 0.5 USD per row
    assert not o.verdict.passed and "incomplete" in o.verdict.summary
