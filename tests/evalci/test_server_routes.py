"""REST: eval runs, results and comparisons, scoped to the caller's project."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from keel.evals.ci import run_suite
from keel.evals.suite import parse_suite
from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


def _suite(expected_ok: int) -> dict:
    return {
        "name": "api",
        "target": {"model": "fake:echo"},
        "dataset": {
            "rows": [
                {"id": f"r{i}", "input": f"q{i}", "expected_output": f"q{i}" if i < expected_ok else "no"}
                for i in range(12)
            ]
        },
        "evaluators": ["exact_match"],
        "gate": ["exact_match.pass_rate>=0.5"],
    }


@pytest.fixture
def api(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    p = store.projects.add_project("demo")
    other = store.projects.add_project("other")
    _, secret = create_api_key(store, p, "ci")
    _, other_secret = create_api_key(store, other, "ci")
    a = run_suite(parse_suite(_suite(12)), store, project_id=p.id)
    b = run_suite(parse_suite(_suite(4)), store, project_id=p.id)
    with TestClient(create_app(Settings(), store), raise_server_exceptions=False) as c:
        yield c, {"Authorization": f"Bearer {secret}"}, {"Authorization": f"Bearer {other_secret}"}, a.run, b.run
    store.close()


def test_list_show_results_compare(api):
    c, h, other, a, b = api
    runs = c.get("/api/evals/runs", headers=h).json()["data"]
    assert [r["id"] for r in runs] == [b.id, a.id]
    assert runs[0]["verdict"]["passed"] is False and runs[1]["verdict"]["passed"] is True
    assert c.get("/api/evals/runs?status=completed&limit=1", headers=h).json()["data"][0]["id"] == b.id
    one = c.get(f"/api/evals/runs/{a.id}", headers=h).json()
    assert one["config_hash"] and one["evaluators"][0]["name"] == "ExactMatch"
    page = c.get(f"/api/evals/runs/{b.id}/results?offset=2&limit=5", headers=h).json()
    assert page["total"] == 12 and [r["row_id"] for r in page["data"]] == ["r2", "r3", "r4", "r5", "r6"]
    failed = c.get(f"/api/evals/runs/{b.id}/results?failed=true", headers=h).json()
    assert failed["total"] == 8
    cmp_ = c.get(f"/api/evals/compare?a={a.id}&b={b.id}", headers=h).json()
    assert cmp_["evaluators"][0]["mean_delta"] == pytest.approx(-8 / 12)
    assert len([f for f in cmp_["flipped"] if f["direction"] == "broke"]) == 8
    # another project's key sees nothing of these runs
    assert c.get("/api/evals/runs", headers=other).json()["data"] == []
    r = c.get(f"/api/evals/runs/{a.id}", headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert c.get(f"/api/evals/runs/{a.id}/results", headers=other).status_code == 404
    assert c.get("/api/evals/runs").status_code == 401
