"""The ingest writer decodes request bodies on its own thread; SQLite checkpoints off its path."""

from __future__ import annotations

import time

import pytest
from _ingest_helpers import agent_trace

from keel.errors import InvalidInputError
from keel.otlp.decode import FAST_PATH, DecodedBatch, decode_request, estimate_spans
from keel.otlp.encode import encode_protobuf
from keel.server.ingest import IngestWriter
from keel.storage import open_store

PB = "application/x-protobuf"


@pytest.fixture
def writer(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'w.db'}")
    w = IngestWriter(store)
    w.start()
    yield w, store
    w.stop()
    store.close()


def test_a_bad_body_fails_alone_and_good_ones_commit(writer):
    w, store = writer
    good = [encode_protobuf(agent_trace(f"g{i}")) for i in range(3)]
    futs = [w.submit_decode(lambda b=b: decode_request(b, PB), estimate=4) for b in good[:2]]
    bad = w.submit_decode(lambda: decode_request(b"\xff\xff not protobuf", PB), estimate=1)
    futs.append(w.submit_decode(lambda: decode_request(good[2], PB), estimate=4))
    for f in futs:
        batch = f.result(10)
        assert isinstance(batch, DecodedBatch) and len(batch.spans) == 4
    with pytest.raises(InvalidInputError):
        bad.result(10)
    assert store.spans.count_spans() == 12
    assert w.pending_spans == 0


def test_estimates_are_replaced_by_real_counts(writer):
    w, _ = writer
    body = encode_protobuf(agent_trace("est"))
    if FAST_PATH:  # exact with the compiled fast path; a byte estimate without it
        assert estimate_spans(body, PB, None) == 4
    assert estimate_spans(body, PB, None) >= 1
    assert estimate_spans(body, "application/json", None) >= 1
    assert w.submit_decode(lambda: decode_request(body, PB), estimate=1000).result(10)
    assert w.pending_spans == 0  # the 1,000 estimate did not leak into the accounting


def test_wal_is_checkpointed_in_the_background(tmp_path):
    db = tmp_path / "c.db"
    store = open_store(f"sqlite:///{db}")
    w = IngestWriter(store)
    w.start()
    try:
        size0 = db.stat().st_size
        for i in range(30):
            body = encode_protobuf(agent_trace(f"c{i}", extra={"pad": "x" * 3000}))
            w.submit_decode(lambda b=body: decode_request(b, PB), estimate=4).result(10)
        # Commits land in the WAL; the automatic checkpoint (64 MiB backstop) never ran, so
        # the database file grows only if the background thread copied the pages over.
        deadline = time.monotonic() + 5
        while db.stat().st_size <= size0 + 100_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.stat().st_size > size0 + 100_000
        assert store.spans.count_spans() == 120
    finally:
        w.stop()
        store.close()


def test_writer_prepares_queued_bodies_while_another_process_holds_the_lock(tmp_path):
    """With ``--workers N`` on one SQLite file, a writer blocked on the write lock decodes the
    bodies queued behind its batch instead of sleeping, and commits them next."""
    import fcntl
    import os
    import threading

    db = tmp_path / "lock.db"
    store = open_store(f"sqlite:///{db}")
    w = IngestWriter(store, batch_max_spans=8)
    w.start()
    other = os.open(f"{db}-keel-write.lock", os.O_RDWR | os.O_CREAT)
    decoded: list[int] = []
    all_decoded = threading.Event()
    queued = threading.Event()

    def body(i: int):
        raw = encode_protobuf(agent_trace(f"held{i}"))

        def decode() -> DecodedBatch:
            if i == 0:
                # the writer reaches the lock only once 1 and 2 are queued: a writer that finds
                # nothing to prepare blocks on the lock (CI once ran it ahead of the submits)
                assert queued.wait(10)
            out = decode_request(raw, PB)
            decoded.append(i)
            if len(decoded) == 3:
                all_decoded.set()
            return out

        return decode

    try:
        fcntl.flock(other, fcntl.LOCK_EX)  # "the other worker process" is writing
        # body 0 fills a batch on its own (estimate 8 of 8); 1 and 2 queue behind it
        futs = [w.submit_decode(body(0), estimate=8)]
        futs += [w.submit_decode(body(i), estimate=4) for i in (1, 2)]
        queued.set()
        assert all_decoded.wait(10), decoded  # bodies 1 and 2 decoded while the lock was held
        assert not any(f.done() for f in futs)
        assert store.spans.count_spans() == 0
        fcntl.flock(other, fcntl.LOCK_UN)
        for f in futs:
            assert len(f.result(10).spans) == 4
        assert store.spans.count_spans() == 12
        assert w.batches == 2  # body 0 alone, then the two prepared while waiting
        assert w.pending_spans == 0
    finally:
        os.close(other)
        w.stop()
        store.close()


def test_prepared_bodies_fail_loudly_if_the_writer_stops(tmp_path):
    import fcntl
    import os

    from keel.errors import UnavailableError

    db = tmp_path / "stop.db"
    store = open_store(f"sqlite:///{db}")
    w = IngestWriter(store)
    w.start()
    other = os.open(f"{db}-keel-write.lock", os.O_RDWR | os.O_CREAT)
    raw = encode_protobuf(agent_trace("stopping"))
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        first = w.submit_decode(lambda: decode_request(raw, PB), estimate=5000)
        second = w.submit_decode(lambda: decode_request(raw, PB), estimate=4)
        deadline = time.monotonic() + 10
        while not w._ready and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w._ready  # prepared, waiting for the lock
        w.stop(timeout=0.5)  # the writer is stuck on the lock: stop gives up on it
        with pytest.raises(UnavailableError):
            second.result(1)
        fcntl.flock(other, fcntl.LOCK_UN)
        first.result(10)  # the batch in flight still commits once the lock is free
    finally:
        os.close(other)
        store.close()
