"""Gateway overhead: added latency and max throughput on one core, beside peer gateways.

    python bench/gateway.py            # full run (~10 min with peers)
    python bench/gateway.py --quick    # short run (~1 min), Keel only unless --peers

Layout (reference/DESIGN.md "Measured floors"): a mock OpenAI upstream (raw asyncio + uvloop,
fixed ``chat.completion`` body) and ``wrk`` share core 0; the gateway under test runs alone on
core 1 (``taskset``). Keel runs with what production runs: a real API key checked on every
request, a configured route (weighted split over one target, retries, circuit breaker), a
span per request written through the ingest writer into SQLite. Figures:

* added latency = gateway p50/p99 minus direct-to-mock p50/p99, one request in flight;
* max requests/s with 50 in flight;
* RSS of the gateway over a soak (``--soak N`` requests) to show memory stays flat.

Peers, each in its own environment under /tmp/gwbench (installed on first use where they
install): LiteLLM proxy (pip), Portkey gateway (npm), TensorZero (pip). Their ratios to Keel
are printed when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("KEEL_BENCH_PEERS", "/tmp/gwbench"))
BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Say hello to the benchmark."}],
    "max_tokens": 16,
}
MOCK_RESPONSE = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello, benchmark!"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16},
    },
    separators=(",", ":"),
).encode()


# ------------------------------------------------------------------------------ mock upstream


class _MockProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive server: every POST gets the fixed completion."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buf[:head_end].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15 : j if j > 0 else None].strip())
            total = head_end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            self.t.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(MOCK_RESPONSE)).encode()
                + b"\r\n\r\n"
                + MOCK_RESPONSE
            )


def serve_mock(port: int) -> None:
    """Run the mock upstream forever."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    srv = loop.run_until_complete(
        loop.create_server(_MockProtocol, "127.0.0.1", port, backlog=1024)
    )
    try:
        loop.run_forever()
    finally:
        srv.close()


# ------------------------------------------------------------------------------ keel server


def serve_keel(port: int, upstream: str, workdir: Path, tracing: bool) -> None:
    """Run Keel with a key, a route to the mock, and tracing into SQLite."""
    import uvicorn

    from keel.server.app import create_app
    from keel.server.auth import create_api_key
    from keel.settings import Settings
    from keel.storage import open_store

    url = f"sqlite:///{workdir / 'keel.db'}"
    store = open_store(url)
    project = store.projects.find_project_by_name("bench") or store.projects.add_project("bench")
    _, secret = create_api_key(store, project, name=f"bench-{os.getpid()}")
    (workdir / "key").write_text(secret)
    gateway = {
        "providers": {"mock": {"type": "openai_compatible", "base_url": upstream}},
        "routes": {
            "bench": {
                "targets": [{"provider": "mock", "model": "bench-model", "weight": 1}],
                "retries": 1,
                "circuit_breaker": {"failures": 5, "cooldown_s": 30},
            }
        },
        "reload_interval_s": 1.0,
    }
    settings = Settings(store={"url": url}, gateway=gateway)
    app = create_app(settings, store)
    if not tracing:
        from keel.server.routes import gateway as gw_routes

        gw_routes._sink = lambda ctx: None  # type: ignore[assignment]
    # as `keel serve` does: without it a full collection of the heap stalls the loop for
    # tens of ms now and then (the 50 ms p99 at one request in flight of earlier runs)
    from keel.cli.serve import tune_runtime

    tune_runtime()
    if os.environ.get("KEEL_BENCH_SWITCH_INTERVAL"):
        sys.setswitchinterval(float(os.environ["KEEL_BENCH_SWITCH_INTERVAL"]))
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


# ------------------------------------------------------------------------------ memory probes


def mem_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS and its split (RssAnon = heap/anonymous mmaps, RssFile = file pages such as an
    mmap'ed database or shared libraries, RssShmem) from ``/proc/<pid>/status``, in MiB."""
    out: dict[str, float] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    except OSError:
        pass
    return out


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",  # bytes obtained with brk/heap mmaps, all arenas (not big mmapped chunks)
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",  # bytes in chunks mmapped on their own (>= M_MMAP_THRESHOLD)
            "usmblks",
            "fsmblks",
            "uordblks",  # bytes in use
            "fordblks",  # bytes free inside the arenas (fragmentation / not yet returned)
            "keepcost",
        )
    ]


def malloc_stats() -> dict[str, float]:
    """glibc ``mallinfo2()`` (summed over every arena) and the arena count from
    ``malloc_info``, in MiB; empty where glibc is not the allocator."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    fn.restype = _Mallinfo2
    mi = fn()
    mib = 1024 * 1024
    out = {
        "malloc_in_use": mi.uordblks / mib,
        "malloc_free": mi.fordblks / mib,
        "malloc_mmapped": mi.hblkhd / mib,
        "malloc_arena": mi.arena / mib,
    }
    with tempfile.NamedTemporaryFile(suffix=".xml") as tmp:
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
        fp = libc.fopen(tmp.name.encode(), b"w")
        if fp:
            libc.malloc_info(0, fp)
            libc.fclose(fp)
            out["arenas"] = Path(tmp.name).read_text().count("<heap nr=")
    return out


def sqlite_stats(engine: Any = None) -> dict[str, float]:
    """SQLite's own heap (``sqlite3_memory_used``, every connection in the process) and, for
    the connections pooled in ``engine``, how many there are and their page caches, in MiB."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the library the sqlite3 module is linked to
    except OSError:
        return {}
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    out: dict[str, float] = {"sqlite_heap": lib.sqlite3_memory_used() / 2**20}
    queue = getattr(getattr(getattr(engine, "pool", None), "_pool", None), "queue", None)
    if queue is not None:
        cur, hi = ctypes.c_int(), ctypes.c_int()
        used = 0
        conns = list(queue)
        for rec in conns:
            dbapi = getattr(rec, "dbapi_connection", None)
            if dbapi is None:
                continue
            # CPython's sqlite3 Connection object: PyObject_HEAD, then the sqlite3* handle
            handle = ctypes.c_void_p.from_address(id(dbapi) + 16)
            if lib.sqlite3_db_status(handle, 1, ctypes.byref(cur), ctypes.byref(hi), 0) == 0:
                used += cur.value  # SQLITE_DBSTATUS_CACHE_USED
        out["pooled_conns"] = len(conns)
        out["pooled_cache"] = used / 2**20
    return out


def pymalloc_stats() -> dict[str, float]:
    """Python's small-object allocator: arenas held (MiB) and bytes in live blocks (MiB), from
    ``sys._debugmallocstats`` (it writes to fd 2, so fd 2 is pointed at a file meanwhile)."""
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip("# ").strip()
        if name == "arenas allocated current":
            out["pymalloc_arenas"] = float(value.strip().replace(",", ""))
        elif name == "bytes in allocated blocks":
            out["pymalloc_live"] = int(value.strip().replace(",", "")) / 2**20
    return out


def anon_maps() -> dict[str, float]:
    """Resident anonymous memory by kind of mapping, from ``/proc/self/smaps`` (MiB): the brk
    heap (glibc main arena), 64 MiB-reserved thread arenas of glibc, and other anonymous maps
    (Python arenas, large malloc chunks, thread stacks)."""
    out = {"anon_brk": 0.0, "anon_thread_arenas": 0.0, "anon_other": 0.0}
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return out
    kind = None
    for line in text.splitlines():
        first = line.split(" ", 1)[0]
        if "-" in first and not first.endswith(":"):
            lo, hi = (int(x, 16) for x in first.split("-"))
            parts = line.split()
            path = parts[5] if len(parts) > 5 else ""
            if path == "[heap]":
                kind = "anon_brk"
            elif path == "":
                # glibc thread arenas reserve HEAP_MAX_SIZE (64 MiB) aligned to 64 MiB
                kind = (
                    "anon_thread_arenas"
                    if lo % (64 << 20) == 0 and hi - lo <= 64 << 20
                    else "anon_other"
                )
            else:
                kind = None
        elif kind is not None and line.startswith("Anonymous:"):
            out[kind] += int(line.split()[1]) / 1024
    return out


def malloc_trim() -> None:
    """Return free glibc heap pages to the OS (``malloc_trim(0)``): what is still resident
    afterwards is live memory, what went away was only held free by the allocator."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# ------------------------------------------------------------------------------ in process


def inprocess(
    n: int,
    concurrency: int,
    samples: int,
    workdir: Path,
    upstream: str | None,
    *,
    trace_malloc: bool = False,
    verbose: bool = False,
) -> None:
    """Drive the ASGI app directly (no sockets on the client side): CPU per request of the
    whole pipeline (key check, route, fake or mock upstream, one span per request into SQLite
    through the ingest writer), and RSS at ``samples`` evenly spaced points (memory soak).

    Before each RSS sample the span queue and the ingest writer are drained, so growth means
    retained objects, not backlog."""
    import gc
    import resource

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from keel.server.app import create_app
    from keel.server.auth import create_api_key
    from keel.settings import Settings
    from keel.storage import open_store

    url = f"sqlite:///{workdir / 'keel.db'}"
    store = open_store(url)
    project = store.projects.add_project("bench")
    _, secret = create_api_key(store, project, name="bench")
    if upstream:
        providers = {"mock": {"type": "openai_compatible", "base_url": upstream}}
        target = {"provider": "mock", "model": "bench-model", "weight": 1}
    else:
        providers = {}
        target = {"provider": "fake", "model": "fake:echo", "weight": 1}
    gateway = {
        "providers": providers,
        "routes": {
            "bench": {
                "targets": [target],
                "retries": 1,
                "circuit_breaker": {"failures": 5, "cooldown_s": 30},
            }
        },
    }
    app = create_app(Settings(store={"url": url}, gateway=gateway), store)
    body = json.dumps(BODY).encode()
    scope_base = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {secret}".encode()),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    status_counts: dict[int, int] = {}

    async def one() -> None:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(msg: Any) -> None:
            if msg["type"] == "http.response.start":
                st = msg["status"]
                status_counts[st] = status_counts.get(st, 0) + 1

        await app(dict(scope_base), receive, send)

    def rss() -> float:
        return rss_mb(os.getpid())

    db_path = workdir / "keel.db"

    def probe(done: int) -> dict[str, float]:
        """One soak checkpoint: RSS split, glibc heap, Python objects, SQLite files; then
        ``malloc_trim(0)`` and RSS again (what the trim gives back was free, not leaked)."""
        m: dict[str, float] = {"requests": done, **mem_status()}
        m.update(malloc_stats())
        m.update(sqlite_stats(getattr(getattr(store, "db", None), "engine", None)))
        m["py_blocks_k"] = sys.getallocatedblocks() / 1000
        m.update(pymalloc_stats())
        m.update(anon_maps())
        m["gc_objects_k"] = len(gc.get_objects()) / 1000
        for suffix in ("", "-wal"):
            f = Path(str(db_path) + suffix)
            m["db" + suffix.replace("-", "_") + "_mib"] = (
                f.stat().st_size / 2**20 if f.exists() else 0.0
            )
        t0 = time.perf_counter()
        malloc_trim()
        m["trim_ms"] = 1e3 * (time.perf_counter() - t0)
        m["rss_trimmed"] = mem_status().get("VmRSS", float("nan"))
        m["anon_trimmed"] = mem_status().get("RssAnon", float("nan"))
        return m

    def show(m: dict[str, float]) -> None:
        print(
            f"  {int(m['requests']):>9,} requests  RSS {m.get('VmRSS', 0):7.1f} MiB"
            f" (anon {m.get('RssAnon', 0):.1f}, file {m.get('RssFile', 0):.1f});"
            f" after malloc_trim {m['rss_trimmed']:.1f} (anon {m['anon_trimmed']:.1f});"
            f" malloc in use {m.get('malloc_in_use', 0):.1f}, free {m.get('malloc_free', 0):.1f},"
            f" arenas {m.get('arenas', 0):.0f}; SQLite heap {m.get('sqlite_heap', 0):.1f}"
            f" ({m.get('pooled_conns', 0):.0f} pooled connections, page caches"
            f" {m.get('pooled_cache', 0):.1f}); Python blocks {m['py_blocks_k']:.0f}k,"
            f" gc objects {m['gc_objects_k']:.0f}k; db {m['db_mib']:.0f} MiB,"
            f" wal {m['db_wal_mib']:.0f} MiB",
            flush=True,
        )
        if verbose:
            print("    " + " ".join(f"{k}={v:.1f}" for k, v in m.items()), flush=True)

    async def drain() -> None:
        ctx = app.state.keel
        gw = ctx.extras["gateway"]
        await gw.emitter.flush()
        writer = ctx.extras.get("ingest")
        for _ in range(600):
            if writer is None or writer.pending_spans == 0:
                break
            await asyncio.sleep(0.05)

    async def run_all() -> None:
        async with app.router.lifespan_context(app):
            emitter = app.state.keel.extras["gateway"].emitter
            writer = app.state.keel.extras.get("ingest")
            events = app.state.keel.extras.get("trace_events")
            for _ in range(2000):  # warm-up
                await one()
            await drain()
            gc.collect()
            if trace_malloc:
                import tracemalloc

                tracemalloc.start(8)
                snap0 = tracemalloc.take_snapshot()
            points = [(0, rss())]
            probes = [probe(0)]
            show(probes[0])
            per = n // samples
            done = 0
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            while done < n:
                todo = min(per, n - done)
                k = 0

                high = {"writer": 0, "emitter": 0, "events": 0}

                async def worker(todo: int = todo, high: dict[str, int] = high) -> None:
                    nonlocal k
                    while k < todo:
                        k += 1
                        await one()
                        if k % 64 == 0:  # queue high-water marks between checkpoints
                            if writer is not None:
                                high["writer"] = max(high["writer"], writer.pending_spans)
                            high["emitter"] = max(high["emitter"], len(emitter.pending))
                            if events is not None:
                                high["events"] = max(high["events"], events.pending_spans)
                        # pace to the span writer: the emitter drops spans past its bound
                        # (by design), and a soak must write every span it claims to
                        while len(emitter.pending) > 5_000:
                            await asyncio.sleep(0.005)

                await asyncio.gather(*(worker() for _ in range(concurrency)))
                done += todo
                await drain()
                gc.collect()
                points.append((done, rss()))
                probes.append(probe(done))
                show(probes[-1])
                print(
                    f"    queue high-water since the last checkpoint: ingest writer"
                    f" {high['writer']:,} spans, gateway emitter {high['emitter']:,},"
                    f" trace events {high['events']:,}",
                    flush=True,
                )
                if trace_malloc:
                    snap = tracemalloc.take_snapshot()
                    print(
                        f"    Python heap traced: {tracemalloc.get_traced_memory()[0] / 2**20:.1f}"
                        " MiB; blocks still alive that were allocated since the last checkpoint:"
                    )
                    growth = [st for st in snap.compare_to(snap0, "traceback") if st.count_diff > 0]
                    growth.sort(key=lambda st: -st.count_diff)
                    for st in growth[:6]:
                        where = " <- ".join(
                            f"{Path(fr.filename).name}:{fr.lineno}"
                            for fr in reversed(st.traceback[-4:])
                        )
                        print(
                            f"      {st.count_diff:+8,} blocks {st.size_diff / 2**10:+9.1f} KiB  {where}"
                        )
                    snap0 = snap
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            ru = resource.getrusage(resource.RUSAGE_SELF)
            print(
                f"  in-process: {n:,} requests, {1e6 * cpu / n:.0f} CPU-us/request (all threads, "
                f"incl. span writing), {n / wall:,.0f} req/s wall; statuses {status_counts}; "
                f"max RSS {ru.ru_maxrss / 1024:.1f} MiB; load average {os.getloadavg()[0]:.2f}"
            )
            print(
                "  RSS MiB: " + " -> ".join(f"{x:.1f} @{d:,}" for d, x in points),
                flush=True,
            )
            spans = store.spans.count_spans() if hasattr(store.spans, "count_spans") else None
            if spans is not None:
                print(
                    f"  spans stored: {spans:,} (emitter dropped {emitter.dropped:,}, "
                    f"failed {emitter.failed:,})"
                )

    asyncio.run(run_all())


# ------------------------------------------------------------------------------ harness


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def spawn(
    cmd: list[str], cpu: int | None, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.Popen[bytes]:
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )


def stop(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


WRK_LUA = """
wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
%s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"rps": %%f, "p50": %%d, "p90": %%d, "p99": %%d, "requests": %%d, "errors": %%d}\\n',
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(90), latency:percentile(99),
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout))
end
"""


def wrk(
    url: str,
    conns: int,
    seconds: float,
    headers: dict[str, str],
    body: dict[str, Any],
    cpu: int | None = 0,
) -> dict[str, float]:
    """Run wrk; returns rps and latency percentiles in ms."""
    hdr = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    if shutil.which("wrk") is None:
        sys.exit(
            "wrk is not installed: the load generator of this benchmark "
            "(Debian/Ubuntu: sudo apt-get install wrk)"
        )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA % (json.dumps(body), hdr))
        script = f.name
    cmd = [
        "wrk",
        "-t1",
        f"-c{conns}",
        f"-d{max(1, int(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        script,
        url,
    ]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script)
    line = next(x for x in out.splitlines() if x.startswith("WRKJSON "))
    r = json.loads(line[8:])
    return {
        "rps": r["rps"],
        "p50": r["p50"] / 1000,
        "p90": r["p90"] / 1000,
        "p99": r["p99"] / 1000,
        "requests": r["requests"],
        "errors": r["errors"],
    }


def rss_mb(pid: int) -> float:
    """Resident memory of a process tree's leader, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child_pid(p: subprocess.Popen[bytes]) -> int:
    """The real server pid under ``taskset`` (taskset execs, so it is the same)."""
    return p.pid


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process and its reaped children (all threads)."""
    if pid is None:
        return float("nan")
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    return (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick


def thread_cpu(pid: int | None) -> dict[str, float]:
    """CPU seconds per thread name of a process (``/proc/<pid>/task``)."""
    out: dict[str, float] = {}
    if pid is None:
        return out
    tick = os.sysconf("SC_CLK_TCK")
    for t in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = (t / "comm").read_text().strip()
            f = (t / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = "main" if t.name == str(pid) else name
        out[key] = out.get(key, 0.0) + (int(f[11]) + int(f[12])) / tick
    return out


def measure(
    name: str,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    a: argparse.Namespace,
    pid: int | None = None,
) -> dict[str, float]:
    wrk(url, 1, 2, headers, body)  # warm up
    lat = wrk(url, 1, a.seconds, headers, body)
    c0 = cpu_seconds(pid)
    t0 = thread_cpu(pid)
    thr = wrk(url, 50, a.seconds, headers, body)
    cpu = cpu_seconds(pid) - c0
    t1 = thread_cpu(pid)
    if thr["requests"] and name != "direct":
        split = {k: 1e6 * (v - t0.get(k, 0.0)) / thr["requests"] for k, v in t1.items()}
        split = {k: v for k, v in sorted(split.items(), key=lambda kv: -kv[1]) if v >= 1}
        print(
            f"  {name:<12} CPU-us/req by thread: "
            + ", ".join(f"{k} {v:.0f}" for k, v in split.items()),
            flush=True,
        )
    cpu_us = 1e6 * cpu / thr["requests"] if thr["requests"] else float("nan")
    res = {
        "p50": lat["p50"],
        "p99": lat["p99"],
        "rps": thr["rps"],
        "errors": lat["errors"] + thr["errors"],
        "p50_50": thr["p50"],
        "cpu_us_per_req": cpu_us,
    }
    print(
        f"  {name:<12} 1 in flight: p50 {lat['p50']:.3f} ms p99 {lat['p99']:.3f} ms | 50 in flight: "
        f"{thr['rps']:,.0f} req/s (p50 {thr['p50']:.2f} ms), {cpu_us:.0f} CPU-us/req | errors {res['errors']}",
        flush=True,
    )
    return res


# ------------------------------------------------------------------------------ peers


def run_litellm(mock_url: str, a: argparse.Namespace) -> dict[str, float] | None:
    exe = PEERS_DIR / "litellm-venv" / "bin" / "litellm"
    if not exe.exists():
        print(
            "  litellm: not installed (python -m venv /tmp/gwbench/litellm-venv && pip install 'litellm[proxy]')"
        )
        return None
    port = free_port()
    cfg = PEERS_DIR / "litellm.yaml"
    cfg.write_text(
        f"model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench-model\n      api_base: {mock_url}\n      api_key: sk-bench\n"
        "litellm_settings:\n  telemetry: false\n"
    )
    p = spawn(
        [str(exe), "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
        1,
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )
    try:
        wait_port(port, 180)
        time.sleep(2)
        return measure(
            "litellm",
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"Authorization": "Bearer sk-bench"},
            BODY,
            a,
            p.pid,
        )
    except Exception as e:
        print(f"  litellm: failed ({e})")
        return None
    finally:
        stop(p)


def run_portkey(mock_url: str, a: argparse.Namespace) -> dict[str, float] | None:
    base = PEERS_DIR / "portkey" / "node_modules" / "@portkey-ai" / "gateway"
    entry = next(
        (
            p
            for p in (base / "build" / "start-server.js", base / "dist" / "start-server.js")
            if p.exists()
        ),
        None,
    )
    if entry is None:
        print("  portkey: not installed (npm install @portkey-ai/gateway in /tmp/gwbench/portkey)")
        return None
    port = free_port()
    p = spawn(["node", str(entry), f"--port={port}"], 1, cwd=str(base))
    try:
        wait_port(port, 60)
        time.sleep(1)
        headers = {
            "Authorization": "Bearer sk-bench",
            "x-portkey-provider": "openai",
            "x-portkey-custom-host": mock_url,
        }
        body = {**BODY, "model": "bench-model"}
        return measure(
            "portkey", f"http://127.0.0.1:{port}/v1/chat/completions", headers, body, a, p.pid
        )
    except Exception as e:
        print(f"  portkey: failed ({e})")
        return None
    finally:
        stop(p)


TZ_RUNNER = """
import sys, time, tensorzero
gw = tensorzero._start_http_gateway(config_file=sys.argv[1], clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False)
open(sys.argv[2], "w").write(gw.base_url)
while True:
    time.sleep(3600)
"""


def run_tensorzero(mock_url: str, a: argparse.Namespace) -> dict[str, float] | None:
    """TensorZero's PyPI wheel embeds its Rust gateway; ``_start_http_gateway`` serves it over HTTP."""
    py = PEERS_DIR / "tz-venv" / "bin" / "python"
    if not py.exists():
        print(
            "  tensorzero: not installed (python -m venv /tmp/gwbench/tz-venv && pip install tensorzero)"
        )
        return None
    cfg = PEERS_DIR / "tensorzero.toml"
    cfg.write_text(
        '[models.bench]\nrouting = ["mock"]\n\n[models.bench.providers.mock]\ntype = "openai"\n'
        f'model_name = "bench-model"\napi_base = "{mock_url}/"\napi_key_location = "none"\n'
    )
    runner = PEERS_DIR / "tz_run.py"
    runner.write_text(TZ_RUNNER)
    url_file = PEERS_DIR / "tz-url"
    url_file.unlink(missing_ok=True)
    p = spawn([str(py), str(runner), str(cfg), str(url_file)], 1)
    try:
        deadline = time.time() + 60
        while not url_file.exists() or not url_file.read_text():
            if time.time() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.2)
        base = url_file.read_text().strip()
        body = {**BODY, "model": "tensorzero::model_name::bench"}
        return measure("tensorzero", f"{base}/chat/completions", {}, body, a, p.pid)
    except Exception as e:
        print(f"  tensorzero: failed ({e})")
        return None
    finally:
        stop(p)


# ------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description="gateway overhead benchmark")
    ap.add_argument("--quick", action="store_true", help="short runs, no peers, small soak")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per wrk run")
    ap.add_argument("--peers", action="store_true", help="also run peers in --quick mode")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--soak", type=int, default=None, help="requests in the memory soak (0 = skip)")
    ap.add_argument(
        "--no-tracing", action="store_true", help="run Keel without span writing (to see its cost)"
    )
    ap.add_argument("_role", nargs="?", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument(
        "--inprocess",
        type=int,
        metavar="N",
        help="drive the ASGI app in process N times (CPU per request + RSS soak; no wrk)",
    )
    ap.add_argument(
        "--concurrency", type=int, default=50, help="in-flight requests for --inprocess"
    )
    ap.add_argument(
        "--samples", type=int, default=4, help="memory checkpoints in an --inprocess soak"
    )
    ap.add_argument(
        "--tracemalloc",
        action="store_true",
        help="--inprocess: trace the Python heap and print its top growth at each checkpoint",
    )
    ap.add_argument("--verbose", action="store_true", help="--inprocess: print every memory probe")
    ap.add_argument(
        "--mock-upstream",
        action="store_true",
        help="--inprocess against the mock upstream over loopback (default: the fake provider)",
    )
    a = ap.parse_args()
    if a.inprocess:
        work = Path(tempfile.mkdtemp(prefix="keel-gwsoak-"))
        mock = None
        upstream = None
        if a.mock_upstream:
            mport = free_port()
            mock = spawn([sys.executable, __file__, "mock", "--port", str(mport)], 0)
            wait_port(mport)
            upstream = f"http://127.0.0.1:{mport}/v1"
        print(
            f"gateway in-process run: {a.inprocess:,} requests, {a.concurrency} in flight, "
            f"upstream {'mock over loopback' if upstream else 'fake provider'}, "
            f"load average {os.getloadavg()[0]:.2f} at start",
            flush=True,
        )
        try:
            inprocess(
                a.inprocess,
                a.concurrency,
                a.samples,
                work,
                upstream,
                trace_malloc=a.tracemalloc,
                verbose=a.verbose,
            )
        finally:
            if mock is not None:
                stop(mock)
            shutil.rmtree(work, ignore_errors=True)
        return
    if a._role == "mock":
        serve_mock(a.port)
        return
    if a._role == "keel":
        serve_keel(a.port, a.upstream, Path(a.workdir), not a.no_tracing)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    a.seconds = a.seconds or (3 if a.quick else 10)
    soak = a.soak if a.soak is not None else (20_000 if a.quick else 200_000)
    peers = (a.peers or not a.quick) and not a.no_peers
    load = os.getloadavg()
    print(
        f"gateway bench: {os.cpu_count()} cores, load average {load[0]:.2f} at start; wrk + mock on cpu0, gateway on cpu1",
        flush=True,
    )

    mport = free_port()
    mock = spawn([sys.executable, __file__, "mock", "--port", str(mport)], 0)
    mock_url = f"http://127.0.0.1:{mport}/v1"
    results: dict[str, dict[str, float]] = {}
    try:
        wait_port(mport)
        results["direct"] = measure("direct", f"{mock_url}/chat/completions", {}, BODY, a, mock.pid)

        work = Path(tempfile.mkdtemp(prefix="keel-gwbench-"))
        kport = free_port()
        args = [
            sys.executable,
            __file__,
            "keel",
            "--port",
            str(kport),
            "--upstream",
            mock_url,
            "--workdir",
            str(work),
        ]
        if a.no_tracing:
            args.append("--no-tracing")
        keel = spawn(args, 1, env={"PYTHONPATH": str(ROOT / "src")})
        try:
            wait_port(kport, 60)
            key = (work / "key").read_text()
            kurl = f"http://127.0.0.1:{kport}/v1/chat/completions"
            hdr = {"Authorization": f"Bearer {key}"}
            results["keel"] = measure("keel", kurl, hdr, BODY, a, keel.pid)
            if soak:
                pid = child_pid(keel)
                rss = [rss_mb(pid)]
                per = max(1, soak // 4)
                done = 0
                while done < soak:
                    # wrk runs by time: size each slice from the measured rate
                    secs = max(1.0, per / max(results["keel"]["rps"], 1.0))
                    r = wrk(kurl, 50, secs, hdr, BODY)
                    done += int(r["requests"])
                    rss.append(rss_mb(pid))
                growth = rss[-1] - rss[1] if len(rss) > 2 else float("nan")
                results["soak"] = {
                    "requests": done,
                    "rss_start": rss[0],
                    "rss_after_first": rss[1],
                    "rss_end": rss[-1],
                    "growth_after_first": growth,
                }
                print(
                    f"  soak: {done:,} requests, RSS MiB {' -> '.join(f'{x:.1f}' for x in rss)} (growth after the first quarter {growth:+.1f} MiB)",
                    flush=True,
                )
        finally:
            stop(keel)
            shutil.rmtree(work, ignore_errors=True)
        if peers:
            for name, fn in (
                ("litellm", run_litellm),
                ("portkey", run_portkey),
                ("tensorzero", run_tensorzero),
            ):
                r = fn(mock_url, a)
                if r is not None:
                    results[name] = r
    finally:
        stop(mock)

    d = results["direct"]
    print(
        "\n| gateway | added p50 (ms) | added p99 (ms) | req/s @50 | CPU-us/req | req/s per free core | Keel ratio (rps) |"
    )
    print("|---|---|---|---|---|---|---|")
    k = results.get("keel")
    for name in ("keel", "litellm", "portkey", "tensorzero"):
        r = results.get(name)
        if r is None:
            continue
        ratio = f"{k['rps'] / r['rps']:.2f}x" if k and name != "keel" and r["rps"] > 0 else "-"
        cpu = r.get("cpu_us_per_req", float("nan"))
        per_core = 1e6 / cpu if cpu == cpu and cpu > 0 else float("nan")
        print(
            f"| {name} | {r['p50'] - d['p50']:.3f} | {r['p99'] - d['p99']:.3f} | {r['rps']:,.0f} "
            f"| {cpu:.0f} | {per_core:,.0f} | {ratio} |"
        )
    print(
        f"| direct to mock | (p50 {d['p50']:.3f}) | (p99 {d['p99']:.3f}) | {d['rps']:,.0f} "
        f"| {d.get('cpu_us_per_req', float('nan')):.0f} | - | - |"
    )
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
    main()
