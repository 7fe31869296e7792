"""Disk cache of MiniLM sentence embeddings for the benchmarks (under /tmp, never committed).

Embedding the 80k QQP sentences takes minutes on 2 cores, so vectors are kept in shards
(``<dir>/shard-NNNN.npz`` holding ``texts`` and ``vecs``) and reused across runs.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

BASE_DIR = Path(os.environ.get("KEEL_BENCH_EMB_CACHE", "/tmp/keel-bench-emb"))
DEFAULT_DIR = BASE_DIR / "minilm-int8"  # the packaged model (every evaluator's)
DIRS = {"packaged": DEFAULT_DIR, "qint8": BASE_DIR / "minilm-qint8"}


def _l3_dir() -> Path:
    """The distilled 3-layer encoder's cache, one per build recipe and weights file."""
    import hashlib

    from keel.ml import cache_encoder

    h = hashlib.sha256(cache_encoder.RECIPE.encode())
    h.update(cache_encoder.asset_path().read_bytes())
    return BASE_DIR / f"minilm-l3-{h.hexdigest()[:8]}"


def _qint8_dir() -> Path:
    """The int8-compute build's cache, one per build recipe (``tools/build_minilm_qint8.py``
    writes it beside the model), so vectors of an earlier build are never mixed in."""
    import hashlib

    from keel.ml.embeddings import QINT8_PATH

    stamp = QINT8_PATH.with_name(QINT8_PATH.name + ".build")
    if not stamp.exists():
        return DIRS["qint8"]
    tag = hashlib.sha256(stamp.read_bytes()).hexdigest()[:8]
    return BASE_DIR / f"minilm-qint8-{tag}"


def load_cache(cache_dir: Path = DEFAULT_DIR) -> dict[str, np.ndarray]:
    """Every cached text → vector."""
    out: dict[str, np.ndarray] = {}
    if not cache_dir.exists():
        return out
    for f in sorted(cache_dir.glob("shard-*.npz")):
        with np.load(f, allow_pickle=False) as z:
            for t, v in zip(z["texts"].tolist(), z["vecs"], strict=True):
                out[t] = v
    return out


def embed_cached(
    texts: list[str],
    cache_dir: Path | None = None,
    *,
    shard: int = 2000,
    verbose: bool = True,
    variant: str = "packaged",
) -> dict[str, np.ndarray]:
    """Vectors for ``texts`` from the MiniLM build ``variant`` (``keel.ml.embeddings``),
    embedding (and caching) only those not on disk yet."""
    from keel.ml.embeddings import get_embedder

    if cache_dir is None:
        dirs = {"qint8": _qint8_dir, "l3": _l3_dir}
        cache_dir = dirs[variant]() if variant in dirs else DIRS[variant]
    cache_dir.mkdir(parents=True, exist_ok=True)
    have = load_cache(cache_dir)
    todo = sorted({t for t in texts if t not in have})
    if todo:
        emb = get_embedder(variant)  # type: ignore[arg-type]
        n_existing = len(list(cache_dir.glob("shard-*.npz")))
        t0 = time.perf_counter()
        for i in range(0, len(todo), shard):
            chunk = todo[i : i + shard]
            vecs = emb.embed(chunk, batch_size=64)
            np.savez(
                cache_dir / f"shard-{n_existing:04d}.npz",
                texts=np.array(chunk, dtype=str),
                vecs=vecs,
            )
            n_existing += 1
            for t, v in zip(chunk, vecs, strict=True):
                have[t] = v
            if verbose:
                done = min(i + shard, len(todo))
                el = time.perf_counter() - t0
                print(f"  embedded {done}/{len(todo)} in {el:.0f}s", file=sys.stderr, flush=True)
    return have
