"""Where the gateway's tail at one request in flight comes from: CPU split, stored spans, burners.

    python bench/gateway_tail.py                      # 1 then 50 in flight, 5 s each
    python bench/gateway_tail.py --no-tracing         # the request path alone
    python bench/gateway_tail.py --conns 1,50,1 --seconds 8
    python bench/gateway_tail.py --no-tracing --burner idle --duty 0.3 --yield-us 50

Same layout as ``bench/gateway.py`` (whose functions it uses): mock upstream and wrk on cpu0,
Keel (key check, route, SQLite tracing) pinned to cpu1. Per phase it prints wrk's rate and
percentiles, the gateway's CPU per request split into user/system time and per thread, and at
the end how many spans were stored against requests sent (waiting until the count settles), so
a variant that "wins" by deferring span writing past the run shows up.

``--burner`` adds a synthetic CPU load pinned to the gateway's core (``idle``: SCHED_IDLE,
``normal``: normal priority), busy for ``--duty`` of every ``--burst-ms`` and, with
``--yield-us``, calling ``sched_yield()`` every that many µs of work: the calibration in
docs/bench-gateway.md (which kinds of background work hurt the tail).
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_gateway", HERE / "gateway.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _burn(cpu: int, policy: str, duty: float, burst_s: float, yield_s: float) -> None:
    os.sched_setaffinity(0, {cpu})
    if policy == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    clock = time.perf_counter
    while True:
        t = clock()
        while clock() - t < burst_s * duty:
            if yield_s:
                c = clock()
                while clock() - c < yield_s:
                    pass
                os.sched_yield()
        if duty < 1:
            time.sleep(burst_s * (1 - duty))


def _stat(pid: int) -> tuple[float, float]:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tick, int(f[12]) / tick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--conns", default="1,50", help="connections per phase, comma-separated")
    ap.add_argument("--no-tracing", action="store_true")
    ap.add_argument("--burner", choices=("none", "idle", "normal"), default="none")
    ap.add_argument("--duty", type=float, default=0.3)
    ap.add_argument("--burst-ms", type=float, default=20.0)
    ap.add_argument("--yield-us", type=float, default=0.0)
    a = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        sys.exit("needs 2 cores (cpu0: mock + wrk, cpu1: gateway)")
    gb = _bench()
    mport = gb.free_port()
    mock = gb.spawn([sys.executable, str(HERE / "gateway.py"), "mock", "--port", str(mport)], 0)
    burner = None
    keel = None
    try:
        gb.wait_port(mport)
        work = Path(tempfile.mkdtemp(prefix="keel-tail-"))
        kport = gb.free_port()
        cmd = [sys.executable, str(HERE / "gateway.py"), "keel", "--port", str(kport)]
        cmd += ["--upstream", f"http://127.0.0.1:{mport}/v1", "--workdir", str(work)]
        if a.no_tracing:
            cmd.append("--no-tracing")
        keel = gb.spawn(cmd, 1, env={"PYTHONPATH": str(HERE.parent / "src")})
        gb.wait_port(kport, 60)
        url = f"http://127.0.0.1:{kport}/v1/chat/completions"
        hdr = {"Authorization": f"Bearer {(work / 'key').read_text()}"}
        total = gb.wrk(url, 1, 2, hdr, gb.BODY)["requests"]  # warm up
        if a.burner != "none":
            burner = mp.Process(
                target=_burn,
                args=(1, a.burner, a.duty, a.burst_ms / 1000, a.yield_us / 1e6),
                daemon=True,
            )
            burner.start()
        time.sleep(1)
        print(
            f"# gateway tail: tracing {'off' if a.no_tracing else 'on'}, burner {a.burner}"
            + (f" duty {a.duty} burst {a.burst_ms} ms yield {a.yield_us} µs" if burner else "")
        )
        print(
            "| in flight | req/s | p50 ms | p90 ms | p99 ms | CPU-µs/req (user + sys) | by thread |"
        )
        print("|---|---|---|---|---|---|---|")
        for c in [int(x) for x in a.conns.split(",")]:
            u0, s0 = _stat(keel.pid)
            th0 = gb.thread_cpu(keel.pid)
            r = gb.wrk(url, c, a.seconds, hdr, gb.BODY)
            n = max(1, int(r["requests"]))
            total += n
            u1, s1 = _stat(keel.pid)
            th1 = gb.thread_cpu(keel.pid)
            threads = ", ".join(
                f"{k} {1e6 * (v - th0.get(k, 0)) / n:.0f}"
                for k, v in sorted(th1.items())
                if v - th0.get(k, 0) > 0.01
            )
            print(
                f"| {c} | {r['rps']:,.0f} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | "
                f"{1e6 * (u1 - u0 + s1 - s0) / n:.0f} ({1e6 * (u1 - u0) / n:.0f} + "
                f"{1e6 * (s1 - s0) / n:.0f}) | {threads} |",
                flush=True,
            )
            time.sleep(1.5)
        if not a.no_tracing:
            db = sqlite3.connect(work / "keel.db")
            prev, stored, waited = -1, 0, 0.0
            while waited < 20:
                stored = db.execute("SELECT count(*) FROM spans").fetchone()[0]
                if stored == prev and stored >= total:
                    break
                prev = stored
                time.sleep(0.5)
                waited += 0.5
            print(f"spans stored {stored:,} of {total:,} requests ({waited:.1f} s after the run)")
    finally:
        if burner is not None:
            burner.kill()
        if keel is not None:
            gb.stop(keel)
        gb.stop(mock)


if __name__ == "__main__":
    main()
