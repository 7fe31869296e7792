"""bench/semantic_cache.py with the static query encoder: vectors, refit on tune, OOF scores.

Synthetic pairs only (no QQP): checks the code path, not the figures (docs/bench-cache.md).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("tokenizers")

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_semantic_cache", BENCH / "semantic_cache.py"
        )
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


def synthetic_pairs() -> list[tuple[str, str, int]]:
    topics = ["password", "refund", "invoice", "delivery", "account", "printer", "laptop", "visa"]
    pairs = []
    for i in range(240):
        t, u = topics[i % len(topics)], topics[(i * 3 + 1) % len(topics)]
        q = f"How do I fix my {t} problem number {i % 7}?"
        if i % 2:
            pairs.append((q, f"How can I fix my {t} problem number {i % 7}?", 1))
        else:
            other = u if i % 4 == 0 else "annoying"
            pairs.append((q, f"Who can I call about my {other} {t} problem number {i % 7}?", 0))
    return pairs


def test_static_vectors_and_refit(bench: ModuleType) -> None:
    pairs = synthetic_pairs()
    vecs = bench.static_vecs([t for a, b, _ in pairs for t in (a, b)])
    v0 = next(iter(vecs.values()))
    assert v0.shape == (256,) and abs(float(np.linalg.norm(v0)) - 1.0) < 1e-4
    ps = bench.PairSet(pairs, vecs)
    v = bench.refit(ps, 0.01, (0.6, 0.8))
    assert v.min_similarity in (0.6, 0.8)
    assert set(v.weights) == set(bench.FEATURES)
    assert ps.oof.shape == (len(pairs),)
    assert ((ps.oof >= 0) & (ps.oof <= 1)).all()
    # pairs below the floor score 0, as the verifier would
    assert (ps.oof[ps.cos < v.min_similarity] == 0).all()
    thr = bench.pick_threshold(ps.oof, ps.y, 0.01)
    fh, _ = bench.rates(ps.oof >= thr, ps.y)
    assert fh <= 0.01
