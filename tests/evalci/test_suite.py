"""Suite files: short forms, strict validation with paths in errors, flags, the JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from keel.errors import ConfigError
from keel.evals.suite import apply_overrides, json_schema, load_suite, parse_suite

ROOT = Path(__file__).resolve().parents[2]

BASE = {
    "name": "s",
    "target": {"prompt": "refund-agent@canary", "model": "fake:echo"},
    "dataset": "refund-cases@3",
    "evaluators": ["exact_match", {"Contains": "refund"}, {"name": "levenshtein", "threshold": 0.7, "alias": "lev"}],
    "gate": ["exact_match.pass_rate>=0.9", "lev.p10>=0.2"],
}


def test_short_forms_expand():
    s = parse_suite(BASE)
    assert s.target.kind == "prompt" and s.target.label() == "prompt refund-agent@canary -> fake:echo"
    assert (s.dataset.name, s.dataset.version) == ("refund-cases", 3)
    assert [e.name for e in s.evaluators] == ["exact_match", "Contains", "levenshtein"]
    assert s.evaluators[1].short == "refund" and s.evaluators[2].threshold == 0.7
    assert [r.label() for r in s.gate.rules] == ["exact_match.pass_rate>=0.9", "lev.p10>=0.2"]
    s2 = parse_suite({**BASE, "evaluators": [{"Contains": {"value": "x", "mode": "any"}}, {"name": "regex", "pattern": "a+"}]})
    assert s2.evaluators[0].config == {"value": "x", "mode": "any"}
    assert s2.evaluators[1].config == {"pattern": "a+"}


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"target": {"model": "fake:echo", "colour": 1}}, "target.colour: unknown key"),
        ({"target": {"python": "not a path"}}, "python must be module.path:callable"),
        ({"target": {"python": "a:b", "model": "x"}}, "cannot also set"),
        ({"target": {"model": "a", "route": "b"}}, "model or route, not both"),
        ({"target": {"prompt": "p@1"}}, "set python, or model/route"),
        ({"dataset": "x@beta"}, "dataset version must be a number"),
        ({"dataset": {"name": "x", "path": "y"}}, "one of: name"),
        ({"evaluators": []}, "evaluators"),
        ({"evaluators": ["a", "a"]}, "unique"),
        ({"gate": ["exact_match.mean>>1"]}, "cannot parse gate"),
        ({"run": {"concurrency": 0}}, "run.concurrency"),
        ({"extra": 1}, "extra: unknown key"),
    ],
)
def test_errors_name_the_path(patch, needle):
    with pytest.raises(ConfigError) as ei:
        parse_suite({**BASE, **patch}, where="suite.yaml")
    assert needle in ei.value.message and "suite.yaml" in ei.value.message


def test_not_a_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError):
        parse_suite(["x"])
    p = tmp_path / "s.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(p)


def test_flags_override_the_file_and_config_hash_tracks_results_only(tmp_path):
    s = parse_suite(BASE)
    o = apply_overrides(
        s,
        target=["prompt:refund-agent@7", "route:support"],
        dataset="refund-cases@4",
        gates=["exact_match.pass_rate>=0.5", "lev.mean>=0.1"],
        baseline="production",
        concurrency=64,
        max_cost=2.5,
    )
    assert o.target.prompt == "refund-agent@7" and o.target.route == "support" and o.target.model is None
    assert o.dataset.version == 4 and o.baseline == "production"
    labels = sorted(r.label() for r in o.gate.rules)
    assert labels == ["exact_match.pass_rate>=0.5", "lev.mean>=0.1", "lev.p10>=0.2"]
    assert o.run.concurrency == 64 and o.run.max_cost_usd == 2.5 and o.gate.max_cost_usd == 2.5
    py = apply_overrides(s, target=["python:myapp.agent:answer"])
    assert py.target.kind == "python" and py.target.prompt is None
    with pytest.raises(ConfigError):
        apply_overrides(s, target=["banana"])
    # concurrency does not change what a run computes; the prompt does
    assert apply_overrides(s, concurrency=3).config_hash() == s.config_hash()
    assert apply_overrides(s, target=["prompt:refund-agent@8"]).config_hash() != s.config_hash()


def test_published_schema_is_current_and_accepts_the_docs_examples():
    published = json.loads((ROOT / "docs/schemas/eval-suite.schema.json").read_text())
    assert published == json.loads(json.dumps(json_schema())), "regenerate: python -m keel.evals.suite"
    jsonschema.Draft202012Validator.check_schema(published)
    v = jsonschema.Draft202012Validator(published)
    v.validate(BASE)
    docs = (ROOT / "docs/eval-ci.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in docs.split("```yaml")[1:]]
    suites = [yaml.safe_load(b.split("```")[0]) for b in blocks]
    suites = [x for x in suites if isinstance(x, dict) and "evaluators" in x]
    assert suites, "docs/eval-ci.md should show suite files"
    for x in suites:
        v.validate(x)
        parse_suite(x)
    assert not v.is_valid({**BASE, "colour": 1})
