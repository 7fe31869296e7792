"""Datasets over REST: create, push, rows, versions, export (streamed), curation."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from keel.server import create_app
from keel.server.auth import create_api_key
from keel.settings import Settings
from keel.storage import open_store


@pytest.fixture
def api(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/k.db")
    p = store.projects.add_project("demo")
    _, secret = create_api_key(store, p, "ci")
    with TestClient(create_app(Settings(), store), raise_server_exceptions=False) as c:
        c.headers["Authorization"] = f"Bearer {secret}"
        yield c, store, p


def test_dataset_lifecycle(api):
    c, _, _ = api
    r = c.post("/api/datasets", json={"name": "qa", "description": "d"})
    assert r.status_code == 201 and r.json()["latest_version"] == 0
    assert c.post("/api/datasets", json={"name": "qa"}).status_code == 409
    rows = [{"input": f"q{i}", "expected_output": f"a{i}", "split": "test"} for i in range(5)]
    r = c.post("/api/datasets/qa/rows", json={"rows": [*rows, rows[0]], "message": "init"})
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["row_count"], r.json()["duplicates"]) == (1, 5, 1)
    r = c.post("/api/datasets/qa/rows", json={"rows": [{"input": "q9"}]})
    assert (r.json()["version"], r.json()["row_count"]) == (2, 6)
    page = c.get("/api/datasets/qa/versions/2/rows", params={"limit": 4}).json()
    assert len(page["items"]) == 4 and page["next_offset"] == 4
    first_id = page["items"][0]["id"]
    page2 = c.get("/api/datasets/qa/versions/2/rows", params={"offset": 4}).json()
    assert [x["input"] for x in page2["items"]] == ["q4", "q9"] and page2["next_offset"] is None
    r = c.post("/api/datasets/qa/rows", json={"remove": [first_id]})
    assert (r.json()["version"], r.json()["row_count"], r.json()["removed"]) == (3, 5, 1)
    r = c.post("/api/datasets/qa/rows", json={"rows": [{"input": "only"}], "append": False})
    assert r.json()["row_count"] == 1
    d = c.get("/api/datasets/qa").json()
    assert [v["row_count"] for v in d["versions"]] == [5, 6, 5, 1] and d["versions"][0][
        "author"
    ] == "key:ci"
    assert [x["name"] for x in c.get("/api/datasets").json()] == ["qa"]
    assert (
        c.get("/api/datasets/qa/versions/1/rows").json()["items"][0]["input"] == "q0"
    )  # old versions stay


def test_export_is_streamed_and_identical(api):
    c, _, _ = api
    c.post(
        "/api/datasets/ex/rows",
        json={"rows": [{"input": {"q": i}, "expected_output": "42"} for i in range(30)]},
    )
    for fmt in ("jsonl", "csv", "parquet"):
        a = c.get("/api/datasets/ex/export", params={"version": 1, "format": fmt})
        b = c.get("/api/datasets/ex/export", params={"format": fmt})
        assert a.status_code == 200 and a.content == b.content, fmt
        assert a.headers["x-keel-dataset-version"] == "1"
        if fmt == "parquet":
            assert pq.read_table(io.BytesIO(a.content)).num_rows == 30
        elif fmt == "jsonl":
            assert len(a.text.splitlines()) == 30 and json.loads(a.text.splitlines()[0])[
                "input"
            ] == {"q": 0}
        else:
            assert (
                a.text.splitlines()[0].startswith("id,input,expected_output")
                and len(a.text.splitlines()) == 31
            )
    assert c.get("/api/datasets/ex/export", params={"format": "xml"}).status_code == 400
    assert c.get("/api/datasets/nope/export").status_code == 404


def test_bad_input(api):
    c, _, _ = api
    assert c.post("/api/datasets", json={"name": "../x"}).status_code == 400
    assert c.post("/api/datasets/qa/rows", json={"rows": [[1, 2]]}).status_code == 400
    assert (
        c.post("/api/datasets/qa/rows", json={"rows": [{"input": 1}], "admin": 1}).status_code
        == 400
    )
    assert c.post("/api/datasets/qa/rows", json={"remove": ["row_x"]}).status_code == 400
    assert c.get("/api/datasets/qa/versions/9/rows").status_code == 404


def test_from_traces_over_the_api(api):
    c, store, p = api
    from tests_support_spans import spans_for

    store.spans.add_spans(spans_for(p.id, 3))
    r = c.post(
        "/api/datasets/cur/from-traces", json={"model": "gpt-4o-mini", "limit": 2, "tags": ["t"]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["row_count"] == 2
    rows = c.get("/api/datasets/cur/versions/1/rows").json()["items"]
    assert all(
        x["source"]["trace_id"] and x["source"]["span_id"] and x["tags"] == ["t"] for x in rows
    )
    assert c.post("/api/datasets/cur/from-traces", json={"status": "bogus"}).status_code == 400


def test_nan_and_huge_numbers_are_400_not_500(api):
    c, _, _ = api
    hdr = {"content-type": "application/json"}
    r = c.post("/api/datasets/n/rows", content=b'{"rows": [{"input": NaN}]}', headers=hdr)
    assert r.status_code == 400, r.text
    assert c.get(f"/api/datasets/n/versions/{2**70}/rows").status_code == 400
    r = c.post(
        "/api/prompts/n/versions",
        content=b'{"template": "x", "config": {"t": Infinity}}',
        headers=hdr,
    )
    assert r.status_code == 400, r.text
    assert c.get(f"/api/prompts/n/versions/{2**70}").status_code == 400
    assert c.get("/api/prompts/n", params={"version": 2**70}).status_code == 400
