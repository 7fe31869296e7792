"""The DatasetStore contract, on memory, SQLite and Postgres."""

from __future__ import annotations

import threading

import pytest

from keel.core.datasets import Row, RowSource, row_id, snapshot_hash
from keel.errors import ConflictError, InvalidInputError, NotFoundError


@pytest.fixture
def ds(store):
    pid = store.projects.add_project("p1").id
    return store.datasets.add_dataset(pid, "qa", description="questions")


def _rows(n: int, start: int = 0) -> list[Row]:
    return [
        Row(input={"q": f"question {i}"}, expected_output=f"a{i}") for i in range(start, start + n)
    ]


def test_create_list_and_conflict(store, ds):
    with pytest.raises(ConflictError):
        store.datasets.add_dataset(ds.project_id, "qa")
    assert store.datasets.get_dataset(ds.project_id, "qa").latest_version == 0
    assert [d.name for d in store.datasets.list_datasets(ds.project_id)] == ["qa"]
    assert store.datasets.find_dataset(ds.project_id, "nope") is None
    other = store.projects.add_project("p2").id
    with pytest.raises(NotFoundError):
        store.datasets.get_dataset(other, "qa")


def test_rows_dedup_and_read_back(store, ds):
    rows = [*_rows(3), _rows(1)[0]]
    ids = store.datasets.add_rows(ds.id, rows)
    assert len(ids) == 4 and ids[0] == ids[3] and len(set(ids)) == 3
    assert ids[0] == row_id(rows[0])
    again = store.datasets.add_rows(ds.id, _rows(3))
    assert again == ids[:3]
    r = store.datasets.get_row(ds.id, ids[1])
    assert r.id == ids[1] and r.input == {"q": "question 1"} and r.expected_output == "a1"
    with pytest.raises(NotFoundError):
        store.datasets.get_row(ds.id, "row_nope")


def test_versions_are_snapshots(store, ds):
    ids = store.datasets.add_rows(ds.id, _rows(3))
    v1, created = store.datasets.add_version(ds.id, ids, message="init", author="ann")
    assert (v1.version, v1.row_count, created, v1.author) == (1, 3, True, "ann")
    assert v1.content_hash == snapshot_hash(ids)[0]
    same, created = store.datasets.add_version(ds.id, ids)
    assert (same.version, created) == (1, False)
    more = store.datasets.add_rows(ds.id, _rows(2, start=3))
    v2, _ = store.datasets.add_version(ds.id, [ids[0], ids[2], *more])
    assert v2.version == 2
    assert [r.expected_output for r in store.datasets.iter_rows(ds.id, 1)] == ["a0", "a1", "a2"]
    assert [r.expected_output for r in store.datasets.iter_rows(ds.id, 2, batch_size=2)] == [
        "a0",
        "a2",
        "a3",
        "a4",
    ]
    assert list(store.datasets.iter_row_ids(ds.id, 1)) == ids
    assert [v.version for v in store.datasets.list_versions(ds.id)] == [1, 2]
    assert store.datasets.get_dataset(ds.project_id, "qa").latest_version == 2
    with pytest.raises(NotFoundError):
        store.datasets.get_version(ds.id, 3)
    with pytest.raises(InvalidInputError):
        store.datasets.add_version(ds.id, [*ids, "row_unknown"])


def test_source_back_link_survives(store, ds):
    src = RowSource(
        trace_id="a" * 32,
        span_id="b" * 16,
        prompt_name="agent",
        prompt_version=3,
        route="support",
        model="gpt-4o-mini",
        scores={"groundedness": 0.42},
    )
    r = Row(
        input=[{"role": "user", "content": "hi"}],
        source=src,
        tags=["bad"],
        split="test",
        metadata={"k": 1.5},
        context=["doc"],
        agent_steps=[{"tool": "search"}],
    )
    (rid,) = store.datasets.add_rows(ds.id, [r])
    store.datasets.add_version(ds.id, [rid])
    (back,) = list(store.datasets.iter_rows(ds.id, 1))
    assert back.source == src and back.content_hash() == r.content_hash()
    assert back.model_dump(exclude={"id"}) == r.model_dump(exclude={"id"})


def test_concurrent_versions_number_race_free(store, ds):
    pools = [store.datasets.add_rows(ds.id, _rows(2, start=10 * i)) for i in range(6)]
    errors: list[BaseException] = []

    def push(ids: list[str]) -> None:
        try:
            store.datasets.add_version(ds.id, ids)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=push, args=(p,)) for p in pools]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert [v.version for v in store.datasets.list_versions(ds.id)] == [1, 2, 3, 4, 5, 6]


def test_protocol_has_no_update_path(store):
    public = {n for n in dir(store.datasets) if not n.startswith("_")}
    assert not {n for n in public if n.startswith(("update", "delete", "set_", "edit", "put_"))}
