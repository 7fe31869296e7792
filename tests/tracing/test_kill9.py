"""A 200 from ``/v1/traces`` means durable: ``kill -9`` right after acknowledgements loses nothing."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time

import pytest
from _ingest_helpers import free_port, llm_span

from keel.otlp.encode import encode_protobuf
from keel.storage import open_store


def _batch(sender: int, n: int) -> tuple[bytes, list[tuple[str, str]]]:
    spans = [
        llm_span(f"k9-{sender}-{n}-{i // 20}", f"s{i}", extra={"payload": "x" * 2000})
        for i in range(100)
    ]
    return encode_protobuf(spans), [(s.trace_id, s.span_id) for s in spans]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_kill9_loses_no_acknowledged_span(tmp_path, workers, keel_serve):
    db = tmp_path / "k9.db"
    port = free_port()
    proc = keel_serve(db, port, workers=workers, new_session=True, timeout=30)
    acked: list[tuple[str, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        n = 0
        while not stop.is_set():
            body, ids = _batch(i, n)
            n += 1
            try:
                conn.request(
                    "POST",
                    "/v1/traces",
                    body=body,
                    headers={"Content-Type": "application/x-protobuf"},
                )
                r = conn.getresponse()
                r.read()
            except OSError:
                return
            if r.status == 200:
                with lock:
                    acked.extend(ids)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 800:
                break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # every process; requests are still in flight
    with lock:
        snapshot = list(acked)
    stop.set()
    for t in threads:
        t.join(15)
    proc.wait(10)
    with lock:
        final = list(acked)  # a 200 can only have been read before the kill
    assert len(final) >= len(snapshot) >= 800

    # restart the server on the same file: it must start and see everything acknowledged
    proc2 = keel_serve(db, port, new_session=True, timeout=30)
    try:
        store = open_store(f"sqlite:///{db}")
        projects = {p.name: p.id for p in store.projects.list_projects()}
        pid = projects["default"]
        missing = [(t, s) for t, s in final if store.spans.find_span(pid, t, s) is None]
        assert missing == [], f"{len(missing)} acknowledged spans lost"
        assert store.spans.count_spans(pid) >= len(set(final))
        store.close()
    finally:
        proc2.kill()
        proc2.wait(10)
