"""How fast Keel reads the LLM view (``to_llm_call``) and prices it, per span.

Uses the real-library fixture corpus (tests/fixtures/otlp) plus plain HTTP spans, which make up
most traffic and must cost next to nothing.

    python bench/dialects.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "otlp"))

from otlp_decode import decode_spans  # noqa: E402

from keel.core.spans import Span  # noqa: E402
from keel.otlp.cost import price_llm_call  # noqa: E402
from keel.otlp.dialects import to_llm_call  # noqa: E402


def _http_span(i: int) -> Span:
    return Span(
        trace_id=f"{i:032x}",
        span_id=f"{i:016x}",
        name="GET /api/items",
        start_time_ns=0,
        end_time_ns=1,
        attributes={
            "http.request.method": "GET",
            "url.path": f"/api/items/{i}",
            "http.route": "/api/items/{id}",
            "http.response.status_code": 200,
            "server.address": "api.internal",
            "server.port": 8080,
            "user_agent.original": "python-httpx/0.28",
            "network.protocol.version": "1.1",
        },
    )


def _bench(label: str, spans: list[Span], n: int, fn) -> None:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    count = 0
    while count < n:
        for s in spans:
            fn(s)
            count += 1
    dt = time.perf_counter() - t
    print(f"{label:42s} {dt / count * 1e6:8.1f} us/span  {count / dt:10.0f} spans/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 2_000 if args.quick else 50_000
    llm: list[Span] = []
    for pb in sorted((ROOT / "tests" / "fixtures" / "otlp").glob("*/*.pb")):
        llm += [s for s in decode_spans(pb.read_bytes()) if to_llm_call(s) is not None]
    http = [_http_span(i) for i in range(100)]
    print(
        f"{len(llm)} LLM spans from {len(list((ROOT / 'tests/fixtures/otlp').glob('*/*.pb')))} fixture payloads"
    )
    _bench("to_llm_call, plain HTTP spans", http, n * 4, to_llm_call)
    _bench("to_llm_call, LLM spans (all dialects)", llm, n, to_llm_call)
    calls = [c for s in llm if (c := to_llm_call(s)) is not None]
    t = time.perf_counter()
    k = 0
    while k < n:
        for c in calls:
            price_llm_call(c)
            k += 1
    dt = time.perf_counter() - t
    print(
        f"{'price_llm_call (cached lookups)':42s} {dt / k * 1e6:8.1f} us/call {k / dt:10.0f} calls/s"
    )


if __name__ == "__main__":
    main()
