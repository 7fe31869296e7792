"""SQL spans and per-trace summaries (SQLite and Postgres).

Layout, designed for millions of spans:

* ``spans``: one row per span, primary key ``(project_id, trace_id, span_id)`` (which is also
  the idempotency key and clusters a trace's spans in the index). Small, indexed LLM fields come
  first; raw attributes, events and resource are orjson bytes at the end of the row, so reading
  the index fields never touches their overflow pages. A second index ``(project_id, start_ns)``
  serves the span list.
* ``traces``: one summary row per trace, recomputed at write time for every trace a batch
  touches (:func:`keel.storage.spans.summarize`), indexed by ``(project_id, start_ns)``,
  duration and cost, so the trace list is an index walk with ``LIMIT`` and keyset pagination.
  Model, provider, route, prompt and service membership are newline-joined text columns tested
  with ``instr``/``strpos`` (no per-value index to maintain on the write path).

Writes go through the driver's ``executemany`` in one transaction per batch. On Postgres,
concurrent writers in several processes take a transaction-level advisory lock per touched
trace before recomputing its summary, so two writers never leave a stale summary behind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus, Trace, construct_trusted
from keel.errors import InvalidInputError, NotFoundError
from keel.storage.spans import (
    IndexRow,
    SortKey,
    SpanFilter,
    SpanPage,
    SpanRecord,
    TraceFilter,
    TracePage,
    TraceSummary,
    decode_cursor,
    encode_cursor,
    prompt_needle,
    sort_column,
    summarize,
    summary_from_row,
)
from keel.storage.sql.engine import Database, metadata

COMPONENT = "spans"

spans_table = sa.Table(
    "spans",
    metadata,
    sa.Column("project_id", sa.String(40), primary_key=True),
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("span_id", sa.String(16), primary_key=True),
    sa.Column("parent_span_id", sa.String(16), nullable=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=False),
    sa.Column("service", sa.Text, nullable=True),
    sa.Column("is_llm", sa.SmallInteger, nullable=False),
    sa.Column("operation", sa.String(64), nullable=True),
    sa.Column("provider", sa.String(128), nullable=True),
    sa.Column("request_model", sa.Text, nullable=True),
    sa.Column("response_model", sa.Text, nullable=True),
    sa.Column("input_tokens", sa.BigInteger, nullable=True),
    sa.Column("output_tokens", sa.BigInteger, nullable=True),
    sa.Column("cost_usd", sa.Float(53), nullable=True),
    sa.Column("cost_source", sa.String(64), nullable=True),
    sa.Column("route", sa.Text, nullable=True),
    sa.Column("prompt_name", sa.Text, nullable=True),
    sa.Column("prompt_version", sa.Integer, nullable=True),
    sa.Column("scope", sa.Text, nullable=True),
    sa.Column("status_message", sa.Text, nullable=True),
    sa.Column("attributes", sa.LargeBinary, nullable=False),
    sa.Column("events", sa.LargeBinary, nullable=False),
    sa.Column("resource", sa.LargeBinary, nullable=False),
    sa.Index("ix_spans_project_start", "project_id", "start_ns"),
)

traces_table = sa.Table(
    "traces",
    metadata,
    sa.Column("project_id", sa.String(40), primary_key=True),
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("end_ns", sa.BigInteger, nullable=False),
    sa.Column("duration_ns", sa.BigInteger, nullable=False),
    sa.Column("cost_usd", sa.Float(53), nullable=False),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
    sa.Column("span_count", sa.Integer, nullable=False),
    sa.Column("error_count", sa.Integer, nullable=False),
    sa.Column("llm_count", sa.Integer, nullable=False),
    sa.Column("priced", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(8), nullable=False),
    sa.Column("root_span_id", sa.String(16), nullable=True),
    sa.Column("root_name", sa.Text, nullable=False),
    sa.Column("service", sa.Text, nullable=True),
    sa.Column("models", sa.Text, nullable=False),
    sa.Column("providers", sa.Text, nullable=False),
    sa.Column("routes", sa.Text, nullable=False),
    sa.Column("prompts", sa.Text, nullable=False),
    sa.Column("services", sa.Text, nullable=False),
    sa.Column("names", sa.Text, nullable=False),
    sa.Index("ix_traces_project_start", "project_id", "start_ns", "trace_id"),
    sa.Index("ix_traces_project_duration", "project_id", "duration_ns", "trace_id"),
    sa.Index("ix_traces_project_cost", "project_id", "cost_usd", "trace_id"),
)


def _v1(conn: Connection, dialect: str) -> None:
    metadata.create_all(conn, tables=[spans_table, traces_table])


MIGRATIONS = [_v1]

_SPAN_COLS = [c.name for c in spans_table.columns]
_TRACE_COLS = [c.name for c in traces_table.columns]
_INDEX_COLS = (
    "span_id, parent_span_id, name, start_ns, end_ns, status, service, input_tokens,"
    " output_tokens, cost_usd, request_model, response_model, provider, route, prompt_name,"
    " prompt_version, is_llm, operation"
)
_KINDS = {k.value: k for k in SpanKind}
_STATUSES = {s.value: s for s in SpanStatus}
_dumps = orjson.dumps
_loads = orjson.loads
_IN_CHUNK = 400


def _json_default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    return str(o)


def _blob(value: Any) -> bytes:
    try:
        return _dumps(value, default=_json_default)
    except TypeError:  # ints beyond 64 bits and similar oddities from in-process callers
        return _dumps(_sanitize(value), default=_json_default)


def _sanitize(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _sanitize(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_sanitize(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        return str(v)
    return v


def _t(v: Any) -> Any:
    """Text for a TEXT column: Postgres refuses NUL characters, so they are dropped everywhere."""
    if isinstance(v, str) and "\x00" in v:
        return v.replace("\x00", "")
    return v


# kind/status as stored: the enum members (StrEnum, so their text hashes alike) → their value
_KIND_TEXT = {k: k.value for k in SpanKind}
_STATUS_TEXT = {st: st.value for st in SpanStatus}
_NO_LLM: tuple[Any, ...] = (0, None, None, None, None, None, None, None, None, None, None, None)


def _row(rec: SpanRecord, resources: dict[int, tuple[Any, bytes]] | None = None) -> tuple[Any, ...]:
    """The ``spans`` row of a record. ``resources`` memoizes the resource blob per resource
    object: every span of one OTLP ResourceSpans shares one dict, encoded once per batch."""
    s = rec.span
    llm = rec.llm
    res = s.resource
    if not res:
        res_blob = b"{}"
        svc = None
    else:
        if resources is None:
            res_blob = _blob(res)
        else:
            hit = resources.get(id(res))
            if hit is None or hit[0] is not res:
                # keep the object alive with its blob so its id cannot be reused within the batch
                hit = resources[id(res)] = (res, _blob(res))
            res_blob = hit[1]
        svc = res.get("service.name")
        svc = _t(svc) if isinstance(svc, str) else None
    ev = s.events
    events = (
        _blob([{"name": e.name, "time_ns": e.time_ns, "attributes": e.attributes} for e in ev])
        if ev
        else b"[]"
    )
    if llm is None:
        llm_part = _NO_LLM
    else:
        d = llm.__dict__  # plain reads of the model's fields (hot path)
        llm_part = (
            1,
            _t(d["operation"]),
            _t(d["provider"]),
            _t(d["request_model"]),
            _t(d["response_model"]),
            d["input_tokens"],
            d["output_tokens"],
            d["cost_usd"],
            _t(d["cost_source"]),
            _t(d["route"]),
            _t(d["prompt_name"]),
            d["prompt_version"],
        )
    kind = _KIND_TEXT.get(s.kind)
    if kind is None:
        kind = str(s.kind.value if isinstance(s.kind, SpanKind) else s.kind)
    status = _STATUS_TEXT.get(s.status)
    if status is None:
        status = str(s.status.value if isinstance(s.status, SpanStatus) else s.status)
    return (
        s.project_id,
        s.trace_id,
        s.span_id,
        s.parent_span_id,
        _t(s.name),
        kind,
        status,
        s.start_time_ns,
        s.end_time_ns,
        svc,
        *llm_part,
        _t(s.scope),
        _t(s.status_message),
        _blob(s.attributes),
        events,
        res_blob,
    )


def _span_from_row(r: Any) -> Span:
    return construct_trusted(
        Span,
        dict(
            trace_id=r.trace_id,
            span_id=r.span_id,
            parent_span_id=r.parent_span_id,
            name=r.name,
            kind=_KINDS.get(r.kind, SpanKind.UNSPECIFIED),
            start_time_ns=int(r.start_ns),
            end_time_ns=int(r.end_ns),
            status=_STATUSES.get(r.status, SpanStatus.UNSET),
            status_message=r.status_message,
            attributes=_loads(r.attributes),
            events=[construct_trusted(SpanEvent, e) for e in _loads(r.events)],
            resource=_loads(r.resource),
            scope=r.scope,
            project_id=r.project_id,
        ),
    )


def _batch_index(rows: list[tuple[Any, ...]]) -> dict[tuple[str, str], dict[str, IndexRow]]:
    """The index rows of a batch's span rows, per (project, trace); the first copy of a span
    wins, as in the insert."""
    batch: dict[tuple[str, str], dict[str, IndexRow]] = {}
    for r in rows:
        spans = batch.get((r[0], r[1]))
        if spans is None:
            spans = batch[(r[0], r[1])] = {}
        if r[2] not in spans:
            spans[r[2]] = IndexRow(
                r[2],
                r[3],
                r[4],
                r[7],
                r[8],
                r[6],
                r[9],
                r[15],
                r[16],
                r[17],
                r[13],
                r[14],
                r[12],
                r[19],
                r[20],
                r[21],
                bool(r[10]),
                r[11],
            )
    return batch


def _summary_tuple(summary: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(summary[c] for c in _TRACE_COLS)


class SqlSpanStore:
    """Implements :class:`keel.storage.spans.SpanStore` on SQL."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pg = not db.is_sqlite
        ph = "%s" if self._pg else "?"
        self._ph = ph
        self._insert_spans = (
            f"INSERT INTO spans ({', '.join(_SPAN_COLS)}) VALUES "
            f"({', '.join([ph] * len(_SPAN_COLS))}) ON CONFLICT DO NOTHING"
        )
        updates = ", ".join(
            f"{c} = excluded.{c}" for c in _TRACE_COLS if c not in ("project_id", "trace_id")
        )
        self._upsert_traces = (
            f"INSERT INTO traces ({', '.join(_TRACE_COLS)}) VALUES "
            f"({', '.join([ph] * len(_TRACE_COLS))}) "
            f"ON CONFLICT (project_id, trace_id) DO UPDATE SET {updates}"
        )
        self._instr = "strpos" if self._pg else "instr"

    # ------------------------------------------------------------------ writes

    def add_spans(self, records: Sequence[SpanRecord]) -> int:
        if not records:
            return 0
        resources: dict[int, tuple[Any, bytes]] = {}
        rows = [_row(r, resources) for r in records]
        # Summaries assuming every trace is new, computed before taking the write lock (other
        # processes may be writing): inside it only traces already stored are recomputed.
        batch = _batch_index(rows)
        fresh = {
            key: _summary_tuple(summarize(key[0], key[1], list(spans.values())))
            for key, spans in batch.items()
        }
        with self._db.write() as conn:
            cur = conn.exec_driver_sql(self._insert_spans, rows)
            inserted = max(cur.rowcount, 0)
            self._refresh_summaries(conn, batch, fresh)
        return inserted

    def _refresh_summaries(
        self,
        conn: Connection,
        batch: dict[tuple[str, str], dict[str, IndexRow]],
        fresh: dict[tuple[str, str], tuple[Any, ...]],
    ) -> None:
        """Write the summary of every trace in ``batch`` (span rows just inserted).

        A trace without a summary yet has no other stored spans, so its summary is the one
        computed from the batch alone (``fresh``); others are re-read (index columns only)
        from ``spans`` and recomputed.
        """
        ph = self._ph
        touched: dict[str, list[str]] = {}
        for project_id, trace_id in batch:
            touched.setdefault(project_id, []).append(trace_id)
        out: list[tuple[Any, ...]] = []
        for project_id, trace_ids in touched.items():
            ids = sorted(trace_ids)
            if self._pg:
                conn.exec_driver_sql(
                    "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(x, 7400) AS h"
                    " FROM unnest(%s::text[]) AS x ORDER BY 1) AS s",
                    ([f"{project_id}/{t}" for t in ids],),
                )
            for i in range(0, len(ids), _IN_CHUNK):
                chunk = ids[i : i + _IN_CHUNK]
                marks = ", ".join([ph] * len(chunk))
                known = [
                    r[0]
                    for r in conn.exec_driver_sql(
                        f"SELECT trace_id FROM traces WHERE project_id = {ph}"
                        f" AND trace_id IN ({marks})",
                        (project_id, *chunk),
                    )
                ]
                by_trace: dict[str, list[IndexRow]] = {}
                if known:
                    res = conn.exec_driver_sql(
                        f"SELECT trace_id, {_INDEX_COLS} FROM spans WHERE project_id = {ph}"
                        f" AND trace_id IN ({', '.join([ph] * len(known))})",
                        (project_id, *known),
                    )
                    for r in res:
                        by_trace.setdefault(r[0], []).append(
                            IndexRow(*r[1:17], bool(r[17]), r[18])  # type: ignore[call-arg]
                        )
                for tid in chunk:
                    idx = by_trace.get(tid)
                    if idx is None:
                        out.append(fresh[(project_id, tid)])
                    else:
                        out.append(_summary_tuple(summarize(project_id, tid, idx)))
        if out:
            conn.exec_driver_sql(self._upsert_traces, out)

    # ------------------------------------------------------------------ reads

    def get_trace(self, project_id: str, trace_id: str) -> Trace:
        ph = self._ph
        with self._db.read() as conn:
            # Sorted here: an ORDER BY tempts SQLite into walking (project_id, start_ns).
            rows = conn.exec_driver_sql(
                f"SELECT * FROM spans WHERE project_id = {ph} AND trace_id = {ph}",
                (project_id, trace_id),
            ).all()
        if not rows:
            raise NotFoundError(f"trace {trace_id!r} not found")
        spans = sorted(
            (_span_from_row(r) for r in rows), key=lambda x: (x.start_time_ns, x.span_id)
        )
        return Trace(trace_id=trace_id, spans=spans)

    def get_trace_summary(self, project_id: str, trace_id: str) -> TraceSummary:
        ph = self._ph
        with self._db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT * FROM traces WHERE project_id = {ph} AND trace_id = {ph}",
                (project_id, trace_id),
            ).first()
        if row is None:
            raise NotFoundError(f"trace {trace_id!r} not found")
        return summary_from_row(row)

    def list_traces(
        self,
        project_id: str,
        filters: TraceFilter | None = None,
        *,
        sort: SortKey = "start_time",
        descending: bool = True,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TracePage:
        col = sort_column(sort)
        if not 1 <= limit <= 500:
            raise InvalidInputError("limit must be between 1 and 500")
        f = filters or TraceFilter()
        ph, instr = self._ph, self._instr
        where = [f"project_id = {ph}"]
        params: list[Any] = [project_id]

        def add(clause: str, *values: Any) -> None:
            where.append(clause)
            params.extend(_t(v) for v in values)

        if f.start_from_ns is not None:
            add(f"start_ns >= {ph}", f.start_from_ns)
        if f.start_to_ns is not None:
            add(f"start_ns < {ph}", f.start_to_ns)
        for column, value in (
            ("services", f.service),
            ("models", f.model),
            ("providers", f.provider),
            ("routes", f.route),
        ):
            if value is not None:
                add(f"{instr}({column}, {ph}) > 0", f"\n{value}\n")
        if f.prompt_name is not None:
            add(f"{instr}(prompts, {ph}) > 0", prompt_needle(f.prompt_name, f.prompt_version))
        if f.status is not None:
            add(f"status = {ph}", f.status)
        # Lower bounds rarely exclude much: walking the sort index and stopping at LIMIT beats
        # a range scan plus a sort, so "+col" keeps the planner off their own index unless
        # that index is also the sort order.
        if f.min_cost_usd is not None:
            plus = "" if col == "cost_usd" else "+"
            add(f"priced > 0 AND {plus}cost_usd >= {ph}", f.min_cost_usd)
        if f.min_duration_ms is not None:
            plus = "" if col == "duration_ns" else "+"
            add(f"{plus}duration_ns >= {ph}", int(f.min_duration_ms * 1e6))
        if f.text:
            add(f"{instr}(lower(names), {ph}) > 0", f.text.lower())
        op = "<" if descending else ">"
        if cursor:
            value, tid = decode_cursor(cursor, sort, descending)
            add(f"({col}, trace_id) {op} ({ph}, {ph})", value, tid)
        direction = "DESC" if descending else "ASC"
        sql = (
            f"SELECT * FROM traces WHERE {' AND '.join(where)}"
            f" ORDER BY {col} {direction}, trace_id {direction} LIMIT {int(limit) + 1}"
        )
        with self._db.read() as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]._mapping
            nxt = encode_cursor(sort, descending, last[col], last["trace_id"])
        return TracePage(items=[summary_from_row(r) for r in rows], next_cursor=nxt)

    def find_span(self, project_id: str, trace_id: str, span_id: str) -> Span | None:
        ph = self._ph
        with self._db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT * FROM spans WHERE project_id = {ph} AND trace_id = {ph}"
                f" AND span_id = {ph}",
                (project_id, trace_id, span_id),
            ).first()
        return _span_from_row(row) if row is not None else None

    def list_spans(
        self,
        project_id: str,
        filters: SpanFilter | None = None,
        *,
        limit: int = 100,
        cursor: str | None = None,
    ) -> SpanPage:
        if not 1 <= limit <= 1000:
            raise InvalidInputError("limit must be between 1 and 1000")
        f = filters or SpanFilter()
        f = SpanFilter(**{k: _t(v) for k, v in vars(f).items()})
        ph, instr = self._ph, self._instr
        where = [f"project_id = {ph}"]
        params: list[Any] = [project_id]
        if f.trace_id:
            where.append(f"trace_id = {ph}")
            params.append(f.trace_id)
        if f.name:
            where.append(f"{instr}(lower(name), {ph}) > 0")
            params.append(f.name.lower())
        if f.operation:
            where.append(f"operation = {ph}")
            params.append(f.operation)
        if f.model:
            where.append(f"(request_model = {ph} OR response_model = {ph})")
            params.extend([f.model, f.model])
        if f.status:
            where.append(f"status = {ph}")
            params.append(f.status)
        if f.llm_only:
            where.append("is_llm = 1")
        if f.start_from_ns is not None:
            where.append(f"start_ns >= {ph}")
            params.append(f.start_from_ns)
        if f.start_to_ns is not None:
            where.append(f"start_ns < {ph}")
            params.append(f.start_to_ns)
        if cursor:
            value, sid = decode_cursor(cursor, "spans", True)
            where.append(f"(start_ns, span_id) < ({ph}, {ph})")
            params.extend([value, sid])
        # Within one trace the primary key finds the rows; "+" stops the planner from walking
        # the whole project in start order instead.
        order = "+start_ns" if f.trace_id else "start_ns"
        sql = (
            f"SELECT * FROM spans WHERE {' AND '.join(where)}"
            f" ORDER BY {order} DESC, span_id DESC LIMIT {int(limit) + 1}"
        )
        with self._db.read() as conn:
            rows = conn.exec_driver_sql(sql, tuple(params)).all()
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            nxt = encode_cursor("spans", True, int(rows[-1].start_ns), rows[-1].span_id)
        return SpanPage(items=[_span_from_row(r) for r in rows], next_cursor=nxt)

    def count_spans(self, project_id: str | None = None) -> int:
        with self._db.read() as conn:
            if project_id is None:
                n = conn.exec_driver_sql("SELECT COUNT(*) FROM spans").scalar()
            else:
                n = conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM spans WHERE project_id = {self._ph}", (project_id,)
                ).scalar()
        return int(n or 0)
