"""``keel prompts`` end to end against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli.main import app


@pytest.fixture
def cli(tmp_path):
    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/k.db"

    def run(*args: str, ok: bool = True):
        r = runner.invoke(app, ["--store", url, "--json", *args])
        if ok:
            assert r.exit_code == 0, r.output
            return json.loads(r.stdout) if r.stdout.strip() else None
        return r

    return run


def test_push_pull_show_label_diff_render(cli, tmp_path: Path):
    src = tmp_path / "prompts"
    src.mkdir()
    (src / "agent.yaml").write_text(
        "template: 'Hi {{name}}'\nlabels: [staging]\n", encoding="utf-8"
    )
    first = cli("prompts", "push", str(src))
    assert [(x["name"], x["version"], x["created"], x["labels_moved"]) for x in first] == [
        ("agent", 1, True, ["staging"])
    ]
    assert cli("prompts", "push", str(src))[0]["created"] is False
    (src / "agent.yaml").write_text(
        "template: 'Hello {{name}}!'\nconfig: {temperature: 0.3}\n", encoding="utf-8"
    )
    assert cli("prompts", "push", str(src), "-m", "friendlier")[0]["version"] == 2
    assert cli("prompts", "list") == [
        {"name": "agent", "latest": 2, "type": "text", "labels": ["staging→1"]}
    ]
    shown = cli("prompts", "show", "agent@staging")
    assert (shown["version"], shown["template"], shown["labels"]) == (1, "Hi {{name}}", ["staging"])
    assert cli("prompts", "show", "agent@2")["message"] == "friendlier"
    assert cli("prompts", "label", "agent", "staging", "2", "--reason", "ok")["version"] == 2
    assert cli("prompts", "rollback", "agent", "staging")["version"] == 1
    hist = cli("prompts", "history", "agent", "staging")
    assert [(h["before"], h["after"]) for h in hist] == [(2, 1), (1, 2), (None, 1)]
    d = cli("prompts", "diff", "agent@1", "2")
    assert d["config"][0]["path"] == "temperature" and "+Hello {{name}}!" in d["template"]
    out = cli("prompts", "render", "agent@2", "--var", "name=Bo")
    assert out["rendered"] == "Hello Bo!"
    bad = cli("prompts", "render", "agent@2", ok=False)
    assert bad.exit_code == 2 and "missing name" in bad.output
    pulled = tmp_path / "pulled"
    cli("prompts", "pull", str(pulled))
    assert "Hello {{name}}!" in (pulled / "agent.yaml").read_text(encoding="utf-8")
    # pushing what was pulled creates nothing
    assert cli("prompts", "push", str(pulled))[0]["created"] is False


def test_production_needs_a_passed_eval_run(cli, tmp_path: Path):
    src = tmp_path / "p"
    src.mkdir()
    (src / "a.md").write_text("Hi {{x}}\n", encoding="utf-8")
    cli("prompts", "push", str(src))
    r = cli("prompts", "label", "a", "production", "1", ok=False)
    assert r.exit_code != 0 and "eval run" in r.output


def test_human_output_renders(tmp_path: Path):
    runner = CliRunner()
    url = f"sqlite:///{tmp_path}/k.db"
    src = tmp_path / "p"
    src.mkdir()
    (src / "a.md").write_text(
        "---\ntype: chat\n---\n## system\nBe {{tone}}.\n## user\n{{q}}\n", encoding="utf-8"
    )
    for args in (
        ["prompts", "push", str(src)],
        ["prompts", "list"],
        ["prompts", "show", "a"],
        ["prompts", "render", "a", "-v", "tone=kind", "-v", "q=hi"],
    ):
        r = runner.invoke(app, ["--store", url, *args])
        assert r.exit_code == 0, r.output
    assert "Be kind." in r.output and "[system]" in r.output
