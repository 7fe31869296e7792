"""The SpanStore contract, run on memory, SQLite and Postgres (the ``store`` fixture)."""

from __future__ import annotations

import pytest
from _ingest_helpers import T0, agent_trace, hexid, llm_span

from keel.core.spans import LlmCall, Span, SpanEvent, SpanStatus
from keel.errors import InvalidInputError, NotFoundError
from keel.storage.spans import SpanFilter, SpanRecord, TraceFilter


def rec(span: Span, cost: float | None = None, **llm: object) -> SpanRecord:
    """A record with an LlmCall built straight from the GenAI attributes (no dialect code)."""
    a = span.attributes
    if "gen_ai.request.model" not in a and not llm:
        return SpanRecord(span, None)
    fields = {
        "operation": a.get("gen_ai.operation.name"),
        "provider": a.get("gen_ai.provider.name"),
        "request_model": a.get("gen_ai.request.model"),
        "response_model": a.get("gen_ai.response.model"),
        "input_tokens": a.get("gen_ai.usage.input_tokens"),
        "output_tokens": a.get("gen_ai.usage.output_tokens"),
        "cost_usd": cost,
        **llm,
    }
    return SpanRecord(span, LlmCall(**fields))  # type: ignore[arg-type]


def add(store, spans: list[Span], **kw: object) -> int:
    return store.spans.add_spans([rec(s, **kw) for s in spans])  # type: ignore[arg-type]


def test_roundtrip_keeps_everything(store):
    s = llm_span(
        "t1",
        "chat",
        extra={
            "nested": {"a": [1, 2.5, True, None, "x"], "b": {"c": "d"}},
            "unicode": "héllo 🌍",
            "big": 2**62,
        },
        events=[SpanEvent(name="gen_ai.choice", time_ns=T0 + 5, attributes={"i": 1})],
        status=SpanStatus.ERROR,
    )
    s = s.model_copy(update={"status_message": "boom"})
    assert add(store, [s]) == 1
    got = store.spans.get_trace("default", s.trace_id)
    assert got.spans == [s]
    assert store.spans.find_span("default", s.trace_id, s.span_id) == s
    assert store.spans.find_span("default", s.trace_id, "0" * 16) is None


def test_add_is_idempotent_and_summary_exact(store):
    spans = agent_trace("t1")
    assert add(store, spans, cost=0.5) == 4
    assert add(store, spans, cost=0.5) == 0  # a re-send changes nothing
    assert add(store, spans[1:2] + spans[1:2], cost=0.5) == 0  # duplicates inside a batch too
    assert store.spans.count_spans("default") == 4
    s = store.spans.get_trace_summary("default", spans[0].trace_id)
    assert (s.span_count, s.llm_count, s.input_tokens, s.output_tokens) == (4, 2, 20, 10)
    assert s.cost_usd == pytest.approx(1.0)
    assert s.root_name == "agent" and s.root_span_id == spans[0].span_id
    assert s.duration_ms == pytest.approx(1000.0)
    assert s.models == ["gpt-4o-mini"] and s.providers == ["openai"]
    assert s.service == "svc" and s.status == "unset"


def test_trace_assembled_across_batches_out_of_order(store):
    spans = agent_trace("t2")
    add(store, [spans[3]])
    s = store.spans.get_trace_summary("default", spans[0].trace_id)
    assert s.span_count == 1 and s.root_name == "chat 2"  # orphan is the root for now
    add(store, [spans[1], spans[2]])
    add(store, [spans[0]])
    s = store.spans.get_trace_summary("default", spans[0].trace_id)
    assert s.span_count == 4 and s.root_name == "agent" and s.input_tokens == 20
    got = store.spans.get_trace("default", spans[0].trace_id)
    assert [x.name for x in got.spans] == ["agent", "chat 1", "tool", "chat 2"]


def test_usage_of_aggregate_parents_not_counted_twice(store):
    child = llm_span("t3", "chat", parent="agent", input_tokens=100, output_tokens=10)
    agent = llm_span("t3", "agent", input_tokens=100, output_tokens=10)  # repeats the child's
    add(store, [agent, child], cost=0.25)
    s = store.spans.get_trace_summary("default", child.trace_id)
    assert (s.input_tokens, s.output_tokens) == (100, 10)
    assert s.cost_usd == pytest.approx(0.25)


def test_projects_are_isolated(store):
    a = agent_trace("shared", project_id="prj_a")
    b = [s.model_copy(update={"project_id": "prj_b"}) for s in a[:2]]
    add(store, a)
    add(store, b)  # same trace and span ids, other project: stored separately
    assert store.spans.count_spans("prj_a") == 4
    assert store.spans.count_spans("prj_b") == 2
    assert store.spans.get_trace_summary("prj_b", a[0].trace_id).span_count == 2
    with pytest.raises(NotFoundError):
        store.spans.get_trace("prj_c", a[0].trace_id)
    with pytest.raises(NotFoundError):
        store.spans.get_trace_summary("prj_c", a[0].trace_id)
    assert store.spans.list_traces("prj_c").items == []


def _fill(store) -> list[str]:
    """Ten traces with varied models, services, status, cost and duration."""
    ids = []
    for i in range(10):
        model = "gpt-4o" if i % 3 == 0 else "claude-x"
        spans = agent_trace(
            f"f{i}",
            start_ms=i * 10_000,
            service="billing" if i % 2 else "search",
            model=model,
            provider="openai" if model == "gpt-4o" else "anthropic",
        )
        if i == 7:
            spans[2] = spans[2].model_copy(update={"status": SpanStatus.ERROR})
        if i == 4:
            spans[0] = spans[0].model_copy(
                update={"end_time_ns": spans[0].start_time_ns + 9 * 10**9}
            )
        extra = (
            {"route": "support", "prompt_name": "sys", "prompt_version": 3} if i in (2, 5) else {}
        )
        store.spans.add_spans(
            [
                rec(s, cost=0.01 * i, **(extra if "gen_ai.request.model" in s.attributes else {}))
                for s in spans
            ]
        )
        ids.append(spans[0].trace_id)
    return ids


def test_list_traces_filters(store):
    ids = _fill(store)
    lt = store.spans.list_traces

    def got(f: TraceFilter) -> set[str]:
        return {t.trace_id for t in lt("default", f, limit=100).items}

    assert [t.trace_id for t in lt("default").items] == ids[::-1]  # newest first
    assert got(TraceFilter(model="gpt-4o")) == {ids[i] for i in (0, 3, 6, 9)}
    assert got(TraceFilter(model="gpt-4")) == set()  # exact, not a prefix
    assert got(TraceFilter(provider="anthropic")) == {ids[i] for i in (1, 2, 4, 5, 7, 8)}
    assert got(TraceFilter(service="billing")) == {ids[i] for i in (1, 3, 5, 7, 9)}
    assert got(TraceFilter(status="error")) == {ids[7]}
    assert got(TraceFilter(min_cost_usd=0.15)) == {ids[i] for i in (8, 9)}  # 2 LLM spans each
    assert got(TraceFilter(min_duration_ms=5000)) == {ids[4]}
    assert got(TraceFilter(route="support")) == {ids[2], ids[5]}
    assert got(TraceFilter(prompt_name="sys")) == {ids[2], ids[5]}
    assert got(TraceFilter(prompt_name="sys", prompt_version=3)) == {ids[2], ids[5]}
    assert got(TraceFilter(prompt_name="sys", prompt_version=4)) == set()
    assert got(TraceFilter(prompt_name="sy")) == set()
    assert got(TraceFilter(text="TOOL")) == set(ids)
    assert got(TraceFilter(text="nothing-like-this")) == set()
    assert got(TraceFilter(start_from_ns=T0 + 30_000 * 10**6, start_to_ns=T0 + 50_000 * 10**6)) == {
        ids[3],
        ids[4],
    }
    assert got(TraceFilter(service="search", model="gpt-4o")) == {ids[0], ids[6]}


def test_cursor_pagination_visits_every_trace_once(store):
    ids = _fill(store)
    key = {
        "start_time": lambda t: t.start_time_ns,
        "duration": lambda t: t.duration_ms,
        "cost": lambda t: t.cost_usd or 0,
        "tokens": lambda t: t.input_tokens + t.output_tokens,
        "span_count": lambda t: t.span_count,
    }
    for sort in key:
        for descending in (True, False):
            seen = []
            cursor = None
            while True:
                page = store.spans.list_traces(
                    "default", sort=sort, descending=descending, limit=3, cursor=cursor
                )
                seen += page.items
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert sorted(t.trace_id for t in seen) == sorted(ids), (sort, descending)
            ks = [key[sort](t) for t in seen]
            assert ks == sorted(ks, reverse=descending), (sort, descending)


def test_bad_cursor_sort_and_limit(store):
    _fill(store)
    page = store.spans.list_traces("default", limit=2)
    with pytest.raises(InvalidInputError):
        store.spans.list_traces("default", sort="duration", cursor=page.next_cursor)
    for bad in ["!!!", "e30", "WyJ4Il0"]:
        with pytest.raises(InvalidInputError):
            store.spans.list_traces("default", cursor=bad)
    with pytest.raises(InvalidInputError):
        store.spans.list_traces("default", sort="name")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        store.spans.list_traces("default", limit=0)


def test_hostile_filter_values_are_data(store):
    _fill(store)
    for v in ["' OR 1=1--", '"; DROP TABLE spans; --', "%", "_", "\\", "\n", "a\x00b"]:
        assert store.spans.list_traces("default", TraceFilter(model=v)).items == []
        store.spans.list_traces("default", TraceFilter(text=v))
    assert store.spans.count_spans() == 40


def test_list_spans(store):
    ids = _fill(store)
    page = store.spans.list_spans("default", SpanFilter(trace_id=ids[0]))
    assert len(page.items) == 4 and page.next_cursor is None
    llm = store.spans.list_spans("default", SpanFilter(llm_only=True), limit=100)
    assert len(llm.items) == 20
    assert all(s.attributes.get("gen_ai.request.model") for s in llm.items)
    assert len(store.spans.list_spans("default", SpanFilter(model="gpt-4o"), limit=100).items) == 8
    assert len(store.spans.list_spans("default", SpanFilter(name="TOO"), limit=100).items) == 10
    assert (
        len(store.spans.list_spans("default", SpanFilter(operation="chat"), limit=100).items) == 20
    )
    seen = []
    cursor = None
    while True:
        p = store.spans.list_spans("default", limit=7, cursor=cursor)
        seen += [(s.trace_id, s.span_id) for s in p.items]
        cursor = p.next_cursor
        if not cursor:
            break
    assert len(seen) == 40 == len(set(seen))
    starts = [store.spans.find_span("default", t, s).start_time_ns for t, s in seen]  # type: ignore[union-attr]
    assert starts == sorted(starts, reverse=True)


def test_end_before_start_and_odd_values(store):
    s = llm_span("odd", "chat").model_copy(
        update={"end_time_ns": T0 - 5, "start_time_ns": T0, "name": ""}
    )
    add(store, [s])
    t = store.spans.get_trace_summary("default", s.trace_id)
    assert t.duration_ms == 0 and t.root_name == ""


def test_many_spans_in_one_batch(store):
    spans = [
        llm_span(
            f"bulk{i // 10}", f"s{i}", start_ms=i, parent=None if i % 10 == 0 else f"s{i - i % 10}"
        )
        for i in range(2000)
    ]
    assert add(store, spans) == 2000
    assert store.spans.count_spans("default") == 2000
    page = store.spans.list_traces("default", limit=500)
    assert len(page.items) == 200 and all(t.span_count == 10 for t in page.items)
    assert store.spans.get_trace_summary("default", hexid("bulk3", 16)).root_name == "s30"


@pytest.mark.parametrize("n", [63, 64, 65, 129, 300])
def test_batches_across_statement_chunks_count_only_new_spans(store, n):
    """SQLite inserts 64 rows per statement: counts, duplicates and summaries across chunks."""
    spans = [
        llm_span(
            f"chunk{i // 7}", f"c{i}", start_ms=i, parent=None if i % 7 == 0 else f"c{i - i % 7}"
        )
        for i in range(n)
    ]
    half = spans[: n // 2]
    assert add(store, half) == len(half)
    # the stored half again, a duplicate inside the batch, and the new half
    assert add(store, spans + spans[-3:]) == n - len(half)
    assert store.spans.count_spans("default") == n
    traces = {s.trace_id for s in spans}
    page = store.spans.list_traces("default", limit=500)
    assert {t.trace_id for t in page.items} == traces
    assert sum(t.span_count for t in page.items) == n
    last = store.spans.get_trace_summary("default", spans[-1].trace_id)
    assert last.span_count == (n - 1) % 7 + 1
