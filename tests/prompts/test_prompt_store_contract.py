"""The PromptStore contract, on memory, SQLite and Postgres."""

from __future__ import annotations

import threading

import pytest

from keel.core.prompts import PromptContent, PromptMessage
from keel.errors import ConflictError, InvalidInputError, NotFoundError


def _content(text: str, **kw) -> PromptContent:
    return PromptContent(type="text", template=text, **kw)


@pytest.fixture
def pid(store):
    return store.projects.add_project("p1").id


def test_numbering_and_identical_content(store, pid):
    v1, c1 = store.prompts.add_version(pid, "agent", _content("Hi {{name}}"), message="first")
    v2, c2 = store.prompts.add_version(pid, "agent", _content("Hello {{name}}"), author="ann")
    again, c3 = store.prompts.add_version(pid, "agent", _content("Hi {{name}}"), message="dup")
    assert (v1.version, c1, v2.version, c2) == (1, True, 2, True)
    assert (again.version, c3, again.id, again.message) == (1, False, v1.id, "first")
    assert store.prompts.get_version(pid, "agent", 2).author == "ann"
    assert store.prompts.get_latest_version(pid, "agent").version == 2
    assert [v.version for v in store.prompts.list_versions(pid, "agent")] == [1, 2]
    other, _ = store.prompts.add_version(pid, "other", _content("Hi {{name}}"))
    assert other.version == 1
    assert [p.name for p in store.prompts.list_prompts(pid)] == ["agent", "other"]
    assert store.prompts.list_prompts(pid)[0].version == 2
    assert store.prompts.find_version_by_hash(pid, "agent", v2.content_hash).version == 2
    assert store.prompts.find_version_by_hash(pid, "agent", "sha256:00") is None


def test_read_back_is_exact(store, pid):
    c = PromptContent(
        type="chat",
        messages=[
            PromptMessage(role="system", content="Be brief. é ✓"),
            PromptMessage(role="user", content="{{q}}"),
        ],
        model_config={"model": "gpt-4o-mini", "temperature": 0.2, "tools": [{"name": "t"}]},
        variables_schema={"type": "object", "properties": {"q": {"type": "string"}}},
    )
    v, _ = store.prompts.add_version(pid, "chat", c)
    back = store.prompts.get_version(pid, "chat", 1)
    assert back.content == c
    assert back.content.hash() == v.content_hash == c.hash()
    assert back.created_at == v.created_at


def test_not_found_and_bad_names(store, pid):
    with pytest.raises(NotFoundError):
        store.prompts.get_version(pid, "nope", 1)
    store.prompts.add_version(pid, "a", _content("x"))
    with pytest.raises(NotFoundError):
        store.prompts.get_version(pid, "a", 2)
    with pytest.raises(NotFoundError):
        store.prompts.list_versions(pid, "nope")
    with pytest.raises(NotFoundError):
        store.prompts.put_label(pid, "a", "production", 7)
    for bad in ["../etc", "a b", "x'; DROP TABLE prompt_versions; --", ""]:
        with pytest.raises(InvalidInputError):
            store.prompts.add_version(pid, bad, _content("x"))


def test_projects_are_isolated(store, pid):
    other = store.projects.add_project("p2").id
    store.prompts.add_version(pid, "a", _content("x"))
    with pytest.raises(NotFoundError):
        store.prompts.get_version(other, "a", 1)
    assert store.prompts.list_prompts(other) == []


def test_labels_move_with_compare_and_set(store, pid):
    for t in ("a", "b", "c"):
        store.prompts.add_version(pid, "p", _content(t))
    lab = store.prompts.put_label(pid, "p", "production", 1, expected_version=0)
    assert (lab.version, lab.protected) == (1, True)
    assert store.prompts.put_label(pid, "p", "staging", 2).protected is False
    with pytest.raises(ConflictError):
        store.prompts.put_label(pid, "p", "production", 3, expected_version=2)
    store.prompts.put_label(pid, "p", "production", 3, expected_version=1)
    assert store.prompts.find_label(pid, "p", "production").version == 3
    assert store.prompts.find_label(pid, "p", "nope") is None
    store.prompts.put_label(pid, "p", "staging", 2, protected=True)
    assert [(x.label, x.version, x.protected) for x in store.prompts.list_labels(pid, "p")] == [
        ("production", 3, True),
        ("staging", 2, True),
    ]
    # versions did not change through label moves
    assert [v.content.template for v in store.prompts.list_versions(pid, "p")] == ["a", "b", "c"]


def test_concurrent_pushes_number_without_gaps(store, pid):
    errors: list[BaseException] = []
    results: list[int] = []
    lock = threading.Lock()

    def push(i: int) -> None:
        try:
            v, _ = store.prompts.add_version(pid, "race", _content(f"t{i % 6}"))
            with lock:
                results.append(v.version)
        except BaseException as e:  # pragma: no cover - the assertion shows it
            errors.append(e)

    threads = [threading.Thread(target=push, args=(i,)) for i in range(18)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    versions = store.prompts.list_versions(pid, "race")
    assert [v.version for v in versions] == [1, 2, 3, 4, 5, 6]
    assert len({v.content_hash for v in versions}) == 6
    assert sorted(set(results)) == [1, 2, 3, 4, 5, 6]


def test_protocol_has_no_update_path(store):
    public = {n for n in dir(store.prompts) if not n.startswith("_")}
    assert not {n for n in public if n.startswith(("update", "delete", "set_", "edit"))}
    assert "put_version" not in public


def test_sql_code_never_updates_or_deletes_versions():
    import inspect

    import keel.storage.sql.datasets as ds
    import keel.storage.sql.prompts as pr

    for mod, tables in (
        (pr, ["prompt_versions"]),
        (ds, ["dataset_rows", "dataset_versions", "dataset_version_rows"]),
    ):
        src = inspect.getsource(mod)
        for t in tables:
            assert f"{t}.update(" not in src and f"{t}.delete(" not in src
            assert f"UPDATE {t.upper()}" not in src.upper()
        assert "DELETE FROM" not in src.upper()
