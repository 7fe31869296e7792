"""Memory stays bounded: every per-request structure has a bound that holds under distinct keys.

The 1,000,000-request soak (``bench/gateway.py --inprocess``) shows it over time; these tests
show each bound directly and fast: drive more distinct users, prompts, model names, secrets
and traces than the bound and assert the structure never holds more.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, cast

import pytest

from keel.core.spans import Span, SpanKind, SpanStatus
from keel.errors import UnavailableError
from keel.gateway.routing import MAX_DIRECT
from keel.server.app import create_app
from keel.server.auth import create_api_key
from keel.server.ingest import IngestWriter, TraceEvents
from keel.settings import Settings
from keel.storage import open_store
from keel.storage.spans import SpanRecord
from keel.storage.sql import SqlStore


def _span(i: int, project_id: str = "p") -> Span:
    return Span(
        trace_id=f"{i + 1:032x}",
        span_id=f"{i + 1:016x}",
        name="s",
        kind=SpanKind.INTERNAL,
        start_time_ns=1_000 + i,
        end_time_ns=2_000 + i,
        status=SpanStatus.OK,
        project_id=project_id,
    )


def _records(start: int, n: int) -> list[SpanRecord]:
    return [SpanRecord(_span(i), None) for i in range(start, start + n)]


# ------------------------------------------------------------------ trace events


def test_trace_events_stay_bounded_over_distinct_traces() -> None:
    """One-span traces (every gateway request) never grow the tracker past its bounds, and
    a dispatcher that falls behind holds at most ``max_pending`` spans (the rest counted)."""
    ev = TraceEvents(idle_s=30.0, max_tracked=100, max_pending=500)
    for i in range(0, 2_000, 100):  # dispatcher not started: the inbox must cap
        ev.observe(_records(i, 100))
    assert ev.pending_spans == 500
    assert ev.dropped == 1_500
    seen: list[str] = []
    ev.subscribe(lambda e: seen.append(e.trace_id))

    def caught_up() -> None:
        deadline = time.monotonic() + 5
        while ev.pending_spans and time.monotonic() < deadline:
            time.sleep(0.005)
        assert ev.pending_spans == 0

    ev.start()
    try:
        caught_up()
        for i in range(2_000, 7_000, 250):  # root spans: each completes its trace
            ev.observe(_records(i, 250))
            caught_up()
            assert len(ev._open) <= 100 and len(ev._done) <= 100
    finally:
        ev.stop()
    assert ev.dropped == 1_500
    assert len(seen) == 500 + 5_000  # every trace that got in was announced once


# ------------------------------------------------------------------ ingest writer


def test_writer_bounds_in_process_spans_and_makes_the_sink_wait(tmp_path: Path) -> None:
    """A writer that cannot commit (another thread holds the write lock) holds at most
    ``local_max_spans`` in-process spans: past it, ``enqueue`` fails fast or waits for room."""
    store = cast(SqlStore, open_store(f"sqlite:///{tmp_path / 'k.db'}"))
    writer = IngestWriter(store, queue_max_spans=200_000, local_max_spans=1_000, pricer=None)
    writer.start()
    lock = store.db._write_lock
    assert lock is not None
    lock.acquire()  # the writer's first commit blocks here
    released = False
    try:
        futs = [writer.enqueue(_records(i, 250)) for i in range(0, 1_000, 250)]
        with pytest.raises(UnavailableError):
            writer.enqueue(_records(1_000, 250))
        assert writer.pending_spans <= 1_000
        # OTLP spans (local=False) still have the large queue
        futs.append(writer.enqueue(_records(5_000, 250), local=False))

        got: list[Any] = []
        waiter = threading.Thread(
            target=lambda: got.append(writer.enqueue(_records(2_000, 250), wait_s=10.0))
        )
        waiter.start()
        time.sleep(0.2)
        assert not got  # still waiting for room
        lock.release()
        released = True
        waiter.join(10)
        assert got, "the waiting sink did not get in after the writer caught up"
        futs.append(got[0])
        assert sum(f.result(10) for f in futs) == 1_500
    finally:
        if not released:
            lock.release()
        writer.stop()
    assert store.spans.count_spans() == 1_500
    store.db.dispose()


# ------------------------------------------------------------------ SQLite


def _sqlite_heap() -> int:
    lib = ctypes.CDLL("libsqlite3.so.0")
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return int(lib.sqlite3_memory_used())


_HEAP_CHECK = """
import ctypes, sys
from keel.storage.sql import engine as sql_engine
lib = ctypes.CDLL("libsqlite3.so.0")
lib.sqlite3_memory_used.restype = ctypes.c_int64
limit = 4 * 1024 * 1024
sql_engine.SOFT_HEAP_LIMIT = limit
db = sql_engine.Database("sqlite:///" + sys.argv[1], pool_size=3)
with db.write() as conn:
    conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")
    conn.exec_driver_sql(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)"
        " INSERT INTO t SELECT printf('%032x', i * 2654435761 % 4294967296), randomblob(400)"
        " FROM n"
    )
conns = [db.engine.connect() for _ in range(3)]  # three pooled connections at once
for c in conns:
    c.exec_driver_sql("SELECT sum(length(v)) FROM t").fetchall()
    assert c.exec_driver_sql("PRAGMA soft_heap_limit").scalar() == limit
used = int(lib.sqlite3_memory_used())
assert used <= limit + 1024 * 1024, used
"""


def test_sqlite_page_caches_share_one_soft_heap_limit(tmp_path: Path) -> None:
    """Each pooled connection has its own page cache; the soft heap limit caps them together
    (without it, three connections reading a 16 MiB table hold ~48 MiB of cache). In a fresh
    process: the limit and the heap it caps are process-wide, shared with other tests."""
    import subprocess
    import sys

    try:
        _sqlite_heap()
    except OSError:
        pytest.skip("the sqlite3 module is not linked to a shared libsqlite3")
    subprocess.run(
        [sys.executable, "-c", _HEAP_CHECK, str(tmp_path / "k.db")], check=True, timeout=120
    )


# ------------------------------------------------------------------ the gateway, end to end


def test_gateway_structures_stay_bounded_over_distinct_requests(tmp_path: Path) -> None:
    """Distinct users (sticky split), prompts (exact cache), model names (direct routes) and
    unknown secrets never grow the gateway's maps past their bounds, and nothing is left open."""
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = open_store(url)
    project = store.projects.add_project("p")
    _, secret = create_api_key(store, project, name="k")
    gateway = {
        "cache": {"max_entries": 50},
        "routes": {
            "r": {
                "targets": [
                    {"provider": "fake", "model": "fake:echo", "weight": 1},
                    {"provider": "fake", "model": "fake:echo", "name": "b", "weight": 1},
                ],
                "sticky": "user",
                "retries": 1,
                "circuit_breaker": {"failures": 5, "cooldown_s": 30},
                "cache": {"exact": True},
            }
        },
    }
    app = create_app(Settings(store={"url": url}, gateway=gateway), store)
    statuses: dict[int, int] = {}

    async def call(body: dict[str, Any], key: str) -> None:
        raw = json.dumps(body).encode()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {key}".encode()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 2),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(msg: MutableMapping[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                statuses[msg["status"]] = statuses.get(msg["status"], 0) + 1

        await app(scope, receive, send)

    n_routed, n_direct, n_bad = 400, MAX_DIRECT + 200, 300

    async def run() -> None:
        async with app.router.lifespan_context(app):
            ctx = app.state.keel
            gw = ctx.extras["gateway"]
            for i in range(n_routed):
                msg = [{"role": "user", "content": f"question {i}"}]
                await call({"model": "r", "messages": msg, "user": f"u{i}"}, secret)
            for i in range(n_direct):
                msg = [{"role": "user", "content": "hi"}]
                await call({"model": f"fake:echo-{i}", "messages": msg}, secret)
            for i in range(n_bad):
                await call({"model": "r", "messages": []}, f"sk-keel-nope-{i}")
            await gw.emitter.flush()
            writer = ctx.extras["ingest"]
            deadline = time.monotonic() + 10
            while writer.pending_spans and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

            snap = gw.snapshot
            assert len(snap._direct) <= MAX_DIRECT
            assert len(gw.shared.breakers) <= 2  # one per configured target
            assert len(gw.shared.latency) <= 2
            assert len(gw.cache.backend) <= 50
            assert len(gw.emitter.pending) <= gw.emitter.max_pending
            assert len(gw.shared.mirror_pool.tasks) == 0
            assert len(ctx.auth._cache) <= 10_001
            limiter = gw.limiter
            if limiter is not None and hasattr(limiter, "_keys"):
                assert len(limiter._keys) <= 1
                assert all(not st.open for st in limiter._keys.values())
            assert writer.pending_spans == 0 and writer._local_pending == 0

    asyncio.run(run())
    assert statuses.get(200) == n_routed + n_direct, statuses
    assert statuses.get(401) == n_bad, statuses
