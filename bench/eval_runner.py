"""Throughput of the eval runner (``keel.evals.runner``) against a scripted provider.

Scenarios (every row goes through the whole path: prompt-less model target, request hashing,
the provider, 3 local evaluators, results committed to the store as rows complete):

* ``latency``: a provider that answers after 200 ms; 2,000 rows at concurrency 64. The limit
  is concurrency / latency = 320 rows/s; the figure shows how close the runner gets.
* ``scale``: 10,000 rows × 3 local evaluators (same 200 ms provider, concurrency 256).
* ``overhead``: 10,000 rows against a zero-latency provider: the runner's own cost per row.

``--http`` puts the scripted provider behind a real loopback HTTP server (aiohttp) and sends
through Keel's OpenAI-compatible provider instead of calling it in process.

    python bench/eval_runner.py            # full run
    python bench/eval_runner.py --quick    # small and fast
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from typing import Any

from keel.core.datasets import Row
from keel.core.evals import EvalRun
from keel.evals.registry import create_evaluator
from keel.evals.runner import EvalRunner, NamedEvaluator, RunnerOptions
from keel.evals.suite import TargetSpec
from keel.evals.targets import ModelTarget
from keel.gateway.provider import Body, CallContext
from keel.storage import open_store


class ScriptedProvider:
    """Answers with the question after ``latency_s`` (OpenAI ``chat.completion`` shape)."""

    name = "scripted"

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s
        self.calls = 0

    async def chat(self, body: Body, ctx: CallContext) -> Body:
        self.calls += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        text = body["messages"][-1]["content"]
        return {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
        }

    async def embed(self, body: Body, ctx: CallContext) -> Body:  # pragma: no cover
        raise NotImplementedError

    def stream(self, body: Body, ctx: CallContext) -> Any:  # pragma: no cover
        raise NotImplementedError

    def models(self) -> list[str]:
        return ["scripted"]


def _rows(n: int) -> list[Row]:
    return [
        Row(
            id=f"r{i}",
            input=f"Where is the refund policy for order {i}?",
            expected_output=f"Where is the refund policy for order {i}?" if i % 5 else "elsewhere",
        )
        for i in range(n)
    ]


def _evaluators() -> list[NamedEvaluator]:
    return [
        NamedEvaluator(create_evaluator("exact_match")),
        NamedEvaluator(create_evaluator({"Contains": "refund"})),
        NamedEvaluator(create_evaluator("levenshtein")),
    ]


async def _run(
    n: int, concurrency: int, latency: float, store_url: str, http: bool
) -> dict[str, float]:
    store = open_store(store_url)
    run = EvalRun(
        id=f"run_bench{n}{concurrency}{int(latency * 1000)}{time.time_ns()}",
        project_id="bench",
        created_at=store.clock.now(),
    )
    store.evals.add_run(run)
    up = None
    if http:
        import sys

        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "evalci"))
        from upstream import ScriptedUpstream  # type: ignore[import-not-found]

        up = ScriptedUpstream(mode="echo", latency_s=latency).__enter__()
        spec = TargetSpec(model="scripted", base_url=up.base_url)
        from keel.evals.targets import resolve_provider

        provider, key = resolve_provider(spec)
    else:
        spec = TargetSpec(model="scripted")
        provider, key = ScriptedProvider(latency), "scripted"
    target = ModelTarget(spec, provider, key)  # type: ignore[arg-type]
    runner = EvalRunner(
        store.evals, target, _evaluators(), RunnerOptions(concurrency=concurrency, cache=False)
    )
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    pr = await runner.run(run.id, _rows(n))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    stored = len(store.evals.completed_keys(run.id))
    if up is not None:
        up.__exit__(None, None, None)
    store.close()
    assert stored == n, (stored, n)
    return {
        "rows": n,
        "concurrency": concurrency,
        "latency_ms": latency * 1000,
        "wall_s": wall,
        "rows_per_s": n / wall,
        "limit_rows_per_s": concurrency / latency if latency else float("inf"),
        "cpu_ms_per_row": cpu * 1000 / n,
        "pass_rate": pr.pass_rate or 0.0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--http", action="store_true", help="scripted provider over loopback HTTP")
    ap.add_argument("--store", default=None, help="store URL (default: a temp SQLite file)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="keel-bench-")
    url = args.store or f"sqlite:///{tmp}/bench.db"
    scen = (
        [("latency", 400, 64, 0.2), ("scale", 2000, 256, 0.2), ("overhead", 2000, 64, 0.0)]
        if args.quick
        else [("latency", 2000, 64, 0.2), ("scale", 10000, 256, 0.2), ("overhead", 10000, 64, 0.0)]
    )
    print(
        f"store {url.split('://')[0]}, provider {'HTTP loopback' if args.http else 'in process'}, "
        f"3 local evaluators (ExactMatch, Contains, Levenshtein), load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(
        f"{'scenario':10} {'rows':>6} {'conc':>5} {'lat ms':>7} {'wall s':>7} {'rows/s':>8} {'limit':>7} {'cpu ms/row':>11}"
    )
    for name, n, c, lat in scen:
        r = asyncio.run(_run(n, c, lat, url, args.http))
        lim = "–" if r["limit_rows_per_s"] == float("inf") else f"{r['limit_rows_per_s']:.0f}"
        print(
            f"{name:10} {n:>6} {c:>5} {lat * 1000:>7.0f} {r['wall_s']:>7.2f} {r['rows_per_s']:>8.1f} "
            f"{lim:>7} {r['cpu_ms_per_row']:>11.3f}"
        )


if __name__ == "__main__":
    main()
