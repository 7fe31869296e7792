"""The semantic cache's vector index: row reuse under churn, background retraining."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from keel.gateway.provider import CacheScope
from keel.gateway.semantic_cache import SemanticCache, VectorIndex


def unit_vectors(n: int, dim: int = 32, seed: int = 0, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    data = centers[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def check_invariants(idx: VectorIndex) -> None:
    """Every live row sits in exactly one IVF list at the position it records, with its own
    vector; no list holds a removed row; freed rows are not live."""
    live = set(np.flatnonzero(idx._alive[: idx._n]).tolist())
    assert len(live) == len(idx)
    assert not live & set(idx._free)
    assert len(idx._free) == idx._n - len(live)
    if idx._centroids is None:
        assert (idx._where[: idx._n] == -1).all()
        return
    seen: list[int] = []
    for c, (rows, vecs, n) in enumerate(
        zip(idx._lists, idx._list_vecs, idx._list_len, strict=True)
    ):
        for p, row in enumerate(rows[:n].tolist()):
            assert idx._where[row] == c and idx._pos[row] == p
            assert np.array_equal(vecs[p], idx._vecs[row])
            seen.append(row)
    assert len(seen) == len(set(seen)) and set(seen) == live


def exact_top1(idx: VectorIndex, q: np.ndarray) -> int:
    scores = idx._vecs[: idx._n] @ q
    scores[~idx._alive[: idx._n]] = -2.0
    return int(np.argmax(scores))


def test_churn_reuses_rows_and_keeps_lists_exact() -> None:
    """A cache that keeps replacing entries stays the size of its live rows (it grew without
    bound before: every stored entry kept its row and its place in an IVF list)."""
    data = unit_vectors(6000)
    idx = VectorIndex(32, ivf_min_rows=500, nprobe=8)
    live: list[int] = []
    rng = np.random.default_rng(1)
    for i, v in enumerate(data):
        live.append(idx.add(v))
        if len(live) > 800:  # evict a random live row: the steady state of a full cache
            idx.remove(live.pop(int(rng.integers(0, len(live)))))
        if i % 997 == 0:
            check_invariants(idx)
    check_invariants(idx)
    assert idx._centroids is not None
    assert len(idx) == 800
    assert idx._n <= 801  # rows reused: the high-water mark is the peak of live rows
    assert sum(idx._list_len) == 800
    found = 0
    for row in live[:200]:
        q = idx._vecs[row] + 0.02 * rng.standard_normal(32).astype(np.float32)
        q /= np.linalg.norm(q)
        got = idx.search(q, 1)
        assert got and got[0][0] in live
        found += got[0][0] == exact_top1(idx, q)
    assert found >= 196


def test_removed_rows_never_come_back_and_reused_ids_carry_the_new_vector() -> None:
    data = unit_vectors(1200, seed=2)
    idx = VectorIndex(32, ivf_min_rows=300, nprobe=64)  # every list probed: exact
    rows = [idx.add(v) for v in data[:1000]]
    gone = rows[10]
    idx.remove(gone)
    idx.remove(gone)  # twice: no-op
    assert all(r != gone for r, _ in idx.search(data[10], 5))
    reused = idx.add(data[1100])
    assert reused == gone  # the freed id is taken first
    assert idx.search(data[1100], 1)[0] == (gone, pytest.approx(1.0, abs=1e-5))
    assert all(r != gone for r, _ in idx.search(data[10], 1))
    check_invariants(idx)


def test_background_build_reconciles_rows_changed_while_it_trained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = threading.RLock()
    idx = VectorIndex(32, ivf_min_rows=400, nprobe=8, background=True, lock=lock)
    data = unit_vectors(3000, seed=3)
    started, release = threading.Event(), threading.Event()
    real_train = VectorIndex._train

    def slow_train(self: VectorIndex, *a: Any) -> Any:
        started.set()
        assert release.wait(10)
        return real_train(self, *a)

    monkeypatch.setattr(VectorIndex, "_train", slow_train)
    rows = []
    with lock:
        for v in data[:400]:
            rows.append(idx.add(v))  # the 400th starts the build
    assert started.wait(10)
    assert idx._centroids is None  # still brute force while it trains
    with lock:
        removed = rows[:50]
        for r in removed:
            idx.remove(r)
        rewritten = [idx.add(v) for v in data[400:430]]  # reuse removed ids with new vectors
        added = [idx.add(v) for v in data[430:600]]  # fresh rows
        for r in rows[100:110]:  # removed and not reused before the swap
            idx.remove(r)
        # searches during training are exact (brute force)
        assert idx.search(data[500], 1)[0][0] == added[70]
    release.set()
    assert idx.wait_for_build(10)
    with lock:
        assert idx._centroids is not None and idx.builds == 1
        check_invariants(idx)
        assert len(idx) == 400 - 50 + 30 + 170 - 10
        assert not idx._alive[rows[100:110]].any() and sorted(idx._free) == sorted(rows[100:110])
        for r, v in zip(rewritten, data[400:430], strict=True):
            assert idx.search(v, 1)[0][0] == r  # the new vector, not the snapshotted one
        assert set(removed) == set(rewritten) | set(added[:20])  # every freed id reused
        for r, v in zip(added, data[430:600], strict=True):
            assert idx.search(v, 1)[0][0] == r


def test_a_failed_background_build_leaves_the_index_serving(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: VectorIndex, *a: Any) -> Any:
        raise MemoryError("no room for k-means")

    monkeypatch.setattr(VectorIndex, "_train", broken)
    idx = VectorIndex(32, ivf_min_rows=200, background=True)
    data = unit_vectors(300, seed=4)
    rows = [idx.add(v) for v in data]
    assert idx.wait_for_build(10)
    assert "IVF rebuild failed" in caplog.text
    assert idx._centroids is None
    assert idx.search(data[5], 1)[0][0] == rows[5]


class RowVector:
    """Deterministic distinct unit vectors per text (hash-seeded)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            rng = np.random.default_rng(abs(hash(t)) % 2**32)
            v = rng.standard_normal(64).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


@pytest.mark.anyio
async def test_cache_under_churn_serves_the_right_answers_in_bounded_memory() -> None:
    cache = SemanticCache(RowVector(), max_entries=300, ivf_min_rows=128)
    scope = CacheScope("prj", "r", "m", "1")

    def body(q: str) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": q}]}

    def answer(q: str) -> dict[str, Any]:
        msg = {"role": "assistant", "content": "answer to " + q}
        return {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": msg, "finish_reason": "stop"}],
        }

    for i in range(3000):
        assert await cache.store(
            scope, body(f"question number {i}"), answer(f"question number {i}")
        )
    assert cache.wait_for_index(10)
    (part,) = cache._parts.values()
    assert len(cache) == 300 and part.index._n <= 301
    check_invariants(part.index)
    for i in range(2700, 3000, 7):
        hit = await cache.lookup(scope, body(f"question number {i}"))
        assert hit is not None
        assert hit.response["choices"][0]["message"]["content"] == f"answer to question number {i}"
    assert await cache.lookup(scope, body("question number 5")) is None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).standard_normal(16).astype(np.float32)
    return v / np.linalg.norm(v)


RESP = {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}


def test_partitions_are_bounded_least_recently_used_first() -> None:
    """One partition per distinct context: a system prompt that varies per user made one per
    request, and they were never dropped (20,000 contexts held 1.4 GB before)."""
    cache = SemanticCache(embedder=None, max_partitions=50)
    for i in range(500):
        cache.store_vector(f"ctx-{i}", "hello", _vec(i), RESP)
        if i % 25 == 0:  # ctx-0 keeps being used: it stays
            assert cache.lookup_vector("ctx-0", "hello", _vec(0)) is not None
    assert len(cache._parts) == 50 and len(cache) == 50
    assert cache.stats["evicted_partitions"] == 450
    assert cache.lookup_vector("ctx-0", "hello", _vec(0)) is not None
    assert cache.lookup_vector("ctx-499", "hello", _vec(499)) is not None
    assert cache.lookup_vector("ctx-451", "hello", _vec(451)) is not None
    assert cache.lookup_vector("ctx-450", "hello", _vec(450)) is None


def test_total_entries_are_bounded_across_partitions() -> None:
    cache = SemanticCache(embedder=None, max_total_entries=100)
    for i in range(60):
        cache.store_vector("a", f"question {i}", _vec(i), RESP)
    for i in range(60):
        cache.store_vector("b", f"question {i}", _vec(1000 + i), RESP)
    assert len(cache) <= 100
    assert "b" in cache._parts and len(cache._parts["b"].entries) == 60
    assert "a" not in cache._parts  # the least recently used partition went first
    for i in range(200):  # one partition alone: its own oldest entries go
        cache.store_vector("b", f"more {i}", _vec(5000 + i), RESP)
    assert len(cache) == 100 == len(cache._parts["b"].entries)
    assert cache.lookup_vector("b", "more 199", _vec(5199)) is not None
    assert cache.lookup_vector("b", "question 0", _vec(1000)) is None


def test_expired_entries_and_partitions_leave_without_a_purge() -> None:
    clock = Clock()
    cache = SemanticCache(embedder=None, ttl_s=10, clock=clock)
    for i in range(5):
        cache.store_vector("old", f"q{i}", _vec(i), RESP)
    cache.store_vector("busy", "first", _vec(100), RESP, ttl_s=5)
    clock.t += 7  # "busy"'s first entry has expired, "old" has not
    cache.store_vector("busy", "second", _vec(101), RESP, ttl_s=100)
    assert list(e.facts.text for e in cache._parts["busy"].entries.values()) == ["second"]
    clock.t += 20  # everything in "old" has expired
    cache.store_vector("new", "q", _vec(200), RESP)
    assert "old" not in cache._parts  # swept when a store passed by
    assert len(cache) == 2
    clock.t += 100
    assert cache.purge_expired() == 2
    assert len(cache) == 0 and not cache._parts


def test_concurrent_stores_lookups_and_background_builds_keep_the_index_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Threads store, replace and look up in a few partitions while the IVF retrains in the
    background again and again; afterwards every partition's lists hold exactly its live rows
    and every live entry is found by its own vector."""
    real_train = VectorIndex._train

    def slow_train(self: VectorIndex, *a: Any) -> Any:
        out = real_train(self, *a)
        time.sleep(0.02)  # long enough for the other threads to change rows meanwhile
        return out

    monkeypatch.setattr(VectorIndex, "_train", slow_train)
    cache = SemanticCache(embedder=None, max_entries=700, ivf_min_rows=150, ttl_s=3600)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for i in range(1500):
                part = f"p{int(rng.integers(0, 3))}"
                n = int(rng.integers(0, 900))  # texts repeat: re-stores replace entries
                cache.store_vector(part, f"text {n}", _vec(10_000 * seed + n), RESP)
                if i % 3 == 0:
                    cache.lookup_vector(part, f"text {n}", _vec(10_000 * seed + n))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert cache.wait_for_index(30)
    assert sum(p.index.builds for p in cache._parts.values()) >= 3
    with cache._lock:
        assert len(cache) == sum(len(p.entries) for p in cache._parts.values())
        for part in cache._parts.values():
            check_invariants(part.index)
            assert set(part.entries) == set(np.flatnonzero(part.index._alive).tolist())
            for row, entry in list(part.entries.items())[:100]:
                got = part.index.search(part.index._vecs[row], 1)
                assert got and got[0][0] == row, entry.facts.text


def test_bytes_are_bounded_and_an_oversized_answer_is_not_cached() -> None:
    big = {"choices": [{"index": 0, "message": {"content": "y" * 20_000}, "finish_reason": "stop"}]}
    cache = SemanticCache(embedder=None, max_bytes=200_000)
    for i in range(30):
        assert cache.store_vector(f"ctx-{i % 3}", f"q{i}", _vec(i), big)
    assert cache._n_bytes <= 200_000
    assert cache._n_bytes == sum(e.size for p in cache._parts.values() for e in p.entries.values())
    assert cache.lookup_vector("ctx-2", "q29", _vec(29)) is not None  # the newest stays
    huge = {"choices": [{"index": 0, "message": {"content": "z" * 300_000}}]}
    parts = len(cache._parts)
    assert not cache.store_vector("ctx-new", "q-huge", _vec(999), huge)
    assert cache.stats["skipped"] == 1 and len(cache._parts) == parts  # no empty partition
    # a fresh answer too large to cache also retires the older one for the same prompt
    assert not cache.store_vector("ctx-2", "q29", _vec(29), huge)
    assert cache.lookup_vector("ctx-2", "q29", _vec(29)) is None
    cache.clear()
    assert cache._n_bytes == 0 and len(cache) == 0


def test_semantic_cache_settings_come_from_keel_toml(tmp_path: Any) -> None:
    from keel.errors import ConfigError
    from keel.gateway.semantic_cache import build_semantic_cache
    from keel.server.app import create_app
    from keel.settings import Settings
    from keel.storage import open_store

    c = build_semantic_cache({"max_partitions": 5, "max_bytes": 1 << 20, "top_k": 2})
    assert (c.max_partitions, c.max_bytes, c.top_k, c.max_total_entries) == (5, 1 << 20, 2, 200_000)
    with pytest.raises(ConfigError, match="unknown key") as e:
        build_semantic_cache({"max_partitons": 5})
    assert "max_partitions" in (e.value.hint or "")
    for bad in (0, -3, "5", 2.5, True):
        with pytest.raises(ConfigError, match="positive integer"):
            build_semantic_cache({"max_bytes": bad})

    url = f"sqlite:///{tmp_path / 'keel.db'}"
    gateway = {
        "semantic_cache": {"max_partitions": 7, "max_total_entries": 1000},
        "routes": {
            "s": {
                "targets": [{"provider": "fake", "model": "fake:echo"}],
                "cache": {"semantic": True},
            }
        },
    }
    from fastapi.testclient import TestClient

    app = create_app(Settings(store={"url": url}, gateway=gateway), open_store(url))
    with TestClient(app):
        sc = app.state.keel.extras["gateway"].semantic_cache
        assert (sc.max_partitions, sc.max_total_entries) == (7, 1000)
