"""The registry service on every backend: labels, audit, guards, rollback, files, diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.core.prompts import PromptContent
from keel.errors import ConflictError, GateFailedError, InvalidInputError, NotFoundError
from keel.prompts.files import load_directory, push_directory, to_yaml
from keel.prompts.guards import (
    AllowAll,
    LabelMove,
    load_label_guards,
    register_label_guard,
    unregister_label_guard,
)
from keel.prompts.registry import PromptRegistry


def text(t: str, **kw) -> PromptContent:
    return PromptContent(type="text", template=t, **kw)


class PassedEvalGuard:
    """A stand-in for the eval check: production needs the version in ``passed``."""

    def __init__(self) -> None:
        self.passed: set[int] = set()
        self.seen: list[LabelMove] = []

    def check(self, move: LabelMove, store) -> None:
        self.seen.append(move)
        if move.protected and move.to_version not in self.passed:
            raise GateFailedError(f"no passed eval run for {move.prompt_name}@{move.to_version}")


@pytest.fixture
def reg(store):
    return PromptRegistry(store, guards=[AllowAll()])


@pytest.fixture
def pid(store):
    return store.projects.add_project("p").id


def test_label_moves_are_audited_and_roll_back(reg, pid, store):
    for t in ("v1", "v2", "v3"):
        reg.push(pid, "agent", text(t), author="ann")
    reg.move_label(pid, "agent", "production", 1, actor="ann", reason="first release")
    reg.move_label(pid, "agent", "production", 3, actor="bob", reason="better tone")
    assert reg.get(pid, "agent", label="production").version.version == 3
    lab = reg.rollback(pid, "agent", "production", actor="carol", reason="complaints")
    assert lab.version == 1 and lab.protected
    hist = reg.label_history(pid, "agent", "production")
    assert [(e.actor, e.action, e.before, e.after, e.reason) for e in hist] == [
        ("carol", "prompt.label.rollback", 3, 1, "complaints"),
        ("bob", "prompt.label.move", 1, 3, "better tone"),
        ("ann", "prompt.label.move", None, 1, "first release"),
    ]
    assert all(e.created_at is not None for e in hist)
    # rolling back twice returns to where the label was before the rollback
    assert reg.rollback(pid, "agent", "production", actor="carol").version == 3
    assert reg.rollback(pid, "agent", "production", actor="carol", to=2).version == 2
    # moving to where it already is: no event
    n = len(reg.label_history(pid, "agent", "production"))
    reg.move_label(pid, "agent", "production", 2, actor="x")
    assert len(reg.label_history(pid, "agent", "production")) == n
    # versions never changed
    assert [v.content.template for v in store.prompts.list_versions(pid, "agent")] == [
        "v1",
        "v2",
        "v3",
    ]


def test_label_errors(reg, pid):
    reg.push(pid, "agent", text("a"))
    with pytest.raises(NotFoundError):
        reg.move_label(pid, "agent", "staging", 9, actor="x")
    with pytest.raises(InvalidInputError, match="reserved"):
        reg.move_label(pid, "agent", "latest", 1, actor="x")
    with pytest.raises(InvalidInputError):
        reg.move_label(pid, "agent", "../prod", 1, actor="x")
    with pytest.raises(NotFoundError, match="no label"):
        reg.get(pid, "agent", label="canary")
    reg.move_label(pid, "agent", "canary", 1, actor="x")
    with pytest.raises(InvalidInputError, match="no earlier version"):
        reg.rollback(pid, "agent", "canary", actor="x")


def test_protected_label_needs_the_guard(store, pid):
    guard = PassedEvalGuard()
    reg = PromptRegistry(store, guards=[guard])
    reg.push(pid, "agent", text("a"))
    reg.push(pid, "agent", text("b"))
    reg.move_label(pid, "agent", "staging", 2, actor="x")  # not protected: allowed
    with pytest.raises(GateFailedError):
        reg.move_label(pid, "agent", "production", 2, actor="x")
    assert store.prompts.find_label(pid, "agent", "production") is None
    assert reg.label_history(pid, "agent", "production") == []
    guard.passed.add(2)
    reg.move_label(pid, "agent", "production", 2, actor="x", reason="eval passed")
    # a custom label made protected is guarded too; un-protecting is itself guarded
    reg.move_label(pid, "agent", "eu-prod", 2, actor="x", protected=True)
    with pytest.raises(GateFailedError):
        reg.move_label(pid, "agent", "eu-prod", 1, actor="x", protected=False)
    assert guard.seen[-1].protected and guard.seen[-1].from_version == 2
    assert guard.seen[-1].content_hash == store.prompts.get_version(pid, "agent", 1).content_hash


def test_registered_guards_are_loaded():
    g = PassedEvalGuard()
    register_label_guard(g)
    try:
        assert g in load_label_guards(entry_points=False)
    finally:
        unregister_label_guard(g)
    assert isinstance(load_label_guards(entry_points=False)[0], AllowAll)
    with pytest.raises(TypeError):
        register_label_guard(object())  # type: ignore[arg-type]


def test_push_validates_before_storing(reg, pid, store):
    with pytest.raises(InvalidInputError):
        reg.push(pid, "bad", text("{{ ''.__class__ }}"))
    with pytest.raises(InvalidInputError):
        reg.push(
            pid, "bad", PromptContent(type="text", template="{% include 'x' %}", engine="jinja")
        )
    with pytest.raises(InvalidInputError, match="includes itself"):
        reg.push(pid, "loop", text("{{> loop}}"))
    assert store.prompts.list_prompts(pid) == []


def test_render_resolves_includes_through_labels(reg, pid):
    reg.push(pid, "footer", text("-- {{shop}}"))
    reg.push(pid, "footer", text("Regards, {{shop}}"))
    reg.move_label(pid, "footer", "production", 1, actor="x")
    reg.push(pid, "mail", text("Hi {{name}}. {{> footer@production}}"))
    _, out = reg.render(pid, "mail", {"name": "A", "shop": "S"})
    assert out == "Hi A. -- S"
    reg.move_label(pid, "footer", "production", 2, actor="x")
    assert reg.render(pid, "mail@1", {"name": "A", "shop": "S"})[1] == "Hi A. Regards, S"
    assert set(reg.includes(pid, reg.resolve(pid, "mail").version.content)) == {"footer@production"}


def test_diff_template_and_config(reg, pid):
    reg.push(
        pid,
        "a",
        text(
            "line one\nline two",
            model_config={"model": "m1", "temperature": 0.2, "tools": [{"name": "t"}]},
        ),
    )
    reg.push(
        pid,
        "a",
        text("line one\nline 2", model_config={"model": "m1", "temperature": 0.5, "top_p": 1}),
    )
    d = reg.diff(pid, "a@1", "a@2")
    j = d.to_json()
    assert j["identical"] is False
    assert "-line two" in j["template"] and "+line 2" in j["template"]
    assert {(c["path"], c["kind"]) for c in j["config"]} == {
        ("temperature", "changed"),
        ("top_p", "added"),
        ("tools[0].name", "removed"),
    }
    assert "~ config.temperature: 0.2 -> 0.5" in d.to_text()
    assert reg.diff(pid, "a@1", "1").identical
    reg.move_label(pid, "a", "production", 2, actor="x")
    assert reg.diff(pid, "a@1", "@production").b == 2


def test_prompt_files_push_is_idempotent(tmp_path: Path, reg, pid, store):
    (tmp_path / "agent.yaml").write_text(
        "messages:\n  - {role: system, content: 'You help {{shop}}. {{> signoff}}'}\n"
        "  - {role: user, content: '{{q}}'}\nconfig: {model: gpt-4o-mini, temperature: 0.1}\n"
        "labels: [staging]\nmessage: first\n",
        encoding="utf-8",
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "signoff.md").write_text(
        "---\nname: signoff\n---\nThanks, {{shop}}.\n", encoding="utf-8"
    )
    (tmp_path / "chatty.md").write_text(
        "---\ntype: chat\nconfig: {model: m}\n---\n## system\nBe {{tone}}.\n## user\n{{q}}\n",
        encoding="utf-8",
    )
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.yaml").write_text("template: ignored", encoding="utf-8")
    first = push_directory(reg, pid, tmp_path, actor="ci")
    assert {(r.name, r.version, r.created) for r in first} == {
        ("signoff", 1, True),
        ("agent", 1, True),
        ("chatty", 1, True),
    }
    assert next(r for r in first if r.name == "agent").labels_moved == ("staging",)
    names = [r.name for r in first]
    assert names.index("signoff") < names.index("agent")  # includes first
    again = push_directory(reg, pid, tmp_path, actor="ci")
    assert all(not r.created and not r.labels_moved for r in again)
    assert len(reg.label_history(pid, "agent", "staging")) == 1
    chatty = store.prompts.get_version(pid, "chatty", 1).content
    assert [(m.role, m.content) for m in chatty.messages] == [
        ("system", "Be {{tone}}."),
        ("user", "{{q}}"),
    ]
    # pull (YAML) then push again: identical content, nothing new
    pv = store.prompts.get_version(pid, "agent", 1)
    out = tmp_path / "pulled"
    out.mkdir()
    (out / "agent.yaml").write_text(to_yaml(pv, ["staging"]), encoding="utf-8")
    (pf,) = load_directory(out)
    assert pf.content.hash() == pv.content_hash
    # a bad file stores nothing
    (tmp_path / "broken.yaml").write_text("template: '{{ 1 + 1 }}'\n", encoding="utf-8")
    (tmp_path / "agent.yaml").write_text("template: changed {{q}}\n", encoding="utf-8")
    with pytest.raises(InvalidInputError):
        push_directory(reg, pid, tmp_path, actor="ci")
    assert [v.version for v in store.prompts.list_versions(pid, "agent")] == [1]


def test_prompt_file_errors(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("template: x\nfoo: 1\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="unknown keys foo"):
        load_directory(tmp_path)
    (tmp_path / "a.yaml").write_text("name: b\ntemplate: x\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("x", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="defined twice"):
        load_directory(tmp_path)


def test_compare_and_set_label_detects_concurrent_moves(store, pid):
    store.prompts.add_version(pid, "a", text("1"))
    store.prompts.add_version(pid, "a", text("2"))
    store.prompts.put_label(pid, "a", "canary", 1)
    with pytest.raises(ConflictError):
        store.prompts.put_label(pid, "a", "canary", 2, expected_version=0)
