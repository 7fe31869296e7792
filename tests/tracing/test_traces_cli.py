"""``keel traces list`` / ``keel traces show``."""

from __future__ import annotations

import orjson
from _ingest_helpers import agent_trace, hexid
from typer.testing import CliRunner

from keel.cli.main import app
from keel.storage import open_store
from keel.storage.spans import SpanRecord


def test_list_and_show(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEL_CONFIG", str(tmp_path / "none.toml"))
    url = f"sqlite:///{tmp_path}/cli.db"
    store = open_store(url)
    pid = store.projects.add_project("default").id
    spans = [s.model_copy(update={"project_id": pid}) for s in agent_trace("cli", model="gpt-4o")]
    store.spans.add_spans([SpanRecord(s) for s in spans])
    store.close()
    run = CliRunner().invoke
    r = run(app, ["--json", "--store", url, "traces", "list"])
    assert r.exit_code == 0, r.output
    data = orjson.loads(r.output)["data"]
    assert [t["trace_id"] for t in data] == [hexid("cli", 16)]
    r = run(app, ["--json", "--store", url, "traces", "list", "--status", "error"])
    assert orjson.loads(r.output)["data"] == []
    r = run(app, ["--store", url, "traces", "show", hexid("cli", 16)])
    assert r.exit_code == 0 and "chat 1" in r.output and "tool" in r.output
    r = run(app, ["--json", "--store", url, "traces", "show", hexid("cli", 16)])
    tree = orjson.loads(r.output)["spans"]
    assert tree[0]["name"] == "agent" and len(tree[0]["children"]) == 3
    assert tree[0]["children"][0]["llm"]["request_model"] == "gpt-4o"
    r = run(app, ["--store", url, "traces", "show", "0" * 32])
    assert r.exit_code == 2
    r = run(app, ["--store", url, "traces", "list", "--project", "nope"])
    assert r.exit_code == 2
