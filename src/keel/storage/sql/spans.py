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

from collections.abc import Callable, Sequence
from itertools import chain, islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from keel.core.spans import Span, Trace
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
from keel.storage.sql.rows import batch_index, span_from_row, span_row, text

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
_IN_CHUNK = 400
_chain = chain.from_iterable
_islice = islice
_MULTI_ROWS = 64  # rows per multi-row INSERT on SQLite (64 x 27 columns = 1,728 parameters)


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
        self._multi_sql: dict[tuple[str, int], str] = {}

    def _many(self, conn: Connection, sql: str, rows: list[tuple[Any, ...]]) -> int:
        """``executemany(sql, rows)``; returns the rows changed.

        On SQLite, rows go :data:`_MULTI_ROWS` at a time as one multi-row ``VALUES`` statement.
        ``sqlite3`` releases the GIL around every statement step, and with ``executemany``
        that is once per row: the server's event loop thread took the GIL at each one, so
        the writer waited for it while holding the database's write lock (which the other
        ``--workers`` process was queued on). One step per chunk keeps the lock's hold short.
        """
        if self._pg or len(rows) < 2:
            return max(conn.exec_driver_sql(sql, rows).rowcount, 0)
        n = 0
        width = len(rows[0])
        flat = _chain(rows)
        for i in range(0, len(rows), _MULTI_ROWS):
            k = min(_MULTI_ROWS, len(rows) - i)
            stmt = self._multi_sql.get((sql, k))
            if stmt is None:
                head, _, tail = sql.partition(" VALUES ")
                one, _, rest = tail.partition(")")
                stmt = self._multi_sql[(sql, k)] = (
                    f"{head} VALUES {', '.join([one + ')'] * k)}{rest}"
                )
            cur = conn.exec_driver_sql(stmt, tuple(_islice(flat, k * width)))
            n += max(cur.rowcount, 0)
        return n

    # ------------------------------------------------------------------ writes

    def add_spans(
        self, records: Sequence[SpanRecord], *, while_waiting: Callable[[], bool] | None = None
    ) -> int:
        if not records:
            return 0
        resources: dict[int, tuple[Any, bytes]] = {}
        rows = [span_row(r, resources) for r in records]
        # Summaries assuming every trace is new, computed before taking the write lock (other
        # processes may be writing): inside it only traces already stored are recomputed.
        batch = batch_index(rows)
        fresh = {
            key: _summary_tuple(summarize(key[0], key[1], list(spans.values())))
            for key, spans in batch.items()
        }
        with self._db.write(while_waiting=while_waiting) as conn:
            inserted = self._many(conn, self._insert_spans, rows)
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
            self._many(conn, self._upsert_traces, out)

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
        spans = sorted((span_from_row(r) for r in rows), key=lambda x: (x.start_time_ns, x.span_id))
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
            params.extend(text(v) for v in values)

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
        return span_from_row(row) if row is not None else None

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
        f = SpanFilter(**{k: text(v) for k, v in vars(f).items()})
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
        return SpanPage(items=[span_from_row(r) for r in rows], next_cursor=nxt)

    def count_spans(self, project_id: str | None = None) -> int:
        with self._db.read() as conn:
            if project_id is None:
                n = conn.exec_driver_sql("SELECT COUNT(*) FROM spans").scalar()
            else:
                n = conn.exec_driver_sql(
                    f"SELECT COUNT(*) FROM spans WHERE project_id = {self._ph}", (project_id,)
                ).scalar()
        return int(n or 0)
