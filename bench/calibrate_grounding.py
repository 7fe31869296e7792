"""Fit the grounding model's weights and default thresholds on development data only.

    python bench/calibrate_grounding.py            # ~1-2 min; prints the constants to commit
    python bench/calibrate_grounding.py --rows 600 # faster, noisier
    python bench/calibrate_grounding.py --model --rows 800   # WEIGHTS_MODEL (cross-encoder on)

With ``--model`` the HaluEval rows the cross-encoder was trained on (tools/train_grounding_nli.py
TRAIN_ROWS / TRAIN_SEED) are excluded, so its scores are not in-sample here.

Data: rows 0-4,999 of each HaluEval file (a seeded sample of ``--rows`` rows per file) and the
``dev`` split of bench/data/grounding_hard.jsonl (contexts 0-9). Rows 5,000-9,999 and the hard
``test`` split are never read here.

Model: one logistic regression per regime (``passage``: context up to 250 words, i.e. QA,
dialogue and the hard cases; ``document``: longer contexts, i.e. summarisation) with sign
constraints (a missing number can only lower the score, a supported word can only raise it),
so that a quirk of HaluEval cannot teach the model that errors are good. The hard dev rows are
weighted up so that the scope features (negation, 'always', dropped conditions, swapped
relations), which HaluEval rarely exercises, get weights at all. The document regime is
fitted on summarisation rows only: on long documents the scope detectors fire on right and
hallucinated summaries alike, so the data gives them (close to) zero weight there.

Thresholds: per regime, the value that maximises the mean balanced accuracy over that regime's
dev sources (QA, dialogue, hard cases / summarisation); it is folded into the regime's bias so that one default threshold, 0.5, serves both.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from halueval import DEV, TASKS, balanced_accuracy, load, roc_auc, sample_rows

from keel.evals import grounding as G

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from train_grounding_nli import TRAIN_ROWS, TRAIN_SEED

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
    "context_lex": 1,
    "weak_claims": -1,
    "nli_min": 1,
    "nli_mean": 1,
}
# Features a regime may not use. Answer length separates HaluEval QA (right answers are 1-3
# words) but would fail every long grounded answer in real use, so passages do not get it.
EXCLUDED = {"passage": {"words_log"}, "document": {"words_log"}}


# Priors for the passage regime: an unsupported number or name, or a claim whose words are
# mostly not in the context, must lower the score at least this much per occurrence. HaluEval dialogue alone would set them near zero (right responses
# there often mention things the knowledge does not), but a hidden name or number is the most
# common single hallucination in RAG answers.
PRIOR_CAPS = {
    "missing_numbers": -1.0,
    "missing_entities": -0.75,
    "weak_claims": -1.0,
    "novel_bigrams": -0.1,
}


MODEL = False  # --model: features with the cross-encoder (fits WEIGHTS_MODEL)


def featurize(examples: list[tuple[str, str, str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (rows in FEATURES order) of (response, context, query) triples, and
    whether each row is scored in the document regime."""
    rows = []
    docs = []
    for resp, ctx, q in examples:
        rep = G.check_grounding(resp, ctx, query=q, model=MODEL)
        rows.append([rep.features[k] for k in G.FEATURES])
        docs.append(rep.regime == "document")
    return np.array(rows, dtype=float), np.array(docs, dtype=bool)


def fit(
    X: np.ndarray,
    y: np.ndarray,
    sw: np.ndarray,
    signs: np.ndarray,
    *,
    caps: np.ndarray | None = None,
    l2: float = 3e-3,
    iters: int = 4000,
) -> tuple[np.ndarray, float]:
    """Sign-constrained L2 logistic regression by projected gradient descent.

    ``caps`` (original feature scale, <= 0) bound a negative weight from above: a prior that
    a missing number must cost at least that much, whatever HaluEval says.
    """
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
        if caps is not None:
            w = np.minimum(w, caps * sd)
    wo = w / sd
    return wo, float(b - wo @ mu)


def _rows(xy: tuple[np.ndarray, np.ndarray], mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return xy[0][mask], xy[1][mask]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=1500, help="dev rows sampled per HaluEval file")
    ap.add_argument(
        "--hard-weight", type=float, default=25.0, help="sample weight of a hard dev row"
    )
    ap.add_argument(
        "--cache", type=Path, default=None, help="reuse/store the feature matrices here (.npz)"
    )
    ap.add_argument(
        "--model",
        action="store_true",
        help="use the cross-encoder (keel.evals.entailment) and print WEIGHTS_MODEL",
    )
    args = ap.parse_args()
    global MODEL
    MODEL = args.model
    if not MODEL:  # the lexical model may not use the cross-encoder's features
        for excluded in EXCLUDED.values():
            excluded.update({"nli_min", "nli_mean"})

    t0 = time.time()
    data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    is_doc: dict[str, np.ndarray] = {}
    if args.cache and args.cache.exists():
        z = np.load(args.cache)
        data = {t: (z[f"{t}_X"], z[f"{t}_y"]) for t in TASKS}
        is_doc = {t: z[f"{t}_doc"] for t in TASKS}
        Xh, yh = z["hard_X"], z["hard_y"]
    else:
        for task in TASKS:
            exclude: set[int] = set()
            if MODEL:  # rows the cross-encoder was trained on would be in-sample for it
                exclude = sample_rows(DEV, TRAIN_ROWS[task], TRAIN_SEED)
            ex = load(task, DEV, sample=args.rows, seed=11, exclude=exclude)
            X, docs = featurize([(e.response, e.context, e.query) for e in ex])
            data[task] = (X, np.array([e.label for e in ex]))
            is_doc[task] = docs
        hard = [json.loads(line) for line in HARD.read_text().splitlines() if line.strip()]
        hard_dev = [r for r in hard if r["split"] == "dev"]
        Xh, _ = featurize([(r["response"], r["context"], None) for r in hard_dev])
        yh = np.array([r["label"] for r in hard_dev])
        if args.cache:
            arrays: dict[str, np.ndarray] = {"hard_X": Xh, "hard_y": yh}
            for t in TASKS:
                arrays.update({f"{t}_X": data[t][0], f"{t}_y": data[t][1], f"{t}_doc": is_doc[t]})
            np.savez(args.cache, **arrays)  # type: ignore[arg-type]  # numpy stub: allow_pickle
    # Each regime is fitted on the rows it scores: QA and dialogue rows in the passage regime
    # (and the hard cases), summaries in the document regime (a few short summaries of short
    # texts are passages, a few QA/dialogue answers documents; they are left out of both fits).
    fit_data = {
        "qa": _rows(data["qa"], ~is_doc["qa"]),
        "dialogue": _rows(data["dialogue"], ~is_doc["dialogue"]),
        "summarization": _rows(data["summarization"], is_doc["summarization"]),
    }
    print(f"features ready in {time.time() - t0:.1f}s", file=sys.stderr)

    signs = np.array([SIGNS[f] for f in G.FEATURES], dtype=float)
    # features without a prior are unbounded (0.0 here used to forbid every positive weight)
    caps = np.array([PRIOR_CAPS.get(f, np.inf) for f in G.FEATURES], dtype=float)
    regimes = {
        "passage": (
            [fit_data["qa"][0], fit_data["dialogue"][0], Xh],
            [fit_data["qa"][1], fit_data["dialogue"][1], yh],
            [
                np.ones(len(fit_data["qa"][1])),
                np.ones(len(fit_data["dialogue"][1])),
                np.full(len(yh), args.hard_weight),
            ],
        ),
        "document": (
            [fit_data["summarization"][0]],
            [fit_data["summarization"][1]],
            [np.ones(len(fit_data["summarization"][1]))],
        ),
    }
    weights: dict[str, dict[str, float]] = {}
    for name, (Xs, ys, ws) in regimes.items():
        signs_r = np.where([f in EXCLUDED[name] for f in G.FEATURES], 0.0, signs)
        w, b = fit(
            np.vstack(Xs),
            np.concatenate(ys),
            np.concatenate(ws),
            signs_r,
            caps=caps if name == "passage" else None,
        )
        weights[name] = {
            "bias": round(b, 3),
            **{f: round(float(v), 3) for f, v in zip(G.FEATURES, w, strict=True) if v != 0},
        }

    # Per regime: the threshold with the best balanced accuracy on its dev rows, then the bias
    # is shifted so that this threshold maps to 0.5 (one default threshold for both regimes).
    def scores(X: np.ndarray, reg: str) -> list[float]:
        return [G.predict(dict(zip(G.FEATURES, row, strict=True)), weights[reg]) for row in X]

    name = "WEIGHTS_MODEL" if MODEL else "WEIGHTS"

    # Each source counts equally (QA, dialogue and the hard cases for passages), so the many
    # HaluEval rows cannot drown the hard cases.
    sources = {
        "passage": [
            (fit_data["qa"][0], fit_data["qa"][1]),
            (fit_data["dialogue"][0], fit_data["dialogue"][1]),
            (Xh, yh),
        ],
        "document": [(fit_data["summarization"][0], fit_data["summarization"][1])],
    }
    for reg, parts in sources.items():
        scored = [(list(y), scores(X, reg)) for X, y in parts]
        grid = np.unique(
            np.quantile(np.concatenate([p for _, p in scored]), np.linspace(0.01, 0.99, 197))
        )
        accs = np.array(
            [np.mean([balanced_accuracy(y, p, float(t)) for y, p in scored]) for t in grid]
        )
        # The middle of the best plateau (not its edge), so a perfect answer does not sit on it.
        plateau = grid[accs >= accs.max() - 0.002]
        thr = float(np.median(plateau))
        bacc = float(np.mean([balanced_accuracy(y, p, thr) for y, p in scored]))
        weights[reg]["bias"] = round(weights[reg]["bias"] - math.log(thr / (1 - thr)), 3)
        print(
            f"{reg}: dev threshold {thr:.3f} (mean balanced accuracy over sources {bacc:.3f}) -> folded into the bias"
        )
    for task in TASKS:
        X, y = data[task]  # every sampled row, each scored in its own regime
        p = [
            G.predict(
                dict(zip(G.FEATURES, row, strict=True)), weights["document" if d else "passage"]
            )
            for row, d in zip(X, is_doc[task], strict=True)
        ]
        print(
            f"dev {task:14s} AUC {roc_auc(y, p):.3f}  balanced accuracy at 0.5 {balanced_accuracy(y, p, 0.5):.3f}"
        )
    ph = scores(Xh, "passage")
    print(
        f"dev hard           AUC {roc_auc(yh, ph):.3f}  balanced accuracy at 0.5 {balanced_accuracy(yh, ph, 0.5):.3f}"
    )
    print(f"\n{name} =", json.dumps(weights, indent=4))
    print("DEFAULT_THRESHOLD = 0.5")


if __name__ == "__main__":
    main()
