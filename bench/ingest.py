"""OTLP ingest benchmark: persisted spans/s over HTTP, and trace-list latency over 1M spans.

Part 1 starts ``keel serve`` as a subprocess (SQLite file, or Postgres), posts pre-encoded OTLP
protobuf batches of realistic LLM spans (agent → LLM calls with a few KB of messages, tools,
retrieval) from several client threads, and counts spans acknowledged with 200. A 200 means
committed, so acknowledged/s *is* persisted/s; the stored count is checked at the end.

Part 2 fills a SQLite store with ``--list-spans`` spans (default 1,000,000) through the store
API and times the trace list (default page, filters, sorts, next page).

Part 3 (``--phoenix-venv DIR``) runs Arize Phoenix from its own venv and posts the same payloads
(``--phoenix-spans``); Phoenix acknowledges before it writes, so its persisted rate is the span
count divided by the time until all of them are in its SQLite file.

    .venv/bin/python bench/ingest.py --quick
    .venv/bin/python bench/ingest.py --seconds 30 --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import random
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from keel.core.spans import Span, SpanEvent, SpanKind, SpanStatus
from keel.otlp.encode import encode_protobuf

WORDS = [
    "the",
    "a",
    "customer",
    "order",
    "refund",
    "policy",
    "shipping",
    "account",
    "weather",
    "paris",
    "model",
    "answer",
    "question",
    "context",
    "document",
    "retrieval",
    "tool",
    "result",
    "because",
    "however",
    "between",
    "system",
    "prompt",
    "assistant",
    "user",
    "invoice",
    "payment",
    "delivery",
    "address",
    "warranty",
    "product",
    "return",
    "exchange",
    "support",
    "ticket",
    "status",
    "update",
    "please",
    "thanks",
    "hello",
    "information",
    "details",
    "available",
    "according",
    "records",
    "show",
]

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gpt-4.1-mini"]
PROVIDERS = {"gpt-4o-mini": "openai", "gpt-4o": "openai", "gpt-4.1-mini": "openai"}


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


# The second half of every trace id; each request replaces it with a fresh value, so re-posted
# payloads carry new traces instead of idempotent duplicates.
MARK = bytes.fromhex("a55ac33c96690ff0")


def make_trace(rng: random.Random, t0: int, n_spans: int = 8, msg_words: int = 350) -> list[Span]:
    """One agent trace: root agent span, LLM calls with messages, a tool and a retrieval."""
    tid = rng.randbytes(8).hex() + MARK.hex()
    root = rng.randbytes(8).hex()
    resource = {
        "service.name": rng.choice(["support-bot", "search-api", "billing-agent"]),
        "service.version": "1.4.2",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.version": "1.45.2",
        "deployment.environment": "prod",
    }
    spans = [
        Span(
            trace_id=tid,
            span_id=root,
            name="invoke_agent support",
            kind=SpanKind.INTERNAL,
            start_time_ns=t0,
            end_time_ns=t0 + 2_500_000_000,
            status=SpanStatus.OK,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": "support",
                "gen_ai.conversation.id": rng.randbytes(6).hex(),
            },
            resource=resource,
            scope="keel.bench",
        )
    ]
    t = t0 + 1_000_000
    for i in range(n_spans - 1):
        sid = rng.randbytes(8).hex()
        kind = i % 4
        if kind == 2:
            spans.append(
                Span(
                    trace_id=tid,
                    span_id=sid,
                    parent_span_id=root,
                    name="execute_tool lookup_order",
                    start_time_ns=t,
                    end_time_ns=t + 30_000_000,
                    attributes={
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": "lookup_order",
                        "gen_ai.tool.call.id": f"call_{sid[:8]}",
                        "gen_ai.tool.call.arguments": orjson.dumps({"order_id": sid[:6]}).decode(),
                        "gen_ai.tool.call.result": _text(rng, 60),
                    },
                    resource=resource,
                    scope="keel.bench",
                )
            )
        elif kind == 3:
            spans.append(
                Span(
                    trace_id=tid,
                    span_id=sid,
                    parent_span_id=root,
                    name="retrieval kb",
                    start_time_ns=t,
                    end_time_ns=t + 50_000_000,
                    attributes={
                        "gen_ai.operation.name": "retrieval",
                        "gen_ai.data_source.id": "kb",
                        "gen_ai.retrieval.query.text": _text(rng, 12),
                        "gen_ai.retrieval.documents": orjson.dumps(
                            [{"id": f"doc_{j}", "score": 0.9 - j / 10} for j in range(4)]
                        ).decode(),
                    },
                    resource=resource,
                    scope="keel.bench",
                )
            )
        else:
            model = rng.choice(MODELS)
            err = rng.random() < 0.03
            words = msg_words
            spans.append(
                Span(
                    trace_id=tid,
                    span_id=sid,
                    parent_span_id=root,
                    name=f"chat {model}",
                    kind=SpanKind.CLIENT,
                    start_time_ns=t,
                    end_time_ns=t + rng.randint(300, 2000) * 1_000_000,
                    status=SpanStatus.ERROR if err else SpanStatus.UNSET,
                    status_message="upstream timeout" if err else None,
                    attributes={
                        "gen_ai.operation.name": "chat",
                        "gen_ai.provider.name": PROVIDERS.get(model, "anthropic"),
                        "gen_ai.request.model": model,
                        "gen_ai.response.model": model,
                        "gen_ai.request.temperature": 0.2,
                        "gen_ai.request.max_tokens": 512,
                        "gen_ai.response.id": f"chatcmpl-{sid}",
                        "gen_ai.response.finish_reasons": ["stop"],
                        "gen_ai.usage.input_tokens": rng.randint(200, 3000),
                        "gen_ai.usage.output_tokens": rng.randint(20, 400),
                        "gen_ai.input.messages": orjson.dumps(
                            [
                                {
                                    "role": "system",
                                    "parts": [{"type": "text", "content": _text(rng, words // 3)}],
                                },
                                {
                                    "role": "user",
                                    "parts": [{"type": "text", "content": _text(rng, words // 2)}],
                                },
                            ]
                        ).decode(),
                        "gen_ai.output.messages": orjson.dumps(
                            [
                                {
                                    "role": "assistant",
                                    "parts": [{"type": "text", "content": _text(rng, words // 6)}],
                                    "finish_reason": "stop",
                                }
                            ]
                        ).decode(),
                        "server.address": "api.openai.com",
                        "keel.route": "support-chat",
                        "gen_ai.prompt.name": "support-system",
                        "gen_ai.prompt.version": "3",
                    },
                    events=[SpanEvent(name="gen_ai.first_token", time_ns=t + 200_000_000)],
                    resource=resource,
                    scope="opentelemetry.instrumentation.openai_v2",
                )
            )
        t += 100_000_000
    return spans


def make_payloads(n_batches: int, batch_spans: int, seed: int = 7) -> list[tuple[bytes, int]]:
    """Pre-encoded protobuf bodies of ~batch_spans spans each (whole traces)."""
    rng = random.Random(seed)
    t0 = time.time_ns() - 3600 * 10**9
    out = []
    for b in range(n_batches):
        spans: list[Span] = []
        while len(spans) < batch_spans:
            spans.extend(make_trace(rng, t0 + (b * 1000 + len(spans)) * 1_000_000))
        out.append((encode_protobuf(spans), len(spans)))
    return out


# ----------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    store_url: str, port: int, extra_env: dict[str, str] | None = None, workers: int = 1
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **(extra_env or {})}
    keel = str(Path(sys.executable).with_name("keel"))
    proc = subprocess.Popen(
        [keel, "--store", store_url, "serve", "--port", str(port), "--log-level", "warning"]
        + (["--workers", str(workers)] if workers > 1 else []),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_ready(port, proc)
    return proc


def wait_ready(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    path: str = "/healthz",
    timeout: float = 60,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def tree_cpu(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its descendants so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def load(
    port: int,
    payloads: list[tuple[bytes, int]],
    seconds: float,
    clients: int,
    path: str = "/v1/traces",
    gzip_bodies: bool = False,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Post payloads round-robin from ``clients`` threads for ``seconds``; count 200s."""
    bodies = payloads
    acked = [0] * clients
    statuses: dict[int, int] = {}
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        j = i
        headers = {"Content-Type": "application/x-protobuf"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        if gzip_bodies:
            headers["Content-Encoding"] = "gzip"
        seq = 0
        while time.monotonic() < stop:
            body, n = bodies[j % len(bodies)]
            j += clients
            seq += 1
            body = body.replace(MARK, struct.pack(">II", i + 1, seq))
            if gzip_bodies:
                body = gzip.compress(body, 1)
            t = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                r.read()
            except OSError:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                lat.append(time.perf_counter() - t)
            if r.status == 200:
                acked[i] += n
            elif r.status in (429, 503):
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    client_cpu = time.process_time() - cpu0
    total = sum(acked)
    lat.sort()
    return {
        "acked_spans": total,
        # the load generator's own CPU (it shares the box with the server)
        "client_cpu_us_per_span": round(client_cpu / max(total, 1) * 1e6, 1),
        "wall_s": round(wall, 2),
        "spans_per_s": round(total / wall),
        "statuses": statuses,
        "p50_ms": round(lat[len(lat) // 2] * 1000, 1) if lat else None,
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1) if lat else None,
    }


def bench_keel(
    store_url: str,
    payloads: list[tuple[bytes, int]],
    seconds: float,
    clients: int,
    gz: bool,
    workers: int = 1,
    auth: str = "key",
) -> dict[str, Any]:
    from keel.storage import open_store

    secret = None
    if auth == "key":
        # As deployed: a project API key (looked up once, then cached). Without any key the
        # server runs in loopback dev mode, which reads the default project on every request.
        from keel.server.auth import create_api_key

        store = open_store(store_url)
        proj = store.projects.find_project_by_name("default") or store.projects.add_project(
            "default"
        )
        _, secret = create_api_key(store, proj, "bench", scopes=["*"])
        store.close()
    port = free_port()
    proc = start_server(store_url, port, workers=workers)
    try:
        u0, s0 = tree_cpu(proc.pid)
        la0 = os.getloadavg()[0]
        res = load(port, payloads, seconds, clients, gzip_bodies=gz, api_key=secret)
        u1, s1 = tree_cpu(proc.pid)
        n = max(res["acked_spans"], 1)
        # the server's CPU (all its processes) per acknowledged span: what a quiet box pays
        res["server_cpu_us_per_span"] = round((u1 - u0 + s1 - s0) / n * 1e6, 1)
        res["server_sys_us_per_span"] = round((s1 - s0) / n * 1e6, 1)
        res["load_avg"] = f"{la0:.1f}→{os.getloadavg()[0]:.1f}"
    finally:
        proc.terminate()
        proc.wait(30)
    store = open_store(store_url)
    res["stored_spans"] = store.spans.count_spans()
    store.close()
    return res


def bench_inproc(
    store_url: str, payloads: list[tuple[bytes, int]], seconds: float
) -> dict[str, Any]:
    """The server's work without HTTP: decode, understand, commit through the IngestWriter."""
    from collections import deque

    from keel.cli.serve import tune_runtime
    from keel.otlp.decode import decode_request
    from keel.server.ingest import IngestWriter
    from keel.storage import open_store

    store = open_store(store_url)
    writer = IngestWriter(store)
    writer.start()
    tune_runtime()  # as `keel serve` does
    inflight: deque[Any] = deque()
    done = 0
    seq = 0
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        body, _ = payloads[seq % len(payloads)]
        seq += 1
        b = body.replace(MARK, struct.pack(">II", 99, seq))
        # as the OTLP route does: decode, understand and commit on the writer thread
        inflight.append(
            writer.submit_decode(
                lambda b=b: decode_request(b, "application/x-protobuf"), estimate=300
            )
        )
        while len(inflight) > 4:
            done += len(inflight.popleft().result().spans)
    while inflight:
        done += len(inflight.popleft().result().spans)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    sys_s = resource.getrusage(resource.RUSAGE_SELF).ru_stime - ru0.ru_stime
    writer.stop()
    stored = store.spans.count_spans()
    store.close()
    return {
        "spans": done,
        "stored": stored,
        "spans_per_s": round(done / wall),
        "cpu_us_per_span": round(cpu / max(done, 1) * 1e6, 1),
        "sys_us_per_span": round(sys_s / max(done, 1) * 1e6, 1),
    }


def bench_stages(payloads: list[tuple[bytes, int]], repeat: int = 3) -> dict[str, float]:
    """CPU µs per span of each ingest stage, one thread, no HTTP (best of ``repeat``).

    decode: OTLP protobuf → ``Span``; understand: index-only LLM view + pricing; rows: the
    SQL row tuples; write: ``add_spans`` (rows, trace summaries, insert, commit) into a fresh
    SQLite file per repeat."""
    from keel.cli.serve import tune_runtime
    from keel.otlp.decode import decode_request
    from keel.server.ingest import _load_pricer, understand
    from keel.storage import open_store
    from keel.storage.spans import SpanRecord
    from keel.storage.sql.rows import span_row as _row

    tune_runtime()
    bodies = [b.replace(MARK, struct.pack(">II", 98, i)) for i, (b, _) in enumerate(payloads)]
    n = sum(k for _, k in payloads)
    pricer = _load_pricer()

    def best(fn: Callable[[], Any]) -> tuple[float, Any]:
        times, out = [], None
        for _ in range(repeat):
            c = time.process_time()
            out = fn()
            times.append((time.process_time() - c) / n * 1e6)
        return round(min(times), 1), out

    decode_us, batches = best(
        lambda: [decode_request(b, "application/x-protobuf").spans for b in bodies]
    )
    und_us, recs = best(
        lambda: [
            [SpanRecord(s, understand(s, pricer, index_only=True)) for s in spans]
            for spans in batches
        ]
    )
    rows_us, _ = best(lambda: [_row(r, {}) for batch in recs for r in batch])
    write = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeat):
            store = open_store(f"sqlite:///{d}/stages{i}.db")
            c = time.process_time()
            for batch in recs:
                store.spans.add_spans(batch)
            write.append((time.process_time() - c) / n * 1e6)
            store.close()
    write_us = round(min(write), 1)
    return {
        "decode": decode_us,
        "understand+price": und_us,
        "rows (part of write)": rows_us,
        "write": write_us,
        "total": round(decode_us + und_us + write_us, 1),
    }


def bench_phoenix(
    venv: str, payloads: list[tuple[bytes, int]], n_spans: int, work: Path
) -> dict[str, Any]:
    """Arize Phoenix from its own venv: post ``n_spans``, time until its SQLite holds them.

    Phoenix answers 200 before it writes (an in-memory queue), so the figure that compares with
    Keel's is stored spans over the time until the last one is stored.
    """
    import sqlite3

    port = free_port()
    wd = work / "phoenix"
    shutil.rmtree(wd, ignore_errors=True)
    wd.mkdir(parents=True)
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(wd),
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(free_port()),
        "PHOENIX_HOST": "127.0.0.1",
    }
    proc = subprocess.Popen(
        [str(Path(venv) / "bin" / "phoenix"), "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, proc, path="/", timeout=300)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        acked = seq = 0
        while acked < n_spans:
            body, n = payloads[seq % len(payloads)]
            seq += 1
            conn.request(
                "POST",
                "/v1/traces",
                body=body.replace(MARK, struct.pack(">II", 77, seq)),
                headers={"Content-Type": "application/x-protobuf"},
            )
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                acked += n
            else:
                time.sleep(0.5)
        ack_s = time.perf_counter() - t0
        db = wd / "phoenix.db"
        stored = 0
        deadline = t0 + 1800
        while stored < acked and time.perf_counter() < deadline:
            time.sleep(1)
            with sqlite3.connect(db, timeout=30) as c:
                stored = int(c.execute("SELECT COUNT(*) FROM spans").fetchone()[0])
        done = time.perf_counter() - t0
        return {
            "acked_spans": acked,
            "acked_in_s": round(ack_s, 1),
            "stored_spans": stored,
            "stored_in_s": round(done, 1),
            "persisted_per_s": round(stored / done),
        }
    finally:
        proc.terminate()
        proc.wait(30)


# ----------------------------------------------------------------------------- list latency


def fill_store(url: str, n_spans: int, msg_words: int = 40) -> float:
    from keel.server.ingest import _load_pricer, understand
    from keel.storage import open_store
    from keel.storage.spans import SpanRecord

    store = open_store(url)
    pricer = _load_pricer()
    rng = random.Random(11)
    t0 = time.time_ns() - 30 * 86400 * 10**9
    done = 0
    started = time.perf_counter()
    batch: list[SpanRecord] = []
    i = 0
    while done < n_spans:
        for s in make_trace(rng, t0 + i * 25_000_000, msg_words=msg_words):
            batch.append(SpanRecord(s, understand(s, pricer)))
        i += 1
        if len(batch) >= 5000:
            store.spans.add_spans(batch)
            done += len(batch)
            batch = []
    if batch:
        store.spans.add_spans(batch)
    store.close()
    return time.perf_counter() - started


def time_queries(url: str, repeat: int = 5) -> list[tuple[str, float, int]]:
    from keel.storage import open_store
    from keel.storage.spans import TraceFilter

    store = open_store(url)
    sp = store.spans
    first = sp.list_traces("default", limit=50)
    mid = first.items[-1].start_time_ns
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("newest 50", lambda: sp.list_traces("default", limit=50)),
        (
            "next page (cursor)",
            lambda: sp.list_traces("default", limit=50, cursor=first.next_cursor),
        ),
        ("model=gpt-4o", lambda: sp.list_traces("default", TraceFilter(model="gpt-4o"))),
        ("status=error", lambda: sp.list_traces("default", TraceFilter(status="error"))),
        (
            "service + time range",
            lambda: sp.list_traces(
                "default", TraceFilter(service="billing-agent", start_to_ns=mid)
            ),
        ),
        ("min_cost 0.01", lambda: sp.list_traces("default", TraceFilter(min_cost_usd=0.01))),
        ("min_duration 2s", lambda: sp.list_traces("default", TraceFilter(min_duration_ms=2000))),
        (
            "prompt support-system@3",
            lambda: sp.list_traces(
                "default", TraceFilter(prompt_name="support-system", prompt_version=3)
            ),
        ),
        ("sort by duration", lambda: sp.list_traces("default", sort="duration")),
        ("sort by cost", lambda: sp.list_traces("default", sort="cost")),
        (
            "text 'lookup' in span names",
            lambda: sp.list_traces("default", TraceFilter(text="lookup")),
        ),
        (
            "text (no match, full scan)",
            lambda: sp.list_traces("default", TraceFilter(text="zzz-nothing")),
        ),
        ("get_trace", lambda: sp.get_trace("default", first.items[3].trace_id)),
    ]
    out = []
    for name, fn in cases:
        times = []
        n = 0
        for _ in range(repeat):
            t = time.perf_counter()
            r = fn()
            times.append(time.perf_counter() - t)
            n = len(r.items) if hasattr(r, "items") else len(r.spans)
        out.append((name, statistics.median(times) * 1000, n))
    store.close()
    return out


# ----------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--quick", action="store_true", help="short run: 5 s load, 100k spans for the list"
    )
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument(
        "--workers", default="1,2", help="comma-separated `keel serve --workers` values to run"
    )
    ap.add_argument("--batch", type=int, default=300, help="spans per request")
    ap.add_argument("--gzip", action="store_true", help="gzip request bodies")
    ap.add_argument(
        "--auth",
        choices=["key", "open"],
        default="key",
        help="send a project API key (default) or use loopback dev mode without one",
    )
    ap.add_argument("--postgres", help="Postgres admin URL; a scratch database is created")
    ap.add_argument("--list-spans", type=int, default=1_000_000)
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-list", action="store_true")
    ap.add_argument("--phoenix-venv", help="a venv with arize-phoenix installed, run side by side")
    ap.add_argument("--phoenix-spans", type=int, default=6000, help="spans posted to Phoenix")
    ap.add_argument("--workdir", default=None)
    ap.add_argument(
        "--stages", action="store_true", help="also time each ingest stage (CPU µs per span)"
    )
    args = ap.parse_args()
    if args.quick:
        args.seconds = 5
        args.list_spans = min(args.list_spans, 100_000)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="keel-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start")
    if not args.skip_ingest:
        payloads = make_payloads(40, args.batch)
        avg_kb = sum(len(b) for b, _ in payloads) / sum(n for _, n in payloads) / 1024
        print(
            f"payloads: {len(payloads)} × ~{args.batch} spans, {avg_kb:.2f} KiB protobuf per span"
        )
        db = work / "ingest.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        for w in [int(x) for x in args.workers.split(",")]:
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            r = bench_keel(
                f"sqlite:///{db}",
                payloads,
                args.seconds,
                max(args.clients, 3 * w),
                args.gzip,
                w,
                auth=args.auth,
            )
            print(f"keel sqlite ×{w}: {r['spans_per_s']:>8,} spans/s persisted  {r}")
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        r = bench_inproc(f"sqlite:///{db}", payloads, args.seconds)
        print(f"  in-process  : {r['spans_per_s']:>8,} spans/s persisted (no HTTP)  {r}")
        if args.stages:
            print(f"  stages (CPU µs/span, one thread, best of 3): {bench_stages(payloads)}")
        if args.postgres:
            import psycopg

            admin = args.postgres.replace("postgresql+psycopg", "postgresql")
            name = f"keel_bench_{os.getpid()}"
            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}"')
                c.execute(f'CREATE DATABASE "{name}"')
            url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
            try:
                r = bench_keel(url, payloads, args.seconds, args.clients, args.gzip, auth=args.auth)
                print(f"keel postgres : {r['spans_per_s']:>8,} spans/s persisted  {r}")
            finally:
                with psycopg.connect(admin, autocommit=True) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if args.phoenix_venv:
            r = bench_phoenix(args.phoenix_venv, payloads, args.phoenix_spans, work)
            print(f"phoenix       : {r['persisted_per_s']:>8,} spans/s persisted  {r}")

    if not args.skip_list:
        db = work / "list.db"
        url = f"sqlite:///{db}"
        if not db.exists():
            dt = fill_store(url, args.list_spans)
            print(
                f"filled {args.list_spans:,} spans via the store API in {dt:.0f} s ({args.list_spans / dt:,.0f} spans/s)"
            )
        size = sum(p.stat().st_size for p in work.glob("list.db*"))
        print(
            f"trace list over {args.list_spans:,} spans (SQLite, {size / 2**20:.0f} MiB), median of 5:"
        )
        for name, ms, n in time_queries(url):
            print(f"  {name:<32} {ms:8.1f} ms  ({n} rows)")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
