"""Trace-completion tracking stays bounded when every request is its own trace (the gateway)."""

from __future__ import annotations

import time

from keel.core.spans import Span
from keel.server.ingest import TraceEvents
from keel.storage.spans import SpanRecord


def test_memory_of_finished_traces_is_bounded() -> None:
    ev = TraceEvents(idle_s=0.2, max_tracked=500)
    seen: list[str] = []
    ev.subscribe(lambda e: seen.append(e.trace_id))
    ev.start()
    try:
        for b in range(20):
            ev.observe(
                [
                    SpanRecord(
                        Span(
                            trace_id=f"{b:08x}{i:024x}",
                            span_id="a" * 16,
                            name="x",
                            start_time_ns=1,
                            end_time_ns=2,
                        ),
                        None,
                    )
                    for i in range(250)
                ]
            )
        deadline = time.monotonic() + 10
        while len(seen) < 5000 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        ev.stop()
    assert len(seen) == 5000 and len(set(seen)) == 5000  # each root-ended trace announced once
    assert len(ev._done) <= 500 and len(ev._open) == 0
