"""``keel datasets`` end to end against a SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from keel.cli.main import app


def _cli(url: str):
    runner = CliRunner()

    def run(*args: str, ok: bool = True):
        r = runner.invoke(app, ["--store", url, "--json", *args])
        if ok:
            assert r.exit_code == 0, r.output
            return json.loads(r.stdout)
        return r

    return run


def test_push_export_list_show(tmp_path: Path):
    cli = _cli(f"sqlite:///{tmp_path}/k.db")
    src = tmp_path / "in.csv"
    src.write_text("input,expected_output\nq1,a1\nq2,a2\nq1,a1\n", encoding="utf-8")
    r = cli("datasets", "push", str(src), "--name", "qa")
    assert (r["version"], r["row_count"], r["duplicates"]) == (1, 2, 1)
    assert cli("datasets", "push", str(src), "--name", "qa")["created"] is False
    more = tmp_path / "more.jsonl"
    more.write_text('{"input": "q3", "expected_output": "a3"}\n', encoding="utf-8")
    assert cli("datasets", "push", str(more), "--name", "qa", "--append")["row_count"] == 3
    out1, out2 = tmp_path / "o1.parquet", tmp_path / "o2.parquet"
    assert cli("datasets", "export", "qa@2", "--out", str(out1))["rows"] == 3
    cli("datasets", "export", "qa", "--out", str(out2))
    assert out1.read_bytes() == out2.read_bytes()
    assert [d["name"] for d in cli("datasets", "list")] == ["qa"]
    shown = cli("datasets", "show", "qa@1", "--rows", "1")
    assert [v["version"] for v in shown["versions"]] == [1, 2] and shown["rows"][0]["input"] == "q1"
    bad = cli("datasets", "export", "nope", "--out", str(tmp_path / "x.jsonl"), ok=False)
    assert bad.exit_code == 2


def test_add_from_traces(tmp_path: Path):
    from tests_support_spans import spans_for

    from keel.storage import open_store

    url = f"sqlite:///{tmp_path}/k.db"
    store = open_store(url)
    pid = store.projects.add_project("default").id
    store.spans.add_spans(spans_for(pid, 4) + spans_for(pid, 0))
    store.close()
    cli = _cli(url)
    r = cli(
        "datasets",
        "add-from-traces",
        "--dataset",
        "cur",
        "--filter",
        "model=gpt-4o-mini",
        "--filter",
        "since=3650d",
        "--limit",
        "3",
    )
    assert r["row_count"] == 3
    bad = cli("datasets", "add-from-traces", "--dataset", "cur", "--filter", "colour=red", ok=False)
    assert bad.exit_code == 2 and "unknown filter" in bad.output
    shown = cli("datasets", "show", "cur")
    assert all(row["source"]["trace_id"] for row in shown["rows"])
