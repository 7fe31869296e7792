"""Datasets on every backend: push, dedup, versions, exports, and trace → dataset → export."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from keel.core.datasets import Row
from keel.core.spans import Span, SpanEvent, SpanStatus
from keel.datasets import formats, service
from keel.datasets.curation import CurationFilter, add_from_traces
from keel.errors import InvalidInputError, NotFoundError
from keel.otlp.dialects import to_llm_call
from keel.storage.spans import SpanRecord, TraceFilter


@pytest.fixture
def pid(store):
    return store.projects.add_project("p").id


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    return path


def test_push_dedup_versions_and_edits(store, pid, tmp_path):
    f = _write(
        tmp_path / "a.jsonl",
        [{"input": f"q{i % 4}", "expected_output": f"a{i % 4}"} for i in range(6)],
    )
    r1 = service.push_file(store, pid, "qa", f, author="ann")
    assert (r1.version.version, r1.version.row_count, r1.rows_read, r1.duplicates, r1.created) == (
        1,
        4,
        6,
        2,
        True,
    )
    again = service.push_file(store, pid, "qa", f)
    assert (again.version.version, again.created) == (1, False)
    extra = _write(
        tmp_path / "b.jsonl",
        [{"input": "q9", "expected_output": "a9"}, {"input": "q0", "expected_output": "a0"}],
    )
    r2 = service.push_file(store, pid, "qa", extra, append=True)
    assert (r2.version.version, r2.version.row_count, r2.duplicates) == (2, 5, 1)
    d = store.datasets.get_dataset(pid, "qa")
    ids = list(store.datasets.iter_row_ids(d.id, 2))
    # edit one row = remove its id and push the new content
    r3 = service.push_rows(store, d, [Row(input="q1", expected_output="A1!")], remove=[ids[1]])
    assert r3.version.version == 3 and r3.removed == 1
    v3 = [r.expected_output for r in store.datasets.iter_rows(d.id, 3)]
    assert v3 == ["a0", "a2", "a3", "a9", "A1!"]
    # old versions stay readable and unchanged
    assert [r.expected_output for r in store.datasets.iter_rows(d.id, 1)] == [
        "a0",
        "a1",
        "a2",
        "a3",
    ]
    with pytest.raises(InvalidInputError):
        service.push_rows(store, d, [], remove=["row_nope"])


def test_same_version_exports_identical_bytes(store, pid, tmp_path):
    f = _write(
        tmp_path / "in.jsonl",
        [{"input": {"q": f"é {i}"}, "expected_output": i / 3, "tags": ["x"]} for i in range(25)],
    )
    service.push_file(store, pid, "ds", f)
    digests = {}
    for fmt in formats.FORMATS:
        a, b = tmp_path / f"1.{fmt}", tmp_path / f"2.{fmt}"
        service.export(store, pid, "ds@1", a)
        service.push_file(store, pid, "other", f)  # unrelated writes in between
        service.export(store, pid, "ds", b)
        assert a.read_bytes() == b.read_bytes(), fmt
        digests[fmt] = hashlib.sha256(a.read_bytes()).hexdigest()
        back = list(formats.read_rows(a))
        assert [r.id for r in back] == list(
            store.datasets.iter_row_ids(store.datasets.get_dataset(pid, "ds").id, 1)
        )
    # and the JSONL bytes do not depend on the backend
    assert digests["jsonl"] == _jsonl_digest_of_reference(tmp_path, f)


def _jsonl_digest_of_reference(tmp_path: Path, f: Path) -> str:
    from keel.storage import open_store

    ref = open_store("memory://")
    p = ref.projects.add_project("p").id
    service.push_file(ref, p, "ds", f)
    out = tmp_path / "ref.jsonl"
    service.export(ref, p, "ds", out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def test_refs_and_not_found(store, pid, tmp_path):
    with pytest.raises(NotFoundError):
        service.resolve_version(store, pid, "nope")
    store.datasets.add_dataset(pid, "empty")
    with pytest.raises(NotFoundError, match="no versions"):
        service.resolve_version(store, pid, "empty")
    with pytest.raises(InvalidInputError):
        service.parse_ref("x@y")
    with pytest.raises(InvalidInputError):
        service.push_file(store, pid, "../evil", _write(tmp_path / "e.jsonl", [{"input": 1}]))


def _span(
    pid: str,
    i: int,
    *,
    model: str = "gpt-4o-mini",
    score: float | None = None,
    status: SpanStatus = SpanStatus.OK,
) -> SpanRecord:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": model,
        "gen_ai.response.model": model + "-2026",
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": f"question {i}"}]},
            ]
        ),
        "gen_ai.output.messages": json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [{"type": "text", "content": f"answer {i}"}],
                    "finish_reason": "stop",
                }
            ]
        ),
        "keel.prompt.name": "support",
        "keel.prompt.version": 3,
        "keel.route": "support-route",
    }
    events = []
    if score is not None:
        events.append(
            SpanEvent(
                name="gen_ai.evaluation.result",
                time_ns=2_000_000_000_000_000_000 + i,
                attributes={
                    "gen_ai.evaluation.name": "groundedness",
                    "gen_ai.evaluation.score.value": score,
                },
            )
        )
    root = Span(
        trace_id=f"{i:032x}",
        span_id=f"{i:015x}0",
        name="request",
        start_time_ns=1_900_000_000_000_000_000 + i * 10,
        end_time_ns=1_900_000_000_000_000_000 + i * 10 + 9,
        project_id=pid,
        status=status,
    )
    llm = Span(
        trace_id=f"{i:032x}",
        span_id=f"{i:015x}1",
        parent_span_id=root.span_id,
        name="chat gpt-4o-mini",
        start_time_ns=root.start_time_ns + 1,
        end_time_ns=root.end_time_ns - 1,
        project_id=pid,
        attributes=attrs,
        events=events,
        status=status,
    )
    return [SpanRecord(root, None), SpanRecord(llm, to_llm_call(llm))]  # type: ignore[return-value]


def test_trace_to_dataset_to_export_keeps_back_links(store, pid, tmp_path):
    recs = []
    for i in range(1, 6):
        recs += _span(
            pid, i, model="gpt-4o-mini" if i != 5 else "other", score=0.2 if i % 2 else 0.9
        )
    store.spans.add_spans(recs)
    f = CurationFilter(
        traces=TraceFilter(model="gpt-4o-mini"),
        scores_below={"groundedness": 0.5},
        split="regression",
        tags=["low-groundedness"],
    )
    res = add_from_traces(store, pid, "failures", f, author="ann")
    assert (res.version.version, res.version.row_count) == (
        1,
        2,
    )  # traces 1 and 3 (5 is another model)
    again = add_from_traces(store, pid, "failures", f)
    assert (again.version.version, again.created, again.duplicates) == (1, False, 2)  # idempotent
    out = tmp_path / "failures.jsonl"
    service.export(store, pid, "failures@1", out)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert {x["source"]["trace_id"] for x in lines} == {f"{3:032x}", f"{1:032x}"}
    for x in lines:
        s = x["source"]
        i = int(s["trace_id"], 16)
        assert s["span_id"] == f"{i:015x}1"
        assert (s["prompt_name"], s["prompt_version"], s["route"], s["model"]) == (
            "support",
            3,
            "support-route",
            "gpt-4o-mini-2026",
        )
        assert s["scores"] == {"groundedness": 0.2}
        assert x["input"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {i}"},
        ]
        assert x["expected_output"] == f"answer {i}"
        assert x["split"] == "regression" and x["tags"] == ["low-groundedness"]
        # the back-link resolves to the stored span
        assert store.spans.find_span(pid, s["trace_id"], s["span_id"]) is not None
    # re-importing the export gives the same rows (ids and back-links), so the same snapshot
    re = service.push_file(store, pid, "copy", out)
    assert re.version.content_hash == res.version.content_hash
    # the filters of the trace query apply
    none = add_from_traces(store, pid, "errors", CurationFilter(traces=TraceFilter(status="error")))
    assert none.version.row_count == 0
    by_prompt = add_from_traces(
        store,
        pid,
        "v3",
        CurationFilter(traces=TraceFilter(prompt_name="support", prompt_version=3), limit=3),
    )
    assert by_prompt.version.row_count == 3
