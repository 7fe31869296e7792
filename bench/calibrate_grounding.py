"""Fit the grounding model's weights and default thresholds on development data only.

    python bench/calibrate_grounding.py            # ~1-2 min; prints the constants to commit
    python bench/calibrate_grounding.py --rows 600 # faster, noisier

Data: rows 0-4,999 of each HaluEval file (a seeded sample of ``--rows`` rows per file) and the
``dev`` split of bench/data/grounding_hard.jsonl (contexts 0-9). Rows 5,000-9,999 and the hard
``test`` split are never read here.

Model: one logistic regression per regime (``passage``: context up to 250 words, i.e. QA,
dialogue and the hard cases; ``document``: longer contexts, i.e. summarisation) with sign
constraints (a missing number can only lower the score, a supported word can only raise it),
so that a quirk of HaluEval cannot teach the model that errors are good. The hard dev rows are
weighted up so that the scope features (negation, 'always', dropped conditions, swapped
relations), which HaluEval rarely exercises, get weights at all.

Thresholds: the value that maximises balanced accuracy on the pooled development predictions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halueval import DEV, TASKS, best_threshold, load, roc_auc  # noqa: E402

from keel.evals import grounding as G  # noqa: E402

HARD = Path(__file__).resolve().parent / "data" / "grounding_hard.jsonl"
# +1: may only raise the grounded probability; -1: may only lower it; 0: not used.
SIGNS = {
    "lex_mean": 1,
    "lex_min": 1,
    "missing_words_log": -1,
    "missing_numbers": -1,
    "missing_entities": -1,
    "entity_support": 1,
    "broken_pairs_frac": -1,
    "negation_mismatch": -1,
    "absolute_added": -1,
    "condition_dropped": -1,
    "local_min": 1,
    "semantic_min": 0,
    "novel_bigrams": -1,
    "words_log": -1,
}
SCOPE = ("broken_pairs_frac", "negation_mismatch", "absolute_added", "condition_dropped", "missing_numbers", "missing_entities")


def featurize(examples: list[tuple[str, str, str | None]]) -> np.ndarray:
    """Feature matrix (rows in FEATURES order) of (response, context, query) triples."""
    rows = []
    for resp, ctx, q in examples:
        f = G.check_grounding(resp, ctx, query=q).features
        rows.append([f[k] for k in G.FEATURES])
    return np.array(rows, dtype=float)


def fit(X: np.ndarray, y: np.ndarray, sw: np.ndarray, signs: np.ndarray, *, l2: float = 3e-3, iters: int = 4000) -> tuple[np.ndarray, float]:
    """Sign-constrained L2 logistic regression by projected gradient descent."""
    mu = X.mean(0)
    sd = X.std(0) + 1e-9
    Z = (X - mu) / sd
    w = np.zeros(Z.shape[1])
    b = 0.0
    sw = sw / sw.sum()
    lr = 0.5
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(Z @ w + b)))
        g = (p - y) * sw
        w -= lr * (Z.T @ g + l2 * w)
        b -= lr * g.sum()
        w = np.where(signs > 0, np.maximum(w, 0), np.where(signs < 0, np.minimum(w, 0), 0.0))
    wo = w / sd
    return wo, float(b - wo @ mu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1500, help="dev rows sampled per HaluEval file")
    ap.add_argument("--hard-weight", type=float, default=25.0, help="sample weight of a hard dev row")
    args = ap.parse_args()

    t0 = time.time()
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task in TASKS:
        ex = load(task, DEV, sample=args.rows, seed=11)
        data[task] = (featurize([(e.response, e.context, e.query) for e in ex]), np.array([e.label for e in ex]))
    hard = [json.loads(line) for line in HARD.read_text().splitlines() if line.strip()]
    hard_dev = [r for r in hard if r["split"] == "dev"]
    Xh = featurize([(r["response"], r["context"], None) for r in hard_dev])
    yh = np.array([r["label"] for r in hard_dev])
    print(f"features computed in {time.time() - t0:.1f}s", file=sys.stderr)

    signs = np.array([SIGNS[f] for f in G.FEATURES], dtype=float)
    regimes = {
        "passage": (
            [data["qa"][0], data["dialogue"][0], Xh],
            [data["qa"][1], data["dialogue"][1], yh],
            [np.ones(len(data["qa"][1])), np.ones(len(data["dialogue"][1])), np.full(len(yh), args.hard_weight)],
        ),
        "document": (
            [data["summarization"][0], Xh],
            [data["summarization"][1], yh],
            [np.ones(len(data["summarization"][1])), np.full(len(yh), args.hard_weight / 2)],
        ),
    }
    weights: dict[str, dict[str, float]] = {}
    for name, (Xs, ys, ws) in regimes.items():
        w, b = fit(np.vstack(Xs), np.concatenate(ys), np.concatenate(ws), signs)
        weights[name] = {"bias": round(b, 3), **{f: round(float(v), 3) for f, v in zip(G.FEATURES, w, strict=True) if v != 0}}

    # evaluate on dev (in-sample) and pick the threshold
    preds: list[float] = []
    labels: list[int] = []
    for task in TASKS:
        X, y = data[task]
        reg = "document" if task == "summarization" else "passage"
        p = [G.predict(dict(zip(G.FEATURES, row, strict=True)), weights[reg]) for row in X]
        print(f"dev {task:14s} AUC {roc_auc(y, p):.3f}")
        preds += p
        labels += list(y)
    ph = [G.predict(dict(zip(G.FEATURES, row, strict=True)), weights["passage"]) for row in Xh]
    print(f"dev hard           AUC {roc_auc(yh, ph):.3f}")
    thr, bacc = best_threshold(labels + list(yh), preds + ph)
    print(f"threshold {thr:.3f} (balanced accuracy on dev {bacc:.3f})")
    print("\nWEIGHTS =", json.dumps(weights, indent=4))
    print(f"DEFAULT_THRESHOLD = {thr:.2f}")


if __name__ == "__main__":
    main()
