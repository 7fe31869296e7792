"""The projects/keys/audit contract, run on every backend."""

from __future__ import annotations

import threading

import pytest

from keel.core.ids import new_id
from keel.core.projects import AuditEvent, hash_api_key
from keel.errors import ConflictError, InvalidInputError, NotFoundError
from keel.server.auth import create_api_key


def test_projects_roundtrip(store):
    p = store.projects.add_project("alpha")
    assert store.projects.get_project(p.id) == p
    assert store.projects.find_project_by_name("alpha") == p
    assert store.projects.find_project_by_name("beta") is None
    assert [x.name for x in store.projects.list_projects()] == ["alpha"]
    with pytest.raises(ConflictError):
        store.projects.add_project("alpha")
    with pytest.raises(NotFoundError):
        store.projects.get_project("prj_missing")


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "a;DROP TABLE projects",
        "x' OR '1'='1",
        "",
        "a/b",
        "é" * 3,
        "a" * 200,
        "a..b",
    ],
)
def test_hostile_names_are_rejected(store, bad):
    with pytest.raises(InvalidInputError):
        store.projects.add_project(bad)
    assert store.projects.list_projects() == []


def test_keys_are_stored_hashed_and_revocable(store):
    p = store.projects.add_project("alpha")
    key, secret = create_api_key(store, p, "ci")
    assert secret.startswith("keel_sk_") and secret not in key.key_hash
    found = store.projects.find_api_key_by_hash(hash_api_key(secret))
    assert found is not None and found.id == key.id and found.project_id == p.id
    assert store.projects.find_api_key_by_hash(hash_api_key(secret + "x")) is None
    assert store.projects.count_active_api_keys() == 1
    revoked = store.projects.revoke_api_key(key.id)
    assert revoked.revoked_at is not None
    assert store.projects.count_active_api_keys() == 0
    assert store.projects.revoke_api_key(key.id).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(NotFoundError):
        store.projects.revoke_api_key("key_missing")


def test_key_limits_roundtrip(store):
    p = store.projects.add_project("alpha")
    create_api_key(
        store, p, "team", allowed_models=["fake:echo"], rpm_limit=60, budget_usd_day=1.5
    )
    (got,) = store.projects.list_api_keys(p.id)
    assert got.allowed_models == ["fake:echo"] and got.rpm_limit == 60 and got.budget_usd_day == 1.5


def test_key_for_unknown_project_fails(store):
    from keel.core.projects import Project

    ghost = Project(id="prj_ghost", name="ghost", created_at=store.clock.now())
    with pytest.raises(NotFoundError):
        create_api_key(store, ghost, "x")


def test_audit_events_newest_first(store):
    p = store.projects.add_project("alpha")
    for i in range(3):
        store.projects.add_audit_event(
            AuditEvent(
                id=new_id("aud"),
                project_id=p.id,
                actor="me",
                action="label.move",
                subject="prompt:x",
                before=i,
                after=i + 1,
                reason=f"r{i}",
                evidence={"run": f"run_{i}"},
                created_at=store.clock.now(),
            )
        )
    evs = store.projects.list_audit_events(p.id, subject="prompt:x")
    assert [e.after for e in evs] == [3, 2, 1]
    assert evs[0].evidence == {"run": "run_2"}
    assert store.projects.list_audit_events(p.id, subject="other") == []


def test_concurrent_writers(store):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            p = store.projects.add_project(f"p{i}")
            for j in range(5):
                create_api_key(store, p, f"k{j}")
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.projects.list_projects()) == 8
    assert store.projects.count_active_api_keys() == 40


def test_concurrent_duplicate_names_one_wins(store):
    results: list[str] = []

    def work() -> None:
        try:
            store.projects.add_project("same")
            results.append("ok")
        except ConflictError:
            results.append("conflict")

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 5 + ["ok"]
